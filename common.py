"""Plumbing shared by the numbered scripts: paths, errors, flags, device, seed, checkpoints.

Nothing a lesson teaches lives here. Each lesson's subject is defined in that lesson's own file,
and later scripts import it from there: the data pipeline in 03_data.py, the network in
04_model.py, the training and evaluation functions in 05_train.py. You can follow every lesson
without opening this file; read it when you want to know how a helper works.
"""

import argparse
import importlib
import math
import os
import pickle
import sys
import zipfile
from pathlib import Path

import torch

# %% Paths ---------------------------------------------------------------------------
# Default paths are built from this file's folder, not from the current directory, so that
# `python path/to/05_train.py` finds the same files as `python 05_train.py`.
REPO_DIR = Path(__file__).resolve().parent
DATA_DIR = REPO_DIR / "data"  # CIFAR-10 is downloaded here
CHECKPOINT_DIR = REPO_DIR / "checkpoints"  # 05_train.py writes last.pt and best.pt here
OUTPUT_DIR = REPO_DIR / "outputs"  # figures (PNG) and the training history (JSON)


# %% Errors --------------------------------------------------------------------------------------
class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong flag); the message says how."""


def exit_with_error(message):
    """Print one plain sentence to stderr and end the program with exit code 1.

    Args:
        message: what went wrong and what to do about it, as a sentence.
    """
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def run_main(main):
    """Call `main()`, turning a UserError into one sentence and Ctrl-C into a short notice.

    Args:
        main: the script's main function, called with no arguments.
    """
    try:
        main()
    except UserError as error:
        exit_with_error(str(error))
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the output went to a program that stopped reading, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(1)


def report_errors_plainly():
    """Make a UserError end the program in one sentence, for a lesson that runs at top level.

    Lessons that run inside main() use run_main; a lesson written as a row of cells (so that
    VS Code and Jupyter can run them one by one) calls this once at the top instead. Any other
    error still prints its full traceback, which is what you want for a bug.
    """
    def hook(kind, error, traceback):
        if issubclass(kind, UserError):
            print(f"Error: {error}", file=sys.stderr)  # Python then exits with code 1
        elif issubclass(kind, KeyboardInterrupt):
            print("\nInterrupted.", file=sys.stderr)
        elif issubclass(kind, BrokenPipeError):  # the output went to e.g. `| head`, which stopped
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        else:
            sys.__excepthook__(kind, error, traceback)

    sys.excepthook = hook


def import_script(name):
    """Import one of the numbered scripts, e.g. `import_script("04_model")`, and return it.

    `import 04_model` is a syntax error, because a Python name cannot start with a digit;
    importlib.import_module takes the name as a string, so it can. Importing a lesson runs only
    its definitions: its demonstration code sits under `if __name__ == "__main__":`.
    """
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    return importlib.import_module(name)


def section(title):
    """Print a banner line, so the output is as easy to find your way in as the code."""
    print(f"\n=== {title} " + "=" * max(3, 72 - len(title)), flush=True)


# %% Command-line flags --------------------------------------------------------------------------
def positive_int(text):
    """argparse type: an integer greater than zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_int(text):
    """argparse type: an integer that is zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
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


def existing_dir(text):
    """argparse type: a folder that exists."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path


def existing_file(text):
    """argparse type: a file that exists."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return path


def add_device_flag(parser, purpose="where to compute"):
    """Add `--device auto|cpu|cuda|mps` to an argument parser (get_device reads it).

    Args:
        parser: an argparse.ArgumentParser or argument group.
        purpose: the start of the help text: what the device is used for in this script.
    """
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help=f"{purpose}; auto picks CUDA, then Apple MPS, then the CPU")


def parse_args(parser, in_jupyter=()):
    """`parser.parse_args()`, except in Jupyter or VS Code's interactive window.

    There, sys.argv holds the kernel's own arguments rather than ours, so the script gets
    `in_jupyter` instead (by default no arguments: every flag keeps its default).
    """
    return parser.parse_args(list(in_jupyter) if "ipykernel" in sys.modules else None)


def make_parser(description, batch_size=512):
    """An argument parser with the flags every data script shares; `--help` shows the defaults.

    Args:
        description: one line shown at the top of `--help`.
        batch_size: this script's default for `--batch-size`; None if the script picks one later.

    Returns:
        An argparse.ArgumentParser; the script adds its own flags and calls parse_args().
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data and hardware (shared by every script)")
    data.add_argument("--data-dir", type=existing_dir, default=DATA_DIR,
                      help="where CIFAR-10 is downloaded; a folder with train/ and test/ holding "
                           "one subfolder per class is read as your own images instead")
    data.add_argument("--fake-data", action="store_true",
                      help="use small random images (torchvision FakeData): the whole pipeline "
                           "in seconds, offline; accuracy means nothing")
    data.add_argument("--dry-run", action="store_true",
                      help="run one batch per phase, to check that everything works")
    add_device_flag(data)
    data.add_argument("--seed", type=int, default=0, help="random seed, for repeatable runs")
    data.add_argument("--batch-size", type=positive_int, default=batch_size,
                      help="images per batch" + ("" if batch_size else " (default: %(default)s, "
                                                 "so the script chooses; see above)"))
    data.add_argument("--output-dir", type=Path, default=OUTPUT_DIR,
                      help="where figures and other outputs are written")
    return parser


# %% Device and seed -----------------------------------------------------------------------------
def get_device(name="auto"):
    """Choose where tensors and the model live.

    Args:
        name: "auto" (CUDA if there is an NVIDIA GPU, else Apple's MPS, else the CPU),
            or "cpu", "cuda" or "mps" to insist on one.

    Returns:
        A torch.device.

    Raises:
        UserError: the requested device is not available on this machine.
    """
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
    so a clock read without waiting would time the queueing, not the computation.

    Args:
        device: a torch.device; on the CPU there is nothing to wait for.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's random generators (on every device).

    Args:
        seed: any integer; the same seed gives the same random numbers.
    """
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


# %% Model and checkpoints -----------------------------------------------------------------------
def save_checkpoint(checkpoint, path):
    """Save a checkpoint dict atomically: a crash mid-write never leaves a broken file at `path`.

    It is written to a temporary file in the same folder, then renamed over `path`; a rename
    within one folder is atomic, so `path` holds either the old checkpoint or the new one.

    Args:
        checkpoint: a dict of tensors, numbers, strings, lists and dicts.
        path: where to save it (a .pt file); its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a folder without write permission, ...
        raise UserError(f"could not write {path} ({error.strerror or error}); free some disk "
                        "space or choose another folder. The previous file is unchanged.") from None
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint safely, with `weights_only=True`.

    `torch.load` unpickles the file, and a pickle can run any code while it loads; weights_only
    only accepts tensors and plain Python values, so a crafted file is refused, not run.

    Args:
        path: a .pt file written by save_checkpoint.
        device: where to put its tensors.

    Returns:
        The checkpoint dict.

    Raises:
        UserError: the file is missing, truncated, corrupt, or holds something other than data.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"there is no checkpoint at {path}; train a model first with "
                        "`python 05_train.py`, or pass --checkpoint with the right file.")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds of errors for a damaged file
        if isinstance(error, pickle.UnpicklingError) and _is_pickle_or_torch_file(path):
            # A whole pickle that weights_only refused to run: it asks for more than tensors and
            # plain values (an object to import and call, say). Refused, not run.
            raise UserError(f"{path} holds more than weights and data (Python objects that "
                            "could run code when loaded), so it was refused; only load "
                            "checkpoints you trust and that this project wrote.") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                        f"{type(error).__name__}); train again with `python 05_train.py`."
                        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path} is not a checkpoint written by 05_train.py.")
    return checkpoint


def _is_pickle_or_torch_file(path):
    """Whether a file starts like a torch.save archive (a zip) or a pickle (0x80, protocol 2-5)."""
    with open(path, "rb") as file:
        start = file.read(2)
    return zipfile.is_zipfile(path) or (len(start) == 2 and start[0] == 0x80 and 2 <= start[1] <= 5)


def model_from_checkpoint(checkpoint, device="cpu"):
    """Rebuild the network that a checkpoint was trained with and load its weights.

    Args:
        checkpoint: a dict from load_checkpoint; its "config" holds the model's settings.
        device: where to put the model.

    Returns:
        The model in eval mode, on `device`, in the channels_last layout.

    Raises:
        UserError: the weights do not fit the model the config describes.
    """
    config = checkpoint["config"]
    model = import_script("04_model").build_model(**config["model"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UserError(f"the checkpoint's weights do not match the model it names "
                        f"({config['model']}); was it written by another version of "
                        "05_train.py? Train again.") from None
    # channels_last: the memory layout of the batches that 03_data.prepare_batch makes.
    return model.to(device, memory_format=torch.channels_last).eval()
