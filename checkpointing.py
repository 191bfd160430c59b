"""Plumbing for checkpoints: saving them so that nothing is lost, one run per folder, and
loading them safely, so that a damaged, edited or crafted file is one plain sentence.

05_train.py writes checkpoints and 06-08 read them; 07_save_load.py teaches what is inside
(torch.save, state_dict, weights_only) and why. You never need to open this file to follow a
lesson.
"""

import os
import pickle
import pickletools
import warnings
from pathlib import Path

import torch

from common import UserError, default_checkpoint_dir, import_script, write_atomically


def save_checkpoint(checkpoint, path):
    """Save a checkpoint dict to `path` with torch.save, atomically (common.write_atomically)."""
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def lock_folder(folder):
    """Lock `folder` for this process: a second run that tries to write there too is refused in
    one sentence. The lock holds until the returned file is closed (a `with` block does that) or
    the process ends, however it ends, so a killed run never leaves the folder locked."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = open(folder / ".lock", "a+b")
    except OSError as error:
        raise UserError(f"cannot use {folder} as a checkpoint folder "
                        f"({error.strerror or error}); choose another --checkpoint-dir.") from None
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.close()
        raise UserError(f"another run is writing to {folder} right now; wait for it to finish, "
                        "or give this one another --checkpoint-dir.") from None
    for leftover in folder.glob(".*.tmp"):  # from a save that was killed half-way
        leftover.unlink(missing_ok=True)
    return lock_file


def open_run(checkpoint_dir, resume=False, overwrite=False, dry_run=False):
    """Start a training run in `checkpoint_dir`: lock the folder (a second run writing there is
    refused) and, with `resume`, find the run's last.pt. A new run never silently replaces a
    trained one: without `overwrite` it is refused in one sentence that names the ways forward.

    Returns:
        (lock, last_path): the folder's lock, held until the process ends (None for a dry run,
        which writes nothing), and last.pt to resume from (None for a new run).
    """
    checkpoint_dir = Path(checkpoint_dir)
    lock = None if dry_run else lock_folder(checkpoint_dir)
    last_path = checkpoint_dir / "last.pt"
    if resume:
        if not last_path.is_file():
            raise UserError(f"there is no {last_path} to resume; start a new run without "
                            "--resume, or pass the --checkpoint-dir of the run to continue.")
        return lock, last_path
    trained = [path for path in (last_path, checkpoint_dir / "best.pt") if path.exists()]
    if trained and not (overwrite or dry_run):
        raise UserError(
            f"{checkpoint_dir} already holds a trained model ({trained[0].name}); continue that "
            "run with --resume, train this one into another folder with --checkpoint-dir, or "
            "replace it with --overwrite.")
    return lock, None


def load_checkpoint(path, device="cpu", for_resume=False):
    """Load a checkpoint dict from `path`, its tensors onto `device`, safely: weights_only=True.

    `torch.load` unpickles the file, and a pickle can run any code while it loads; weights_only
    only accepts tensors and plain Python values, so a crafted file is refused, not run. A file
    that is missing, damaged, or not laid out as 05_train.py writes it is a UserError; with
    for_resume, it must also hold what --resume reads.
    """
    path = Path(path)
    if not path.is_file():
        fake = default_checkpoint_dir(fake_data=True) / path.name
        hint = (f" (there is one from a --fake-data run in {fake.parent}: add --fake-data to use "
                "it)" if path == default_checkpoint_dir() / path.name and fake.is_file() else "")
        raise UserError(f"there is no checkpoint at {path}{hint}; train a model first with "
                        "`python 05_train.py`, or pass --checkpoint with the right file.")
    try:
        with warnings.catch_warnings():  # torch warns about some files it then refuses: the
            warnings.simplefilter("ignore")  # sentence below says all there is to say
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds of errors for a damaged file
        if isinstance(error, pickle.UnpicklingError) and asks_for_code(path, error):
            raise UserError(f"{path} holds more than weights and data (Python objects that "
                            "could run code when loaded), so it was refused; only load "
                            "checkpoints you trust and that this project wrote.") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                        f"{type(error).__name__}); train again with `python 05_train.py`."
                        ) from None
    try:
        problem = layout_problem(checkpoint, for_resume)
    except (KeyError, TypeError, IndexError, AttributeError):
        problem = "the layout"
    if problem:
        raise UserError(f"{path} is not a checkpoint written by 05_train.py ({problem} is "
                        "missing or not as expected); train again with `python 05_train.py`.")
    return checkpoint


def asks_for_code(path, error):
    """Whether weights_only refused a file because it asks to import and call Python objects
    (which could run any code), rather than because it is damaged. pickletools only reads the
    pickle's instructions; it runs none of them."""
    if "Unsupported global" in str(error):  # a torch.save archive that names a Python object
        return True
    try:
        with open(path, "rb") as file:
            instructions = {operation.name for operation, _, _ in pickletools.genops(file)}
    except Exception:  # not a whole pickle: damaged
        return False
    return bool(instructions & {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE"})


def layout_problem(checkpoint, for_resume=False):
    """What, if anything, a checkpoint lacks of what the scripts read from it (an edited file, or
    one from another program); with for_resume, also what 05's --resume reads. It raises
    KeyError or TypeError where a part is missing altogether."""
    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not isinstance(checkpoint, dict):
        return "the dict of its parts"
    config, model = checkpoint["config"], checkpoint["config"]["model"]
    wrong = {
        "the weights": not isinstance(checkpoint["model"], dict),
        "the model size": model["size"] not in import_script("04_model").MODEL_SIZES,
        "the class names": len(config["classes"]) != model["num_classes"],
        "the mean and std": len(config["mean"]) != len(config["std"])
        or not all(map(is_number, config["mean"] + config["std"])),
        "the epoch": not isinstance(checkpoint["epoch"], int) or checkpoint["epoch"] < 1,
        "the best accuracy": not is_number(checkpoint["best_val_accuracy"]),
    }
    if for_resume:
        wrong.update({
            "the optimizer": not isinstance(checkpoint["optimizer"], dict),
            "the schedule": not isinstance(checkpoint["scheduler"], dict),
            "the history": len(checkpoint["history"]["epoch"]) != checkpoint["epoch"],
            "the settings": not (is_number(config["lr"]) and isinstance(config["epochs"], int)
                                 and isinstance(config["batch_size"], int)),
        })
    return next((what for what, is_wrong in wrong.items() if is_wrong), None)


def model_from_checkpoint(checkpoint, device="cpu"):
    """Rebuild the network a checkpoint (from load_checkpoint) was trained with, from its
    "config", and load its weights: in eval mode, on `device`, in the channels_last layout.
    Weights that do not fit the model the config names are a UserError."""
    config = checkpoint["config"]
    try:
        model = import_script("04_model").build_model(**config["model"])
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"the checkpoint's weights do not match the model it names "
                        f"({config['model']}); was it written by another version of "
                        "05_train.py? Train again.") from None
    # channels_last: the memory layout of the batches that 03_data.prepare_batch makes.
    return model.to(device, memory_format=torch.channels_last).eval()
