"""Unit tests for checkpointing.py (save, load, the layout check, model_from_checkpoint, the
folder lock) and common.write_atomically. (A crash in the middle of a save is in
test_reliability.py.)"""

import os
import pickle
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
