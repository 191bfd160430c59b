"""Unit tests for checkpointing.py (save, load, the layout check, model_from_checkpoint, the
folder lock) and common.write_atomically. (A crash in the middle of a save is in
test_reliability.py.)"""

import json
import math
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
import torch

import checkpointing
import common

data = common.import_script("03_data")


def small_checkpoint(num_classes=3, seed=0):
    """A checkpoint as 05_train.py writes it, for an untrained small model."""
    torch.manual_seed(seed)
    model = common.import_script("04_model").build_model("small", num_classes=num_classes)
    return {
        "model": model.state_dict(), "epoch": 2, "best_val_accuracy": 0.5,
        "history": {"epoch": [1, 2], "train_loss": [1.5, 1.2]},
        "config": {"model": {"size": "small", "num_classes": num_classes},
                   "classes": [f"class{index}" for index in range(num_classes)],
                   "mean": list(data.CIFAR10_MEAN), "std": list(data.CIFAR10_STD),
                   "data": "folder", "epochs": 2, "lr": 0.1},
    }, model


class CodeOnLoad:
    """Pickles as a call to open(marker, "w"): unpickling it without weights_only creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---- save_checkpoint -----------------------------------------------------------------------------
def test_save_then_load_gives_back_the_same_checkpoint(tmp_path):
    checkpoint, _ = small_checkpoint()
    path = tmp_path / "nested" / "folder" / "last.pt"  # folders are created
    checkpointing.save_checkpoint(checkpoint, path)
    loaded = checkpointing.load_checkpoint(path)
    assert loaded.keys() == checkpoint.keys()
    for name, value in checkpoint["model"].items():
        assert torch.equal(loaded["model"][name], value), name
    for key in ("epoch", "best_val_accuracy", "history", "config"):
        assert loaded[key] == checkpoint[key], key


def test_save_overwrites_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint, _ = small_checkpoint()
    for epoch in (1, 2):
        checkpointing.save_checkpoint(dict(checkpoint, epoch=epoch), path)
    assert checkpointing.load_checkpoint(path)["epoch"] == 2
    assert os.listdir(tmp_path) == ["last.pt"]


# ---- load_checkpoint -----------------------------------------------------------------------------
def test_missing_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(common.UserError, match="05_train.py"):
        checkpointing.load_checkpoint(tmp_path / "best.pt")


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(common.UserError, match="no checkpoint"):
        checkpointing.load_checkpoint(tmp_path)


@pytest.mark.parametrize("cut", [0, 100, 0.5, -10])
def test_truncated_checkpoint_is_refused(cut, tmp_path):
    path = tmp_path / "last.pt"
    checkpointing.save_checkpoint(small_checkpoint()[0], path)
    data = path.read_bytes()
    path.write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(common.UserError, match="last.pt"):
        checkpointing.load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(common.UserError, match="last.pt"):
        checkpointing.load_checkpoint(path)


def test_random_bytes_are_called_corrupt_not_dangerous(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(bytes(range(256)) * 100)
    with pytest.raises(common.UserError) as error:
        checkpointing.load_checkpoint(path)
    assert "run code" not in str(error.value)
    assert "corrupt" in str(error.value)


@pytest.mark.parametrize("text", ["hello\n", "these are not the weights you are looking for\n"])
def test_a_text_file_is_refused(text, tmp_path):
    path = tmp_path / "last.pt"
    path.write_text(text)
    with pytest.raises(common.UserError, match="last.pt"):
        checkpointing.load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # pickle.dump's protocol
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(writer, tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint, _ = small_checkpoint()
    checkpoint["payload"] = CodeOnLoad(marker)
    path = tmp_path / "last.pt"
    with open(path, "wb") as file:
        (torch.save if writer == "torch.save" else pickle.dump)(checkpoint, file)
    with pytest.raises(common.UserError, match="refused"):
        checkpointing.load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [[1, 2, 3], {"model": {}}, {"config": {}}, torch.zeros(3)])
def test_data_that_is_not_a_checkpoint_is_refused(content, tmp_path):
    path = tmp_path / "last.pt"
    torch.save(content, path)
    with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
        checkpointing.load_checkpoint(path)


# ---- model_from_checkpoint -----------------------------------------------------------------------
def test_model_from_checkpoint_rebuilds_the_same_network_in_eval_mode(tmp_path):
    checkpoint, original = small_checkpoint(num_classes=4)
    path = tmp_path / "best.pt"
    checkpointing.save_checkpoint(checkpoint, path)
    rebuilt = checkpointing.model_from_checkpoint(checkpointing.load_checkpoint(path))
    assert not rebuilt.training
    assert rebuilt is not original
    # In the channels_last layout, the one 03_data.prepare_batch gives the batches.
    first_conv = next(module for module in rebuilt.modules()
                      if isinstance(module, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(5, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    original = original.to(memory_format=torch.channels_last).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(images), original(images))


def test_weights_that_do_not_fit_the_named_model_are_refused():
    checkpoint, _ = small_checkpoint(num_classes=3)
    checkpoint["config"]["model"]["num_classes"] = 10  # the weights score 3 classes, not 10
    with pytest.raises(common.UserError, match="do not match"):
        checkpointing.model_from_checkpoint(checkpoint)


# ---- Checkpoints edited by hand or written by another program -------------------------------
def without(checkpoint, *keys):
    """A deep copy of `checkpoint` with the entry at the path `keys` removed."""
    import copy

    edited = copy.deepcopy(checkpoint)
    inner = edited
    for key in keys[:-1]:
        inner = inner[key]
    del inner[keys[-1]]
    return edited


@pytest.mark.parametrize("keys", [("model",), ("config",), ("config", "classes"),
                                  ("config", "mean"), ("config", "model", "size"),
                                  ("config", "model", "num_classes")])
def test_a_checkpoint_missing_what_every_script_reads_is_one_sentence(keys, tmp_path):
    checkpoint, _ = small_checkpoint()
    path = tmp_path / "best.pt"
    checkpointing.save_checkpoint(without(checkpoint, *keys), path)
    with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
        checkpointing.load_checkpoint(path)


@pytest.mark.parametrize("keys", [("epoch",), ("optimizer",), ("history",),
                                  ("best_val_accuracy",), ("config", "lr")])
def test_a_checkpoint_missing_what_resume_reads_is_refused_only_for_resume(keys, tmp_path):
    from conftest import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "complete.pt")
    assert checkpointing.load_checkpoint(tmp_path / "complete.pt", for_resume=True)["epoch"] == 1
    checkpointing.save_checkpoint(without(checkpoint, *keys), tmp_path / "last.pt")
    with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
        checkpointing.load_checkpoint(tmp_path / "last.pt", for_resume=True)


def test_an_unknown_model_size_or_wrong_class_count_is_refused(tmp_path):
    checkpoint, _ = small_checkpoint()
    for edit in ({"size": "huge", "num_classes": 3}, {"size": "small", "num_classes": 4}):
        edited = dict(checkpoint, config=dict(checkpoint["config"], model=edit))
        checkpointing.save_checkpoint(edited, tmp_path / "best.pt")
        with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
            checkpointing.load_checkpoint(tmp_path / "best.pt")


CLASSIFIER_EDITS = {
    "a std of almost 0": lambda c: c["config"].update(std=[1e-300] * 3),
    "a huge std": lambda c: c["config"].update(std=[1e300] * 3),
    "a mean far outside 0..1": lambda c: c["config"].update(mean=[-1e30] * 3),
    "an epoch that is True": lambda c: c.update(epoch=True),
    "a class name with a terminal escape": lambda c: c["config"]["classes"].__setitem__(
        0, "\x1b[31mred"),
    "a class named twice": lambda c: c["config"]["classes"].__setitem__(1, "class0"),
    "an empty class name": lambda c: c["config"]["classes"].__setitem__(0, ""),
    "a class name of 1,000 letters": lambda c: c["config"]["classes"].__setitem__(0, "a" * 1000),
}


@pytest.mark.parametrize("edit", CLASSIFIER_EDITS, ids=list(CLASSIFIER_EDITS))
def test_a_classifier_checkpoint_with_edited_values_is_one_sentence(edit, tmp_path):
    checkpoint, _ = small_checkpoint()
    CLASSIFIER_EDITS[edit](checkpoint)
    checkpointing.save_checkpoint(checkpoint, tmp_path / "best.pt")
    with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
        checkpointing.load_checkpoint(tmp_path / "best.pt")


def test_a_classifier_whose_weights_changed_after_saving_is_called_damaged(tmp_path):
    checkpoint, _ = small_checkpoint()
    checkpoint["checksums"] = {"model": checkpointing.checksum(checkpoint["model"])}
    checkpointing.save_checkpoint(checkpoint, tmp_path / "best.pt")
    assert checkpointing.load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    checkpoint["model"]["classifier.weight"][0, 0] += 1.0  # what a flipped bit on disk does
    checkpointing.save_checkpoint(checkpoint, tmp_path / "best.pt")
    with pytest.raises(common.UserError, match="is damaged"):
        checkpointing.load_checkpoint(tmp_path / "best.pt")


def test_finite_weights_too_large_to_compute_with_are_one_sentence():
    checkpoint, _ = small_checkpoint()
    checkpoint["model"] = {name: value.fill_(1e30) if value.is_floating_point() else value
                           for name, value in checkpoint["model"].items()}
    with pytest.raises(common.UserError, match="not numbers"):
        checkpointing.model_from_checkpoint(checkpoint)


def test_renamed_weights_are_one_sentence():
    checkpoint, _ = small_checkpoint()
    checkpoint["model"] = {"renamed." + name: value for name, value in checkpoint["model"].items()}
    with pytest.raises(common.UserError, match="do not match"):
        checkpointing.model_from_checkpoint(checkpoint)


# ---- write_atomically and lock_folder ----------------------------------------------------------
def test_a_failed_write_keeps_the_previous_file_and_says_so(tmp_path):
    path = tmp_path / "history.json"
    common.write_atomically(path, lambda file: file.write(b"old"))

    def fail(file):
        file.write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file: no space left")

    with pytest.raises(common.UserError, match="previous file is unchanged"):
        common.write_atomically(path, fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["history.json"]


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_writing_where_a_file_blocks_the_folder_is_one_sentence(where, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    folder = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "below"
    with pytest.raises(common.UserError, match="nothing was written"):
        checkpointing.save_checkpoint({"model": {}}, folder / "last.pt")
    with pytest.raises(common.UserError, match="cannot use"):
        with checkpointing.lock_folder(folder):
            pass


def test_a_read_only_folder_is_one_sentence(tmp_path, monkeypatch):
    # In a read-only folder, creating the temporary file fails, and so does removing it. (The
    # system's answers are imitated: as root, as in CI, a folder's permissions stop nothing.)
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", refuse)
        patch.setattr("builtins.open", refuse)
        with pytest.raises(common.UserError) as error:
            checkpointing.save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert "could not write" in str(error.value) and "Permission denied" in str(error.value)


def test_one_run_at_a_time_and_leftovers_of_killed_saves_are_cleaned(tmp_path):
    (tmp_path / ".last.pt.12345.tmp").write_bytes(b"half a checkpoint")
    with checkpointing.lock_folder(tmp_path):
        assert not (tmp_path / ".last.pt.12345.tmp").exists()
        with pytest.raises(common.UserError, match="another run is writing"):
            with checkpointing.lock_folder(tmp_path):
                pass
    with checkpointing.lock_folder(tmp_path):  # released at the end of the block
        pass


def test_a_damaged_pickle_is_called_corrupt_not_dangerous(tmp_path):
    # It starts like a pickle (protocol 4), but what follows is noise: nothing asks for code.
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x80\x04" + bytes(range(256)) * 10)
    with pytest.raises(common.UserError) as error:
        checkpointing.load_checkpoint(path)
    assert "corrupt" in str(error.value) and "run code" not in str(error.value)


def test_a_missing_checkpoint_points_to_the_fake_data_one_when_only_that_exists(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(common, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    real = common.default_checkpoint_dir() / "best.pt"
    with pytest.raises(common.UserError) as error:
        checkpointing.load_checkpoint(real)
    assert "--fake-data" not in str(error.value)
    checkpoint, _ = small_checkpoint()
    checkpointing.save_checkpoint(checkpoint, common.default_checkpoint_dir(True) / "best.pt")
    with pytest.raises(common.UserError, match="add --fake-data to use it"):
        checkpointing.load_checkpoint(real)


# ---- TrainingRun: the run machinery, used from a project that is not this one ---------------------
# A regression model with Adam and a config of the caller's own: nothing of CifarNet, 05 or its
# flags, as a reader who copies checkpointing.py into another project would use it.
def regression_run(folder, epochs, first_run=None, **options):
    """Train y = 2x + 1 with a Linear model for `epochs` epochs under a TrainingRun in `folder`.

    Returns (run, model, optimizer, epochs trained here)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    run = checkpointing.TrainingRun(folder, monitor="val_loss", mode="min", kind="regression",
                                    history_keys=("epoch", "train_loss", "val_loss"), **options)
    config = {"lr": 0.1, "task": "y = 2x + 1", "path": options.get("path_label", "a")}
    first_epoch = run.start(config, may_change=("path",), model=model, optimizer=optimizer)
    trained = []
    with run.stop_cleanly(advice="try a smaller lr"):
        for epoch in range(first_epoch, epochs + 1):
            torch.manual_seed(epoch)
            x = torch.randn(32, 1)
            loss = torch.nn.functional.mse_loss(model(x), 2 * x + 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.end_epoch({"epoch": epoch, "train_loss": loss.item(), "val_loss": loss.item()})
            trained.append(epoch)
    return run, model, optimizer, trained


def test_a_run_of_another_model_saves_and_resumes_exactly(tmp_path):
    straight, model, _, _ = regression_run(tmp_path / "straight", epochs=4)
    regression_run(tmp_path / "stopped", epochs=2)
    resumed, resumed_model, optimizer, trained = regression_run(tmp_path / "stopped", epochs=4,
                                                                resume=True)
    assert trained == [3, 4]  # epochs 1-2 came from last.pt
    assert resumed.history == straight.history
    assert torch.equal(resumed_model.weight, model.weight)
    assert optimizer.state_dict()["state"][0]["step"] == 4  # Adam's state was put back
    assert sorted(path.name for path in (tmp_path / "stopped").iterdir()) == [
        ".lock", "best.pt", "history.json", "last.pt"]
    saved = checkpointing.safe_load(tmp_path / "stopped" / "last.pt")
    assert saved["kind"] == "regression" and saved["epoch"] == 4
    assert saved["best_val_loss"] == min(saved["history"]["val_loss"])
    assert json.loads((tmp_path / "stopped" / "history.json").read_text()) == saved["history"]


def test_a_new_run_refuses_to_replace_one_and_overwrite_replaces_it(tmp_path):
    regression_run(tmp_path, epochs=2)
    with pytest.raises(common.UserError, match="already holds a trained model"):
        regression_run(tmp_path, epochs=1)
    regression_run(tmp_path, epochs=1, overwrite=True)
    assert checkpointing.safe_load(tmp_path / "last.pt")["epoch"] == 1


def test_overwrite_stopped_between_the_two_saves_leaves_no_mix_of_runs(tmp_path, monkeypatch):
    regression_run(tmp_path, epochs=3)
    real_save = checkpointing.save_checkpoint

    def save_then_die(checkpoint, path):  # what kill -9 right after best.pt is written leaves
        real_save(checkpoint, path)
        raise SystemExit("killed")

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_die)
    with pytest.raises(SystemExit):
        regression_run(tmp_path, epochs=2, overwrite=True)
    files = sorted(path.name for path in tmp_path.glob("*.pt"))
    assert files == ["best.pt"], "the old run's last.pt would be resumed beside the new best.pt"
    assert checkpointing.safe_load(tmp_path / "best.pt")["epoch"] == 1
    assert not (tmp_path / "history.json").exists()  # nor the old run's history beside it
    # Neither --resume nor a new run sends the reader to the other: both name --overwrite.
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    for resume in (True, False):
        with pytest.raises(common.UserError, match="stopped during its first epoch.*--overwrite"):
            regression_run(tmp_path, epochs=2, resume=resume)
    regression_run(tmp_path, epochs=2, overwrite=True)
    assert checkpointing.safe_load(tmp_path / "last.pt")["epoch"] == 2


def test_resume_with_changed_settings_names_the_setting(tmp_path):
    regression_run(tmp_path, epochs=2)
    run = checkpointing.TrainingRun(tmp_path, resume=True, monitor="val_loss", mode="min",
                                    kind="regression")
    model = torch.nn.Linear(1, 1)
    with pytest.raises(common.UserError, match="trained with lr 0.1, but this run has 0.2"):
        run.start({"lr": 0.2, "task": "y = 2x + 1", "path": "a"}, model=model)
    del run  # lets go of the folder's lock
    # A key in may_change may differ.
    run = checkpointing.TrainingRun(tmp_path, resume=True, monitor="val_loss", mode="min",
                                    kind="regression")
    assert run.start({"lr": 0.1, "task": "y = 2x + 1", "path": "b"}, may_change=("path",),
                     model=model) == 3


def edit_last(folder, edit):
    """Apply `edit` to folder/last.pt's dict and save it back."""
    checkpoint = checkpointing.safe_load(folder / "last.pt")
    edit(checkpoint)
    torch.save(checkpoint, folder / "last.pt")


HAND_EDITS = {
    "epoch as text": lambda c: c.update(epoch="2"),
    "epoch beyond the history": lambda c: c.update(epoch=5),
    "best that is not the history's": lambda c: c.update(best_val_loss=1e6),
    "best as text": lambda c: c.update(best_val_loss="0.1"),
    "history key removed": lambda c: c["history"].pop("train_loss"),
    "history as a list": lambda c: c.update(history=[1, 2]),
    "a NaN in the history": lambda c: c["history"]["train_loss"].__setitem__(0, math.nan),
    "config as a list": lambda c: c.update(config=[1]),
    "config key removed": lambda c: c["config"].pop("lr"),
    "another kind": lambda c: c.update(kind="something else"),
    "no kind": lambda c: c.pop("kind"),
    "optimizer removed": lambda c: c.pop("optimizer"),
    "optimizer state of another shape": lambda c: c["optimizer"]["state"][0].update(
        exp_avg=torch.zeros(3, 3)),
    "weights of another shape": lambda c: c["model"].update(weight=torch.zeros(2, 2)),
    "not a dict": lambda c: c.clear(),
    "an epoch of a trillion": lambda c: c.update(epoch=10 ** 12),  # no list of 10**12 epochs
    "a weight changed after saving": lambda c: c["model"]["weight"].add_(0.001),  # the checksum
}


@pytest.mark.parametrize("edit", HAND_EDITS, ids=list(HAND_EDITS))
def test_a_hand_edited_checkpoint_is_refused_before_any_training(edit, tmp_path):
    regression_run(tmp_path, epochs=2)
    edit_last(tmp_path, HAND_EDITS[edit])
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(common.UserError) as error:
        regression_run(tmp_path, epochs=3, resume=True)
    message = str(error.value)
    assert "last.pt" in message or "trained with" in message, message
    assert (tmp_path / "last.pt").read_bytes() == before  # nothing was trained or saved


def test_saved_setting_gives_the_resumed_value_and_refuses_a_broken_one(tmp_path):
    new = checkpointing.TrainingRun(tmp_path / "new", dry_run=True)
    assert new.saved_setting("batch_size", 256) == 256
    regression_run(tmp_path / "run", epochs=1)
    resumed = checkpointing.TrainingRun(tmp_path / "run", resume=True, kind="regression")
    assert resumed.saved_setting("lr", 0.5) == 0.1
    del resumed  # lets go of the folder's lock
    edit_last(tmp_path / "run", lambda c: c["config"].update(lr=-1))
    resumed = checkpointing.TrainingRun(tmp_path / "run", resume=True, kind="regression")
    with pytest.raises(common.UserError, match="lr -1"):
        resumed.saved_setting("lr", 0.5)


def test_resume_without_last_pt_says_what_to_do(tmp_path):
    with pytest.raises(common.UserError, match="no .*last.pt to resume"):
        checkpointing.TrainingRun(tmp_path, resume=True)


def test_ctrl_c_and_sigterm_stop_with_the_command_that_continues(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py", "--epochs", "5"])
    for stop in ("ctrl-c", "sigterm"):
        folder = tmp_path / stop
        run = checkpointing.TrainingRun(folder)
        run.start({"lr": 1}, model=torch.nn.Linear(1, 1))
        with pytest.raises(SystemExit) as stopped:
            with run.stop_cleanly():
                run.end_epoch({"epoch": 1, "val_accuracy": 0.5})
                if stop == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)  # the signal arrives long before this ends
                raise KeyboardInterrupt
        assert stopped.value.code == 130
        hint = capsys.readouterr().err
        assert "holds the 1 finished epoch(s)" in hint
        assert "python train.py --epochs 5 --resume" in hint
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back after the block


def test_a_loss_that_blows_up_is_one_sentence_and_keeps_the_last_epoch(tmp_path):
    run = checkpointing.TrainingRun(tmp_path, monitor="val_loss", mode="min")
    run.start({}, model=torch.nn.Linear(1, 1))
    for bad_row in ({"epoch": 2, "val_loss": math.nan}, {"epoch": 2, "val_loss": 50.0}):
        with pytest.raises(common.UserError) as error:
            with run.stop_cleanly(advice="try --lr 0.01"):
                if not run.history:
                    run.end_epoch({"epoch": 1, "val_loss": 1.0})
                run.end_epoch(bad_row, max_loss=10)
        assert "in epoch 2: training diverged; try --lr 0.01" in str(error.value)
        assert "epoch 1 are kept" in str(error.value)
    assert run.history == {"epoch": [1], "val_loss": [1.0]}


def test_a_process_that_does_not_write_leaves_nothing(tmp_path):
    for options in ({"writer": False}, {"dry_run": True}):
        run = checkpointing.TrainingRun(tmp_path / "run", **options)
        run.start({"lr": 1}, model=torch.nn.Linear(1, 1))
        assert run.end_epoch({"epoch": 1, "val_accuracy": 0.5})
    assert not (tmp_path / "run").exists()


class SystemCall:
    """Pickles as a call to os.system: unpickling it without weights_only runs a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_checkpoint_that_calls_os_system_is_called_dangerous_not_corrupt(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"model": {}, "payload": SystemCall(f"touch {marker}")}, tmp_path / "last.pt")
    with pytest.raises(common.UserError) as error:
        checkpointing.safe_load(tmp_path / "last.pt")
    assert "run code" in str(error.value) and "corrupt" not in str(error.value)
    assert not marker.exists()


def test_resuming_with_another_kind_of_scheduler_is_refused(tmp_path):
    def a_run(scheduler_class, **options):
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = scheduler_class(optimizer, 2)  # StepLR's step_size, cosine's T_max
        run = checkpointing.TrainingRun(tmp_path, **options)
        first = run.start({"lr": 0.1}, model=model, optimizer=optimizer, scheduler=scheduler)
        return run, first

    run, _ = a_run(torch.optim.lr_scheduler.StepLR)
    run.end_epoch({"epoch": 1, "val_accuracy": 0.5})
    del run  # lets go of the folder's lock
    with pytest.raises(common.UserError, match="its scheduler is a StepLR, this run's a "
                                               "CosineAnnealingLR"):
        a_run(torch.optim.lr_scheduler.CosineAnnealingLR, resume=True)


def test_a_scheduler_whose_step_count_was_edited_is_refused(tmp_path):
    def a_run(**options):
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        run = checkpointing.TrainingRun(tmp_path, **options)
        return run, run.start({"lr": 0.1}, model=model, optimizer=optimizer, scheduler=scheduler)

    run, _ = a_run()
    run.end_epoch({"epoch": 1, "val_accuracy": 0.5})
    del run  # lets go of the folder's lock
    edit_last(tmp_path, lambda c: c["scheduler"].update(last_epoch="x"))
    with pytest.raises(common.UserError, match="scheduler counts its steps"):
        a_run(resume=True)


def test_what_a_copier_could_get_wrong_is_refused_when_made(tmp_path):
    # A loss monitored with mode="max" would keep the worst epoch as best.pt.
    with pytest.raises(ValueError, match="mode='min'"):
        checkpointing.TrainingRun(tmp_path / "a", monitor="val_loss")
    run = checkpointing.TrainingRun(tmp_path / "b", monitor="val_loss", mode="min")
    # A config that saves fine but that safe_load would refuse on resume (a Path, NumPy numbers).
    with pytest.raises(ValueError, match=r"config\['data'\]"):
        run.start({"lr": 0.1, "data": Path("somewhere")}, model=torch.nn.Linear(1, 1))
    assert run.start({"lr": 0.1, "data": "somewhere"}, model=torch.nn.Linear(1, 1)) == 1
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):  # epochs counted from 0
        run.end_epoch({"epoch": 0, "val_loss": 1.0})
    with pytest.raises(ValueError, match=r"\.item\(\)"):  # a tensor, not a number
        run.end_epoch({"epoch": 1, "val_loss": torch.tensor(1.0)})
    assert run.end_epoch({"epoch": 1, "val_loss": 1.0})


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(common.UserError, match="pass one of them"):
        checkpointing.TrainingRun(tmp_path, resume=True, overwrite=True)


def test_a_resumed_run_writes_history_json_again_from_last_pt(tmp_path):
    # Killed just after last.pt was renamed into place, a run leaves history.json one epoch
    # behind; resuming (even with nothing left to train) brings it up to date.
    regression_run(tmp_path, epochs=2)
    (tmp_path / "history.json").write_text(json.dumps({"epoch": [1]}))
    run = checkpointing.TrainingRun(tmp_path, resume=True, monitor="val_loss", mode="min",
                                    kind="regression")
    run.start({"lr": 0.1, "task": "y = 2x + 1", "path": "a"}, may_change=("path",),
              model=torch.nn.Linear(1, 1), optimizer=torch.optim.Adam(
                  torch.nn.Linear(1, 1).parameters()))
    saved = checkpointing.safe_load(tmp_path / "last.pt")["history"]
    assert json.loads((tmp_path / "history.json").read_text()) == saved
    assert saved["epoch"] == [1, 2]


def test_the_checksum_changes_with_any_number_and_only_then():
    model = torch.nn.Linear(3, 2)
    state = model.state_dict()
    before = checkpointing.checksum(state)
    assert checkpointing.checksum(model.state_dict()) == before  # the same numbers again
    with torch.no_grad():
        model.weight[1, 2] = model.weight[1, 2].item() + 1e-6
    assert checkpointing.checksum(model.state_dict()) != before


def test_the_generic_part_works_copied_with_only_userror_and_write_atomically(tmp_path):
    # As README says: checkpointing.py, plus UserError and write_atomically from common.py, in
    # a folder of its own, with nothing else of this repository.
    import inspect
    import shutil
    import subprocess
    import sys
    import textwrap

    shutil.copy(common.REPO_DIR / "checkpointing.py", tmp_path)
    (tmp_path / "common.py").write_text(
        "import os\nimport shutil\nfrom pathlib import Path\n\n\n"
        + inspect.getsource(common.UserError) + "\n\n" + inspect.getsource(common.write_atomically))
    script = textwrap.dedent("""
        import torch
        from checkpointing import TrainingRun
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.Adam(model.parameters())
        for resume in (False, True):
            run = TrainingRun("run", resume=resume, monitor="val_loss", mode="min")
            first = run.start({"task": "regression"}, model=model, optimizer=optimizer)
            with run.stop_cleanly():
                for epoch in range(first, 2 * first + 1):
                    run.end_epoch({"epoch": epoch, "val_loss": 1.0 / epoch})
            print(first, run.epoch, run.best)
            del run
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 2 0.5" and lines[1].startswith("Resuming from run/last.pt: 2 epoch(s)")
    assert lines[1].endswith("best val_loss so far 0.5")  # a loss is printed as it is
    assert lines[2] == "3 6 0.16666666666666666"


def test_blown_up_loss_is_ten_uniform_guesses_and_at_least_ten():
    import math
    # 10 classes: a uniform guess costs ln 10 = 2.30, so 23.0 means the weights blew up.
    assert checkpointing.blown_up_loss(10) == pytest.approx(10 * math.log(10))
    assert checkpointing.blown_up_loss(2) == 10.0  # ln 2 = 0.69: the floor of 10 holds
