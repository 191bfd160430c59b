"""Plumbing shared by the numbered scripts: paths, errors, flags, device, seed, safe writes.

Nothing a lesson teaches lives here. Each lesson's subject is defined in that lesson's own file,
and later scripts import it from there: the data pipeline in 03_data.py, the network in
04_model.py, the training and evaluation functions in 05_train.py. You can follow every lesson
without opening this file; read it when you want to know how a helper works. Saving and
loading checkpoints safely is plumbing too, in checkpointing.py, and so is the rest of what the
training scripts share (their flags, loaders and reports), in training_tools.py.
"""

import argparse
import importlib
import math
import os
import shutil
import sys
from pathlib import Path

import torch

# %% Paths ---------------------------------------------------------------------------
# Default paths are built from this file's folder, not from the current directory, so that
# `python path/to/05_train.py` finds the same files as `python 05_train.py`.
REPO_DIR = Path(__file__).resolve().parent
DATA_DIR = REPO_DIR / "data"  # CIFAR-10 is downloaded here
CHECKPOINT_DIR = REPO_DIR / "checkpoints"  # 05_train.py writes last.pt and best.pt here
OUTPUT_DIR = REPO_DIR / "outputs"  # figures (PNG) and the training history (JSON)


def default_checkpoint_dir(fake_data=False):
    """Where 05_train.py writes its checkpoints and 06-08 look for them, unless told otherwise:
    checkpoints/fake/ for a --fake-data run, so that a check never replaces a trained model."""
    return CHECKPOINT_DIR / "fake" if fake_data else CHECKPOINT_DIR


# %% Errors --------------------------------------------------------------------------------------
class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong flag); the message says how."""


def explain(error):
    """Print what a mistake the user can fix means, in one line; return the exit code to use.

    Returns None for any other error: that is a bug, and its full traceback is what you want.
    """
    if isinstance(error, UserError):
        print(f"Error: {error}", file=sys.stderr)
        return 1
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C
        print("\nInterrupted.", file=sys.stderr)
        return 130  # 128 + 2, SIGINT's number: the shell's code for "stopped by Ctrl-C"
    if isinstance(error, BrokenPipeError):  # the output went to e.g. `| head`, which stopped
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    return None


def run_main(main):
    """Call a script's `main()`; a UserError ends in one sentence, Ctrl-C in a short notice."""
    try:
        main()
    except (UserError, KeyboardInterrupt, BrokenPipeError) as error:
        sys.exit(explain(error))


def report_errors_plainly():
    """The same as run_main, for a lesson that runs at top level rather than in main() (so that
    VS Code and Jupyter can run its cells one by one): call it once, at the top."""
    def hook(kind, error, traceback):
        if explain(error) is None:
            sys.__excepthook__(kind, error, traceback)

    sys.excepthook = hook  # what Python calls with an error that nothing caught


def import_script(name):
    """Import one of the numbered scripts, e.g. `import_script("04_model")`, and return it.

    `import 04_model` is a syntax error, because a Python name cannot start with a digit;
    importlib.import_module takes the name as a string, so it can. Importing a lesson runs only
    its definitions: its demonstration code sits under `if __name__ == "__main__":`.
    """
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    return importlib.import_module(name)


def numbers(values, digits=4):
    """Format floats as "0.1235, 0.5000, ..." (rounded, and never "-0.0000")."""
    return ", ".join(f"{round(value, digits) + 0.0:.{digits}f}" for value in values)


def section(title):
    """Print a banner line, so the output is as easy to find your way in as the code."""
    print(f"\n=== {title} " + "=" * max(3, 72 - len(title)), flush=True)


# %% Command-line flags --------------------------------------------------------------------------
def whole_number(text, minimum):
    """The integer written in `text`, if it is at least `minimum`; else an argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
    return value


def positive_int(text):
    """argparse type: an integer greater than zero."""
    return whole_number(text, minimum=1)


def worker_count(text):
    """argparse type for --workers: DataLoader worker processes, from 0 to 64 (each is a whole
    Python process: thousands would stall the machine, and more than its cores only wait)."""
    value = whole_number(text, minimum=0)
    if value > 64:
        raise argparse.ArgumentTypeError(f"must be at most 64, got {value}")
    return value


def non_negative_int(text):
    """argparse type: an integer that is zero or more."""
    return whole_number(text, minimum=0)


def seed_number(text):
    """argparse type: a seed, from 0 to 2**31 - 1 (NumPy takes at most 2**32 - 1, and the
    scripts add the epoch, or more, to it)."""
    value = whole_number(text, minimum=0)
    if value >= 2 ** 31:
        raise argparse.ArgumentTypeError(f"must be below 2**31 = {2 ** 31:,}, got {value}")
    return value


def positive_float(text):
    """argparse type: a finite number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def class_names(text):
    """argparse type: class names separated by commas, as a tuple ("cat,dog" -> ("cat", "dog"))."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"expected two or more class names with commas between "
                                         f"them, got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} is named twice; name each class "
                                         "once")
    return names


def existing_dir(text):
    """argparse type: a folder that exists."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder" if path.exists()
                                         else f"folder {text!r} does not exist")
    return path


def parse_args(parser, in_jupyter=()):
    """`parser.parse_args()`, except in Jupyter or VS Code's interactive window.

    There, sys.argv holds the kernel's own arguments rather than ours, so the script gets
    `in_jupyter` instead (by default no arguments: every flag keeps its default).
    """
    return parser.parse_args(list(in_jupyter) if "ipykernel" in sys.modules else None)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with every flag's default, except where there is none to show (None): there the
    help text says who chooses."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def make_parser(description, device_purpose="where to compute", seed_help=None):
    """An argument parser with the flags every script has, --device and --seed (unless
    `seed_help` is False); `--help` shows every default. The script adds its own flags and
    calls parse_args."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help=f"{device_purpose}; auto picks CUDA, then Apple MPS, then the CPU")
    if seed_help is not False:
        parser.add_argument("--seed", type=seed_number, default=0,
                            help=seed_help or "random seed, for repeatable runs")
    return parser


def make_data_parser(description, batch_size=512, output_dir=OUTPUT_DIR,
                     **make_parser_options):
    """make_parser plus the flags every script that reads the images shares. `batch_size` is
    this script's default for --batch-size (None: the script picks one later); `output_dir` the
    default of --output-dir (None: the script says where); other keywords go to make_parser."""
    parser = make_parser(description, **make_parser_options)
    data = parser.add_argument_group("data (shared by every script that reads the images)")
    data.add_argument("--data-dir", type=existing_dir, default=DATA_DIR,
                      help="where CIFAR-10 is downloaded; a folder with train/ and test/ holding "
                           "one subfolder per class is read as your own images instead")
    data.add_argument("--classes", type=class_names,
                      help="train and test on these classes only, named with commas between "
                           "them, e.g. airplane,automobile,bird,cat,deer (default: all)")
    data.add_argument("--fake-data", action="store_true",
                      help="use small random images (torchvision FakeData): the whole pipeline "
                           "in seconds, offline; accuracy means nothing")
    data.add_argument("--dry-run", action="store_true",
                      help="run one batch per phase, to check that everything works")
    data.add_argument("--batch-size", type=positive_int, default=batch_size,
                      help="images per batch" + ("" if batch_size else " (default: chosen by "
                                                 "the script; see above)"))
    data.add_argument("--output-dir", type=Path, default=output_dir,
                      help="where figures and other outputs are written" + (
                          "" if output_dir else " (default: the run's --checkpoint-dir)"))
    return parser


def check_can_write(folder, flag):
    """Refuse now, in one sentence, a folder that a script will write into only at the end of
    its work: one that is a file, lies under a file, or cannot be written. Creates nothing."""
    folder = Path(folder)
    existing = next(path for path in [folder, *folder.parents] if path.exists())
    if not existing.is_dir():
        raise UserError(f"cannot write into {folder}: {existing} is a file, not a folder; "
                        f"choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {folder}: {existing} is not writable; choose "
                        f"another {flag}.")


# %% Device and seed -----------------------------------------------------------------------------
def get_device(name="auto"):
    """The torch.device to compute on: for "auto", CUDA if there is an NVIDIA GPU, else Apple's
    MPS, else the CPU; "cpu", "cuda" or "mps" insist on one (a UserError if it is missing)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU; "
                        "use --device auto or --device cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but Apple's MPS is not available here; "
                        "use --device auto or --device cpu.")
    return torch.device(name)


def synchronize(device):
    """Wait until everything queued on `device` has finished, so that a timing includes it.

    CUDA and MPS run asynchronously: a call returns once the work is queued, not when it is done,
    so a clock read without waiting would time the queueing. The CPU has nothing to wait for.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's random generators (on every device): the same seed
    gives the same random numbers."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


# %% Model and checkpoints -----------------------------------------------------------------------
def write_atomically(path, write):
    """Write the file `path` (making its folder) with `write(file)`, so that nothing is lost.

    The content goes to a temporary file in the same folder, which is then renamed over `path`:
    a rename within one folder is atomic, so `path` holds the old content or the new, never half
    of it, even after a crash. Any failure (no space, no permission, a file where a folder should
    be) is a UserError that says what was kept.
    """
    path = Path(path)
    # Several processes (12's, even on several machines sharing a disk) may write the same file
    # at once: each through a temporary file of its own, named after its process and 8 random
    # hex digits (two machines can have processes of the same number).
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # on the disk, not only in the system's cache
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
        kept = "the previous file is unchanged" if path.is_file() else "nothing was written"
        blocking = next((folder for folder in path.parents if folder.is_file()), None)
        if blocking:  # e.g. --output-dir names a file
            reason, advice = f"{blocking} is a file, not a folder", "Choose another folder."
        else:  # no space, no permission, ...
            reason = getattr(error, "strerror", None) or error
            if isinstance(error, RuntimeError):  # torch.save's own words ("unexpected pos")
                try:
                    full = shutil.disk_usage(path.parent).free < 2 ** 26  # under 64 MB free
                except OSError:
                    full = False
                reason = ("no space left on the disk" if full
                          else f"the write failed: {str(error).splitlines()[0][:120]}")
            advice = "Free some disk space or choose another folder."
        raise UserError(f"could not write {path} ({reason}); {kept}. {advice}") from None
    finally:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:  # a read-only folder: there was no temporary file to remove anyway
            pass
