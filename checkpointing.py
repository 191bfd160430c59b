"""Plumbing for checkpoints and training runs. You never need to open this file to follow a
lesson; 07_save_load.py teaches what a checkpoint holds and why it is loaded with weights_only.

Three parts:
    Files         save_checkpoint (atomic: a crash never leaves half a file), safe_load (tensors
                  and plain values only, so a crafted file cannot run code; a bad file is one
                  sentence), lock_folder (one run per folder).
    TrainingRun   the machinery around a training loop, shared by 05, 10 and 12: the run's
                  folder, resuming, saving last.pt and best.pt every epoch, history.json, and
                  Ctrl-C or SIGTERM turned into the command that goes on from there. It works
                  for any model, optimizer and config: copy this file into your own project
                  (with common.UserError and common.write_atomically) and use it as 05 does.
    Classifiers   load_checkpoint and model_from_checkpoint: 05's image classifiers, checked and
                  rebuilt, as 06-09 and 11 read them.
"""

import contextlib
import json
import math
import os
import pickle
import pickletools
import re
import shlex
import signal
import sys
import warnings
import zlib
from pathlib import Path

import torch

from common import UserError, write_atomically


# %% Files ---------------------------------------------------------------------------------------
def save_checkpoint(checkpoint, path):
    """Save a checkpoint dict to `path` with torch.save, atomically (common.write_atomically)."""
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def safe_load(path, device="cpu"):
    """Load what torch.save wrote to `path`, its tensors onto `device`, with weights_only=True.

    torch.load unpickles the file, and a pickle can run any code while it loads; weights_only
    only accepts tensors and plain Python values, so a crafted file is refused, not run. A file
    that is missing, damaged or crafted is a UserError that says which.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"there is no checkpoint file at {path}.")
    try:
        with warnings.catch_warnings():  # torch warns about some files it then refuses: the
            warnings.simplefilter("ignore")  # sentence below says all there is to say
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds of errors for a damaged file
        if isinstance(error, pickle.UnpicklingError) and asks_for_code(path, error):
            raise UserError(f"{path} holds more than weights and data (Python objects that "
                            "could run code when loaded), so it was refused; only load "
                            "checkpoints you trust.") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                        f"{type(error).__name__}).") from None


def asks_for_code(path, error):
    """Whether weights_only refused a file because it asks to import and call Python objects
    (which could run any code), rather than because it is damaged. pickletools only reads the
    pickle's instructions; it runs none of them."""
    # torch words it "Unsupported global: GLOBAL builtins.open" or "Trying to load unsupported
    # GLOBAL posix.system whose module posix is blocked", depending on the object and version.
    if re.search(r"unsupported global", str(error), re.IGNORECASE):
        return True
    try:
        with open(path, "rb") as file:
            instructions = {operation.name for operation, _, _ in pickletools.genops(file)}
    except Exception:  # not a whole pickle: damaged (or a torch.save zip archive)
        return False
    return bool(instructions & {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE"})


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


# %% TrainingRun ---------------------------------------------------------------------------------
def checksum(state, crc=0, path=""):
    """A CRC-32 of every tensor in `state` (a state_dict: nested dicts and lists), its place,
    dtype, shape and bytes, in order. Saved beside each state_dict, it shows on loading whether
    any stored number changed (a damaged disk, an interrupted copy); torch.load does not check.
    Values that are not tensors (settings such as a learning rate) are left to other checks."""
    if isinstance(state, torch.Tensor):
        data = state.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        crc = zlib.crc32(f"{path}:{state.dtype}:{tuple(state.shape)}".encode(), crc)
        return zlib.crc32(data.numpy().tobytes(), crc)
    items = (sorted(state.items(), key=lambda item: str(item[0])) if isinstance(state, dict)
             else enumerate(state) if isinstance(state, (list, tuple)) else [])
    for key, value in items:
        crc = checksum(value, crc, f"{path}/{key}")
    return crc


def damaged(checkpoint, name):
    """Whether checkpoint[name] differs from the checksum saved with it (a checkpoint without
    checksums, from before they were saved, is taken as it is)."""
    saved = checkpoint.get("checksums")
    return isinstance(saved, dict) and name in saved and saved[name] != checksum(checkpoint[name])


def first_unsafe_value(value, name="config"):
    """The name of the first part of `value` that torch.load(weights_only=True) cannot read back
    (a Path, a NumPy number, an object), or None if it is all plain values."""
    if isinstance(value, dict):
        return next((found for key, item in value.items()
                     if (found := first_unsafe_value(item, f"{name}[{key!r}]"))), None)
    if isinstance(value, (list, tuple)):
        return next((found for index, item in enumerate(value)
                     if (found := first_unsafe_value(item, f"{name}[{index}]"))), None)
    plain = value is None or type(value) in (str, int, float, bool, torch.Tensor)
    return None if plain else name


def is_number(value):
    """True for an int or a float that is finite (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def blown_up_loss(num_choices):
    """The cross-entropy above which a run has diverged: ten times that of a uniform guess over
    `num_choices` classes (or characters), ln(num_choices), and at least 10. Pass it to
    TrainingRun.end_epoch as max_loss."""
    return 10 * max(1.0, math.log(num_choices))


class TrainingRun:
    """Everything a training loop needs around it to be safe to stop, resume and trust.

    One run lives in one folder: last.pt (after every epoch), best.pt (whenever the monitored
    number improves) and history.json (every epoch's numbers, readable while it trains). A
    checkpoint holds the state_dict of every object given to start() (model, optimizer,
    scheduler, ...), the epoch, the history, the best value and the run's config.

        run = TrainingRun(folder, resume=args.resume, overwrite=args.overwrite)
        ...make the model, optimizer and schedule...
        first_epoch = run.start(config, model=model, optimizer=optimizer, scheduler=scheduler)
        with run.stop_cleanly():
            for epoch in range(first_epoch, num_epochs + 1):
                ...train and evaluate...
                run.end_epoch({"epoch": epoch, "train_loss": ..., "val_accuracy": ...})

    What it guarantees:
        - A new run never replaces a trained one unless `overwrite`; only one process at a time
          writes to a folder (lock_folder); files are written atomically (save_checkpoint).
        - best.pt and last.pt always come from the same run: a run that replaces another removes
          the old last.pt before its first save.
        - Resuming checks the checkpoint before anything trains: its parts and their types, a
          history that agrees with the epoch and the best value, and a config equal to this
          run's (every key, except those in `may_change`). Any difference is one sentence.
        - Ctrl-C, or SIGTERM (a shutdown, a cluster's time limit), inside stop_cleanly() ends
          with the command that goes on from the last saved epoch, and exit status 130; a loss
          that became NaN or infinite (FloatingPointError) ends in one sentence, exit status 1.

    Args:
        folder: the run's folder (created if needed).
        resume: continue from folder/last.pt.
        overwrite: replace the run already in the folder (otherwise a new run refuses to).
        dry_run: write nothing at all (no lock, no files).
        history_keys: the names of the numbers every epoch records ("epoch", "train_loss",
            ...), so that a resumed run's history is checked before anything trains.
        monitor: the history key that decides which epoch is best ("val_accuracy", "val_loss").
        mode: "max" if a larger `monitor` is better, "min" if a smaller one is.
        kind: a short name for what the run trains, saved in every checkpoint; resuming a
            checkpoint of another kind is refused.
        device: where the tensors of a resumed checkpoint are loaded.
        writer: False in a process that trains but must not write (the ranks other than 0 of
            a distributed run): no lock, no files, no messages. It does not load last.pt
            either: give it the writer's checkpoint through `resumed`.
    """

    def __init__(self, folder, resume=False, overwrite=False, dry_run=False, history_keys=None,
                 monitor="val_accuracy", mode="max", kind=None, device="cpu", writer=True):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        if monitor.endswith("loss") == (mode == "max"):  # the worst epoch would be kept as best
            raise ValueError(f"monitor {monitor!r} with mode={mode!r}: a loss wants mode='min', "
                             "anything else (an accuracy) mode='max'")
        if resume and overwrite:
            raise UserError("--resume continues the run kept there and --overwrite replaces it; "
                            "pass one of them, not both.")
        self.folder = Path(folder)
        self.last_path, self.best_path = self.folder / "last.pt", self.folder / "best.pt"
        self.history_path = self.folder / "history.json"
        self.dry_run, self.writer, self.kind = dry_run, writer, kind
        self.monitor, self.mode = monitor, mode
        self.history_keys = None if history_keys is None else set(history_keys)
        self.best_key = f"best_{monitor}"  # e.g. "best_val_accuracy" in the checkpoint
        self.resumed = None  # the checkpoint this run goes on from; None for a new run
        self.history, self.best, self.epoch, self.saved_epoch = {}, None, 0, 0
        self.objects, self.config = {}, None
        self.replacing = False  # an --overwrite run: the old last.pt goes at the first save
        self.lock = None
        if not writer:
            return
        if not dry_run:
            self.lock = lock_folder(self.folder)  # held until this process ends
        # best.pt without last.pt: a run stopped in its first epoch, between the two saves.
        first_epoch_only = self.best_path.exists() and not self.last_path.exists()
        if first_epoch_only and not overwrite and (resume or not dry_run):
            raise UserError(f"{self.folder} holds only the best.pt of a run stopped during its "
                            "first epoch, with no last.pt to resume; start again with "
                            "--overwrite, or train into another --checkpoint-dir.")
        if resume:
            if not self.last_path.is_file():
                raise UserError(f"there is no {self.last_path} to resume; start a new run "
                                "without --resume, or pass the --checkpoint-dir of the run to "
                                "continue.")
            self.resumed = safe_load(self.last_path, device)
            return
        trained = [path for path in (self.last_path, self.best_path) if path.exists()]
        if trained and not (overwrite or dry_run):
            raise UserError(
                f"{self.folder} already holds a trained model ({trained[0].name}); continue that "
                "run with --resume, train this one into another folder with --checkpoint-dir, or "
                "replace it with --overwrite.")
        self.replacing = bool(trained) and not dry_run

    def refuse(self, problem):
        """The UserError for a last.pt that cannot be resumed."""
        return UserError(f"{self.last_path} cannot be resumed: {problem}; start a new run "
                         "with --overwrite (or another --checkpoint-dir).")

    def saved_setting(self, key, default):
        """The value `key` has in the config of the run being resumed, or `default` for a new
        run. A script calls it for settings it needs before start(), such as a batch size that
        was not given; a saved value that is not a positive number like `default` is refused."""
        if self.resumed is None:
            return default
        config = self.resumed.get("config") if isinstance(self.resumed, dict) else None
        value = config.get(key) if isinstance(config, dict) else None
        if not (is_number(value) and value > 0 and isinstance(value, type(default))):
            raise self.refuse(f"its config holds {key} {value!r}")
        return value

    def start(self, config, may_change=(), **objects):
        """Begin the run: a new one at epoch 1, or a resumed one where it stopped.

        Args:
            config: a dict of plain values (numbers, strings, lists, dicts) that describes the
                run: saved in every checkpoint, and compared with the saved one on resume.
            may_change: config keys that a resumed run may change (e.g. a file's path).
            objects: everything whose state_dict() goes into the checkpoints and is put back
                with load_state_dict() on resume, by name: model=..., optimizer=..., ...

        Returns:
            The first epoch to train: 1, or the one after the last saved epoch.
        """
        unreadable = first_unsafe_value(config)
        if unreadable:  # saved fine, it would make every checkpoint refused by safe_load
            raise ValueError(f"the config's {unreadable} is not a plain value (str, number, "
                             "bool, None, or a list or dict of them); convert it, e.g. str(path)")
        self.config, self.objects = config, objects
        if self.resumed is None:
            self.best = -math.inf if self.mode == "max" else math.inf
            return 1
        checkpoint = self.resumed
        self.check_resumable(checkpoint, may_change)
        for name, thing in objects.items():
            try:
                thing.load_state_dict(checkpoint[name])
            except Exception:  # RuntimeError, ValueError, KeyError, TypeError, IndexError...
                raise self.refuse(f"its {name} does not fit this run's {name} (an edited file, "
                                  "or one written by another version of the script)") from None
            if isinstance(thing, torch.optim.Optimizer) and not optimizer_state_fits(thing):
                raise self.refuse(f"its {name} state does not fit this run's parameters")
            counters = [getattr(thing, key) for key in ("last_epoch", "_step_count")
                        if hasattr(thing, key)]  # a learning-rate scheduler's
            if not all(type(count) is int and count >= -1 for count in counters):
                raise self.refuse(f"its {name} counts its steps with {counters!r}")
        self.history, self.best = checkpoint["history"], checkpoint[self.best_key]
        self.epoch = self.saved_epoch = checkpoint["epoch"]
        if self.writer:
            best = (f"{100 * self.best:.2f}%" if "accuracy" in self.monitor  # as the epochs
                    else f"{self.best:.4g}")  # print it
            print(f"Resuming from {self.last_path}: {self.epoch} epoch(s) done, best "
                  f"{self.monitor} so far {best}")
            if not self.dry_run:  # a run killed just after saving last.pt left it one epoch behind
                self.write_history()
        return self.epoch + 1

    def check_resumable(self, checkpoint, may_change):
        """Refuse, in one sentence, a checkpoint whose parts are missing, of the wrong type or
        inconsistent, or whose config differs from this run's."""
        if not isinstance(checkpoint, dict):
            raise self.refuse("it does not hold the dict of a checkpoint")
        if self.kind is not None and checkpoint.get("kind") != self.kind:
            found = checkpoint.get("kind")
            raise self.refuse(f"it holds {'a ' + repr(found) if found else 'another kind of'} "
                              f"run, not a {self.kind!r} run")
        for name, thing in self.objects.items():
            if not isinstance(checkpoint.get(name), dict):
                raise self.refuse(f"its {name} state is missing")
            types = checkpoint.get("types") if isinstance(checkpoint.get("types"), dict) else {}
            saved_class = types.get(name, type(thing).__name__)
            if saved_class != type(thing).__name__:  # a StepLR's state would load into a cosine
                raise self.refuse(f"its {name} is a {saved_class}, this run's a "
                                  f"{type(thing).__name__}")
            if damaged(checkpoint, name):
                raise self.refuse(f"its {name} state is damaged (its numbers do not match the "
                                  "checksum saved with them)")
        epoch, history, best = (checkpoint.get(key) for key in ("epoch", "history",
                                                                self.best_key))
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
            raise self.refuse(f"its epoch is {epoch!r}")
        if not (isinstance(history, dict) and isinstance(history.get("epoch"), list)
                and len(history["epoch"]) == epoch and history["epoch"] == list(range(1, epoch + 1))
                and self.monitor in history
                and (self.history_keys is None or set(history) == self.history_keys)
                and all(isinstance(values, list) and len(values) == epoch
                        and all(map(is_number, values)) for values in history.values())):
            raise self.refuse(f"its history does not hold {epoch} epoch(s) of numbers")
        pick = max if self.mode == "max" else min
        if not (is_number(best) and best == pick(history[self.monitor])):
            raise self.refuse(f"its {self.best_key} ({best!r}) is not the best of its history")
        saved = checkpoint.get("config")
        if not isinstance(saved, dict):
            raise self.refuse("its config is not a dict of settings")
        missing = sorted(set(self.config) - set(saved) - set(may_change), key=str)
        if missing:
            raise self.refuse(f"its config has no {missing[0]}")
        difference = first_difference({key: value for key, value in saved.items()
                                       if key not in may_change},
                                      {key: value for key, value in self.config.items()
                                       if key not in may_change})
        if difference:
            name, before, now = difference
            raise UserError(
                f"the run in {self.folder} was trained with {name} {before!r}, but this run has "
                f"{now!r}; resume with the settings of that run (the same flags and data), or "
                "start a new run with --overwrite or another --checkpoint-dir.")

    def end_epoch(self, row, max_loss=math.inf):
        """Record one finished epoch: add `row` to the history and, unless this is a dry run or
        a process that does not write, save best.pt (if `monitor` improved), then last.pt, then
        history.json.

        Args:
            row: the epoch's numbers by name, with "epoch" and `monitor` among them; every
                epoch must give the same names.
            max_loss: a row value whose name ends in "loss" above this stops the run: the
                weights have blown up even if the numbers have not yet overflowed.

        Returns:
            True if this epoch is the best so far.

        Raises:
            FloatingPointError: a value is NaN or infinite, or a loss is above max_loss (the
                epoch is not recorded; stop_cleanly turns this into one sentence).
        """
        for key, value in row.items():
            if type(value) not in (int, float):  # a tensor or a NumPy number would be saved as such
                raise ValueError(f"row[{key!r}] must be a Python int or float, not "
                                 f"{type(value).__name__}; use .item() on a tensor")
            if not is_number(value):
                raise FloatingPointError(f"the {key.replace('_', ' ')} became {value}")
            if key.endswith("loss") and value > max_loss:
                raise FloatingPointError(f"the {key.replace('_', ' ')} rose to {value:.3g}")
        if row.get("epoch") != self.epoch + 1:
            raise ValueError(f"epochs are numbered 1, 2, 3, ...: after epoch {self.epoch} comes "
                             f"{self.epoch + 1}, not {row.get('epoch')!r}")
        if not self.history:
            self.history = {key: [] for key in row}
        if row.keys() != self.history.keys() or (self.history_keys is not None
                                                 and set(row) != self.history_keys):
            raise ValueError(f"every epoch must give the same numbers: {sorted(self.history)}, "
                             f"got {sorted(row)}")
        for key, value in row.items():
            self.history[key].append(value)
        self.epoch = row["epoch"]
        value = row[self.monitor]
        improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best = value
        if self.writer and not self.dry_run:
            self.save(improved)
        return improved

    def save(self, improved):
        """Write best.pt (if improved), then last.pt, then history.json."""
        checkpoint = {name: thing.state_dict() for name, thing in self.objects.items()}
        checkpoint.update({"epoch": self.epoch, self.best_key: self.best,
                           "history": self.history, "config": self.config})
        # "types": what each state_dict came from, e.g. {"model": "CifarNet"}, checked on resume;
        # "checksums": one number per state_dict, which changes if any of its bytes do.
        checkpoint["types"] = {name: type(thing).__name__ for name, thing in self.objects.items()}
        checkpoint["checksums"] = {name: checksum(checkpoint[name]) for name in self.objects}
        if self.kind is not None:
            checkpoint["kind"] = self.kind
        if self.replacing:
            # The run being replaced loses its last.pt and history.json before this run writes
            # anything, so the folder never holds one run's best.pt beside another's files.
            self.last_path.unlink(missing_ok=True)
            self.history_path.unlink(missing_ok=True)
            self.replacing = False
        # best.pt before last.pt: if the process dies between the two writes, last.pt does not
        # yet claim a best value that no best.pt holds, and the resumed run writes best.pt again.
        if improved:
            save_checkpoint(checkpoint, self.best_path)
        save_checkpoint(checkpoint, self.last_path)
        self.saved_epoch = self.epoch
        self.write_history()

    def write_history(self):
        """Write history.json: every epoch's numbers, as last.pt holds them."""
        write_atomically(self.history_path,
                         lambda file: file.write(json.dumps(self.history, indent=1).encode()))

    @contextlib.contextmanager
    def stop_cleanly(self, advice="try a lower learning rate (--lr)", resume_command=None):
        """Around the loop over epochs: Ctrl-C or SIGTERM stops the run with the command that
        continues it (exit status 130); a diverged loss (FloatingPointError) is one sentence
        with `advice` (exit status 1). Every finished epoch is already saved.

        Args:
            advice: what to try after a loss blew up, e.g. "try a lower learning rate: --lr 0.1".
            resume_command: the command that continues the run; by default this script's own
                command line with --resume added.
        """
        def stop_like_ctrl_c(signal_number, frame):
            raise KeyboardInterrupt("SIGTERM")  # the argument says which signal it was

        # SIGTERM is what a shutdown, `kill`, or a cluster's time limit sends.
        try:
            previous = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
        except ValueError:  # not the main thread: signals cannot be handled here
            previous = None
        try:
            yield self
        except FloatingPointError as error:
            if not self.writer:
                raise SystemExit(1) from None  # the writing process says it, once
            kept = (f"the checkpoints of epoch {self.saved_epoch} are kept"
                    if self.saved_epoch and not self.dry_run else "nothing was saved")
            raise UserError(f"{error} in epoch {self.epoch + 1}: training diverged; {advice}. "
                            f"({kept}.)") from None
        except KeyboardInterrupt:
            if self.writer:
                print("\n" + self.resume_hint(resume_command), file=sys.stderr)
            raise SystemExit(130) from None  # 128 + 2, SIGINT's number: "stopped by Ctrl-C"
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def resume_hint(self, command=None):
        """What to print when the run is stopped: what is saved, and how to go on from there."""
        if not self.saved_epoch or self.dry_run:
            return "Interrupted before any epoch was saved, so there is nothing to resume."
        if command is None:  # the same command again (same data, folders, epochs) + --resume
            words = [word for word in sys.argv[1:] if word != "--resume"]
            command = " ".join(["python", shlex.quote(sys.argv[0])]
                               + [shlex.quote(word) for word in words] + ["--resume"])
        return (f"Interrupted. {self.last_path} holds the {self.saved_epoch} finished "
                f"epoch(s); continue with:\n  {command}")


def first_difference(saved, now, name=""):
    """The first setting in which two configs differ, as (its name in words, saved value, new
    value), looking inside dicts ("model size" for config["model"]["size"]); None if equal."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            found = first_difference(saved.get(key), now.get(key),
                                     f"{name} {key}".strip().replace("_", " "))
            if found:
                return found
        return None
    return None if saved == now else (name, saved, now)


def optimizer_state_fits(optimizer):
    """Whether every tensor in an optimizer's loaded state (momentum, running averages) has the
    shape of its parameter; load_state_dict does not check, and the first step would fail."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for value in optimizer.state.get(parameter, {}).values():
                if (isinstance(value, torch.Tensor) and value.ndim
                        and value.shape != parameter.shape):
                    return False
    return True


# %% Classifiers: 05's checkpoints, as 06-09 and 11 read them --------------------------------------
CLASSIFIER_KIND = "image classifier"  # what 05 and 12 write as the checkpoints' kind


def load_checkpoint(path, device="cpu", for_resume=False):
    """Load a checkpoint of 05_train.py (or 12) safely, and check that it holds what 06-09 read
    from it (with for_resume, also the optimizer, schedule and history): a missing, damaged,
    crafted or edited file, or one of another kind, is a UserError that says what to do."""
    import common  # this project's folders (kept out of the generic part above, which a reader
    # can copy into another project with UserError and write_atomically only)

    path = Path(path)
    if not path.is_file():
        fake = common.default_checkpoint_dir(fake_data=True) / path.name
        hint = (f" (there is one from a --fake-data run in {fake.parent}: add --fake-data to use "
                "it)" if path == common.default_checkpoint_dir() / path.name and fake.is_file()
                else "")
        raise UserError(f"there is no checkpoint at {path}{hint}; train a model first with "
                        "`python 05_train.py`, or pass --checkpoint with the right file.")
    try:
        checkpoint = safe_load(path, device)
    except UserError as error:
        raise UserError(f"{error} Train again with `python 05_train.py`, or pass --checkpoint "
                        "with another file.") from None
    problem = classifier_problem(checkpoint, for_resume)
    if not problem and damaged(checkpoint, "model"):
        raise UserError(f"{path} is damaged: its weights do not match the checksum saved with "
                        "them (a bad disk or an interrupted copy); use another copy, or train "
                        "again with `python 05_train.py`.")
    if problem:
        raise UserError(f"{path} is not a checkpoint written by 05_train.py ({problem}); train "
                        "an image classifier with `python 05_train.py`, or pass --checkpoint "
                        "with another file.")
    return checkpoint


def classifier_problem(checkpoint, for_resume=False):
    """What, if anything, is wrong with what 06-09 read from a checkpoint (with for_resume, also
    what resuming needs): None if nothing."""
    import common

    if not isinstance(checkpoint, dict):
        return "it does not hold a dict"
    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return "no config of its model"
    classes, mean, std = (config.get(key) for key in ("classes", "mean", "std"))
    weights = checkpoint.get("model")
    checks = {
        "the model size": model.get("size") in common.import_script("04_model").MODEL_SIZES,
        "the class names": isinstance(classes, list) and len(classes) >= 2
        and all(isinstance(name, str) and name.isprintable() and 0 < len(name) <= 100
                for name in classes) and len(set(classes)) == len(classes)
        and model.get("num_classes") == len(classes),
        "the mean and std": isinstance(mean, list) and isinstance(std, list)
        and len(mean) == len(std) == model.get("in_channels", 3)
        # Statistics of pixels in [0, 1] (03_data.channel_statistics): within it, std above 0.
        and all(map(is_number, mean + std)) and all(0 <= value <= 1 for value in mean)
        and all(1e-3 <= value <= 1 for value in std),
        "the image size": isinstance(config.get("image_size", 32), int)
        and not isinstance(config.get("image_size", 32), bool)
        and 8 <= config.get("image_size", 32) <= 4096,
        "the number of channels": model.get("in_channels", 3) in (1, 3),
        "the weights": isinstance(weights, dict) and all(
            isinstance(value, torch.Tensor) and bool(torch.isfinite(value.float()).all())
            for value in weights.values()),
        "the epoch": type(checkpoint.get("epoch")) is int and checkpoint["epoch"] >= 1,
        "the best accuracy": is_number(checkpoint.get("best_val_accuracy")),
    }
    if for_resume:  # what 07_save_load.py puts back to show how a run resumes
        history = checkpoint.get("history")
        checks.update({
            "the optimizer": isinstance(checkpoint.get("optimizer"), dict),
            "the schedule": isinstance(checkpoint.get("scheduler"), dict),
            "the history": isinstance(history, dict)
            and len(history.get("epoch", [])) == checkpoint.get("epoch"),
            "the settings": is_number(config.get("lr")) and isinstance(config.get("epochs"), int)
            and isinstance(config.get("batch_size"), int),
        })
    wrong = [what for what, right in checks.items() if not right]
    return f"{wrong[0]}: missing or not as expected" if wrong else None


def model_from_checkpoint(checkpoint, device="cpu"):
    """Rebuild the network a checkpoint (from load_checkpoint) was trained with, from its
    "config", and load its weights: in eval mode, on `device`, in the channels_last layout.
    Weights that do not fit the model the config names are a UserError."""
    import common

    config = checkpoint["config"]
    try:
        model = common.import_script("04_model").build_model(**config["model"])
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"the checkpoint's weights do not match the model it names "
                        f"({config['model']}); was it written by another version of "
                        "05_train.py? Train again.") from None
    # Finite weights can still be too large to compute with (1e30 overflows float32 in the
    # first layer): two grey images must give finite scores (at 32x32, which any size's
    # weights take: the network ends in a global pooling).
    size, channels = 32, config["model"].get("in_channels", 3)
    with torch.no_grad():
        scores = model.eval()(torch.full((2, channels, size, size), 0.5))
    if not torch.isfinite(scores).all():
        raise UserError("the checkpoint's weights give scores that are not numbers (NaN or "
                        "infinite): the file is damaged or edited. Train again.")
    # channels_last: the memory layout of the batches that 03_data.prepare_batch makes.
    return model.to(device, memory_format=torch.channels_last)
