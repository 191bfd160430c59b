"""Reliability and security: what happens when things go wrong, one test per case.

A crash while saving, a killed or interrupted training run, a crafted or broken checkpoint, a
checkpoint used with the wrong model or data, a diverging loss, invalid flags, a failed download.
Each must end with the files intact and, where the user can act, one plain sentence and exit 1.

The training runs that these tests interrupt are started together by one fixture, each on one
CPU thread; most error cases call the script's main() in this process, which is faster.
"""

import io
import math
import re
import shutil
import signal
import time
from types import SimpleNamespace

import pytest
import torch

import checkpointing
import common
from test_05_train import (EASY_COLOURS, assert_ok, assert_refused, finish, load_script,
                           make_image_folder, run_in_process, start)
from test_checkpointing import CodeOnLoad

TRAIN = "05_train.py"
EVALUATE = "06_evaluate.py"
EPOCHS = 4
SIGNAL_DELAY = 0.1  # seconds after a victim's epoch 1 checkpoint appears: early in epoch 2
THREE_COLOURS = {name: EASY_COLOURS[name] for name in ("blue", "green", "red")}
HISTORY_NUMBERS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Three colours, 60 training images each: 40 batches of 4 per epoch, a second on a CPU."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "three_colours", THREE_COLOURS,
                             train_per_class=60, test_per_class=8)


def training_args(data_dir, checkpoint_dir, *extra, epochs=EPOCHS):
    """The flags of every training run here: same data, batches, seed; its own folders."""
    return ["--data-dir", data_dir, "--epochs", epochs, "--batch-size", 4, "--seed", 0,
            "--device", "cpu", "--checkpoint-dir", checkpoint_dir,
            "--output-dir", checkpoint_dir.parent / "outputs", *extra]


@pytest.fixture(scope="module")
def interrupted_runs(small_data, tmp_path_factory):
    """Three runs of the same training, started together.

    reference: runs to the end. killed: SIGKILLed early in epoch 2 (just after epoch 1 was saved),
    then resumed with --resume to the end. interrupted: sent SIGINT (Ctrl-C) at the same point.
    """
    base = tmp_path_factory.mktemp("interrupted_runs")
    runs = {name: SimpleNamespace(checkpoint_dir=base / name / "checkpoints")
            for name in ("reference", "killed", "interrupted")}
    for run in runs.values():
        run.args = training_args(small_data, run.checkpoint_dir)
        run.process = start(TRAIN, *run.args)
    killed, interrupted = runs["killed"], runs["interrupted"]
    killed.signal, interrupted.signal = signal.SIGKILL, signal.SIGINT

    # Watch both victims at once; each gets its signal SIGNAL_DELAY after its last.pt appears
    # (a checkpoint file appears whole: save_checkpoint renames it into place).
    waiting = [killed, interrupted]
    deadline = time.monotonic() + 300
    while waiting:
        assert time.monotonic() < deadline, "timed out waiting for the training runs"
        for run in list(waiting):
            if not hasattr(run, "saved_at") and (run.checkpoint_dir / "last.pt").exists():
                run.saved_at = time.monotonic()
            if hasattr(run, "saved_at") and time.monotonic() >= run.saved_at + SIGNAL_DELAY:
                run.running_when_signalled = run.process.poll() is None
                run.process.send_signal(run.signal)
                waiting.remove(run)
            elif run.process.poll() is not None:  # ended without a checkpoint: the tests say so
                run.running_when_signalled = False
                waiting.remove(run)
        time.sleep(0.01)

    killed.result = finish(killed.process)
    # Keep the folder as the kill left it: the resume below writes to the same folder.
    killed.left_behind = base / "killed" / "left_behind"
    if killed.checkpoint_dir.exists():
        shutil.copytree(killed.checkpoint_dir, killed.left_behind)
    killed.resume = start(TRAIN, *killed.args, "--resume")
    interrupted.result = finish(interrupted.process, timeout=60)
    runs["reference"].result = finish(runs["reference"].process)
    killed.resume_result = finish(killed.resume)
    return runs


@pytest.fixture(scope="module")
def reference(interrupted_runs):
    """The uninterrupted run (EPOCHS epochs); its checkpoints are copied by the error-case tests."""
    run = interrupted_runs["reference"]
    assert_ok(run.result)
    return run


@pytest.fixture
def trained_checkpoints(reference, tmp_path):
    """A copy of the reference run's checkpoints (EPOCHS epochs), for a test to use or damage."""
    checkpoint_dir = tmp_path / "checkpoints"
    shutil.copytree(reference.checkpoint_dir, checkpoint_dir)
    return checkpoint_dir


def weights_are_finite(checkpoint):
    return all(torch.isfinite(value.float()).all() for value in checkpoint["model"].values())


# ---- Atomic checkpoints --------------------------------------------------------------------------
def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from conftest import make_checkpoint

    path = tmp_path / "last.pt"
    checkpoint = make_checkpoint(path)
    weights = checkpoint["model"]
    ones = {name: torch.ones_like(value) for name, value in weights.items()}
    checkpointing.save_checkpoint(dict(checkpoint, model=ones, epoch=1), path)
    real_save = torch.save

    def save_half_then_crash(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")  # e.g. the disk filled up mid-write

    monkeypatch.setattr(torch, "save", save_half_then_crash)
    with pytest.raises(common.UserError, match="could not write .*previous file is unchanged"):
        checkpointing.save_checkpoint(dict(checkpoint, epoch=2), path)
    monkeypatch.undo()
    loaded = checkpointing.load_checkpoint(path)
    assert loaded["epoch"] == 1
    assert all(torch.equal(loaded["model"][name], ones[name]) for name in ones)
    assert [entry.name for entry in tmp_path.iterdir()] == ["last.pt"], "a temporary file was left"


# ---- Killed, interrupted, resumed ----------------------------------------------------------------
def test_killed_mid_epoch_leaves_a_loadable_checkpoint(interrupted_runs):
    killed = interrupted_runs["killed"]
    assert killed.running_when_signalled, "the run ended before it could be killed"
    assert killed.result.returncode == -signal.SIGKILL
    checkpoint = checkpointing.load_checkpoint(killed.left_behind / "last.pt")
    assert 1 <= checkpoint["epoch"] < EPOCHS
    assert checkpoint["history"]["epoch"] == list(range(1, checkpoint["epoch"] + 1))


def test_killed_run_resumes_to_the_end(interrupted_runs):
    killed = interrupted_runs["killed"]
    assert_ok(killed.resume_result)
    assert "Resuming from" in killed.resume_result.stdout
    checkpoint = checkpointing.load_checkpoint(killed.checkpoint_dir / "last.pt")
    assert checkpoint["epoch"] == EPOCHS
    assert checkpoint["history"]["epoch"] == list(range(1, EPOCHS + 1))


def test_resumed_run_computes_the_same_numbers_as_an_uninterrupted_one(interrupted_runs, reference):
    # Same flags, same seed, one CPU thread: resuming must not change a single epoch's result.
    resumed = checkpointing.load_checkpoint(interrupted_runs["killed"].checkpoint_dir / "last.pt")
    straight = checkpointing.load_checkpoint(reference.checkpoint_dir / "last.pt")
    for key in HISTORY_NUMBERS:
        assert resumed["history"][key] == pytest.approx(straight["history"][key], abs=1e-5), key
    for name, value in straight["model"].items():
        assert torch.allclose(resumed["model"][name].float(), value.float(), atol=1e-5), name


def test_ctrl_c_exits_130_and_says_how_to_resume(interrupted_runs):
    interrupted = interrupted_runs["interrupted"]
    assert interrupted.running_when_signalled, "the run ended before Ctrl-C could be sent"
    result = interrupted.result
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "--resume" in result.stderr
    checkpoint = checkpointing.load_checkpoint(interrupted.checkpoint_dir / "last.pt")
    assert 1 <= checkpoint["epoch"] < EPOCHS


def test_ctrl_c_resume_command_repeats_the_runs_folders(interrupted_runs, small_data):
    # Copied as printed, the command must resume this run: its checkpoints, on its data.
    stderr = interrupted_runs["interrupted"].result.stderr
    commands = [line for line in stderr.splitlines()
                if "05_train.py" in line and "--resume" in line]
    assert commands, stderr
    assert f"--checkpoint-dir {interrupted_runs['interrupted'].checkpoint_dir}" in commands[0]
    assert f"--data-dir {small_data}" in commands[0]


# ---- Crafted and broken checkpoints -------------------------------------------------------------
def crafted_checkpoint(source, path, marker):
    """A real checkpoint with one extra entry that would run code if unpickled unsafely."""
    checkpoint = checkpointing.load_checkpoint(source)
    checkpoint["payload"] = CodeOnLoad(marker)
    torch.save(checkpoint, path)
    return path


def test_crafted_checkpoint_is_refused_by_evaluate(trained_checkpoints, small_data, tmp_path):
    marker = tmp_path / "code_ran"
    crafted = crafted_checkpoint(trained_checkpoints / "best.pt", tmp_path / "crafted.pt", marker)
    result = finish(start(EVALUATE, "--data-dir", small_data, "--device", "cpu",
                          "--checkpoint", crafted, "--output-dir", tmp_path / "outputs"))
    assert_refused(result, str(crafted))
    assert not marker.exists(), "loading the checkpoint ran the code inside it"
    assert not (tmp_path / "outputs").exists()


def test_crafted_checkpoint_is_refused_by_resume(trained_checkpoints, small_data, tmp_path,
                                                capsys, monkeypatch):
    marker = tmp_path / "code_ran"
    crafted_checkpoint(trained_checkpoints / "last.pt", trained_checkpoints / "last.pt", marker)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "last.pt")
    assert not marker.exists(), "loading the checkpoint ran the code inside it"


def damage(path, kind):
    """Replace a checkpoint file with a broken one."""
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        generator = torch.Generator().manual_seed(0)
        noise = torch.randint(0, 256, (50_000,), dtype=torch.uint8, generator=generator)
        path.write_bytes(noise.numpy().tobytes())
    elif kind == "text":
        path.write_text("these are not the weights you are looking for\n")


DAMAGE = ["truncated", "random bytes", "text"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_broken_checkpoint_is_refused_by_evaluate(kind, trained_checkpoints, small_data, tmp_path,
                                                  capsys, monkeypatch):
    damage(trained_checkpoints / "best.pt", kind)
    result = run_in_process(EVALUATE, "--data-dir", small_data, "--device", "cpu", "--checkpoint",
                            trained_checkpoints / "best.pt", "--output-dir", tmp_path / "outputs",
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "best.pt")


@pytest.mark.parametrize("kind", DAMAGE)
def test_broken_checkpoint_is_refused_by_resume(kind, trained_checkpoints, small_data,
                                                capsys, monkeypatch):
    damage(trained_checkpoints / "last.pt", kind)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "last.pt")


# ---- A checkpoint used with the wrong model or data ---------------------------------------------
def test_resume_with_another_model_size_names_the_trained_one(trained_checkpoints, small_data,
                                                              capsys, monkeypatch):
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  "--model-size", "large", epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "trained with model size 'small', but this run has 'large'")


def test_evaluate_on_other_classes_is_refused(trained_checkpoints, tmp_path, capsys, monkeypatch):
    four_classes = make_image_folder(tmp_path / "four_colours", EASY_COLOURS,
                                     train_per_class=1, test_per_class=2)
    result = run_in_process(EVALUATE, "--data-dir", four_classes, "--device", "cpu", "--checkpoint",
                            trained_checkpoints / "best.pt", "--output-dir", tmp_path / "outputs",
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "yellow")
    assert not (tmp_path / "outputs").exists()


def test_resume_on_other_classes_of_the_same_number_is_refused(trained_checkpoints, tmp_path,
                                                               capsys, monkeypatch):
    other = {name: EASY_COLOURS[name] for name in ("blue", "green", "yellow")}
    other_data = make_image_folder(tmp_path / "other_colours", other, train_per_class=10,
                                   test_per_class=1)
    before = (trained_checkpoints / "last.pt").read_bytes()
    result = run_in_process(TRAIN, *training_args(other_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "yellow")
    assert (trained_checkpoints / "last.pt").read_bytes() == before


# ---- A loss that blows up -----------------------------------------------------------------------
def assert_checkpoints_untouched(checkpoint_dir, epoch=EPOCHS):
    for name in ("last.pt", "best.pt"):
        checkpoint = checkpointing.load_checkpoint(checkpoint_dir / name)
        assert weights_are_finite(checkpoint), f"{name} holds NaN or inf weights"
        assert all(math.isfinite(value) for value in checkpoint["history"]["train_loss"]), name
    assert checkpointing.load_checkpoint(checkpoint_dir / "last.pt")["epoch"] == epoch


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(trained_checkpoints, small_data,
                                                                capsys, monkeypatch):
    # A new run with an absurd learning rate, into a folder that holds a good finished run.
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--lr", 10,
                                                  "--overwrite", epochs=1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "--lr", "lower learning rate")
    assert_checkpoints_untouched(trained_checkpoints)


def test_diverging_run_with_few_steps_per_epoch_is_stopped_too(trained_checkpoints, small_data,
                                                               capsys, monkeypatch):
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--lr", 10,
                                                  "--batch-size", 36, "--overwrite", epochs=1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "--lr")
    assert_checkpoints_untouched(trained_checkpoints)


def test_resume_with_a_huge_lr_is_not_silently_ignored(trained_checkpoints, small_data,
                                                       capsys, monkeypatch):
    # A resumed run keeps its schedule, so another --lr is refused like another --batch-size:
    # exit 1, a sentence about --lr, and the good checkpoints kept.
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  "--lr", 5, epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "trained with lr")
    assert_checkpoints_untouched(trained_checkpoints)


# ---- A new run over old checkpoints --------------------------------------------------------------
def folder_bytes(folder):
    """{file name: content} of the checkpoints in a folder, to tell whether anything changed."""
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.pt"))}


def test_new_run_never_replaces_a_trained_model_without_being_asked(trained_checkpoints,
                                                                    small_data, capsys,
                                                                    monkeypatch):
    before = folder_bytes(trained_checkpoints)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, epochs=1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, str(trained_checkpoints), "--resume", "--checkpoint-dir", "--overwrite")
    assert folder_bytes(trained_checkpoints) == before
    # Asked for, it replaces them.
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--overwrite",
                                                  epochs=1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_ok(result)
    assert checkpointing.load_checkpoint(trained_checkpoints / "last.pt")["epoch"] == 1
    assert checkpointing.load_checkpoint(trained_checkpoints / "best.pt")["epoch"] == 1


def test_fake_data_runs_keep_out_of_the_real_checkpoints(monkeypatch):
    training = common.import_script("05_train")
    evaluation = common.import_script("06_evaluate")
    for fake, folder in ((["--fake-data"], common.CHECKPOINT_DIR / "fake"),
                         ([], common.CHECKPOINT_DIR)):
        monkeypatch.setattr("sys.argv", ["05_train.py", *fake])
        assert training.parse_args().checkpoint_dir == folder
        monkeypatch.setattr("sys.argv", ["06_evaluate.py", *fake])
        assert evaluation.parse_args().checkpoint == folder / "best.pt"
        monkeypatch.setattr("sys.argv", ["08_predict.py", "photo.jpg", *fake])
        assert common.import_script("08_predict").parse_args().checkpoint == folder / "best.pt"


def test_one_run_at_a_time_per_checkpoint_folder(trained_checkpoints, small_data, capsys,
                                                 monkeypatch):
    before = folder_bytes(trained_checkpoints)
    with checkpointing.lock_folder(trained_checkpoints):  # another run holds the folder
        result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints,
                                                      "--resume", epochs=EPOCHS + 1),
                                capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "another run is writing to", str(trained_checkpoints))
    assert folder_bytes(trained_checkpoints) == before


def test_stopped_between_the_two_saves_best_pt_is_never_lost(tmp_path, small_data, capsys,
                                                             monkeypatch):
    # Stop the run right after the first of the two files of an improving epoch is written:
    # whatever last.pt then claims as the best accuracy, best.pt must hold it.
    real_save = checkpointing.save_checkpoint
    saves = []

    def save_then_stop(checkpoint, path):
        real_save(checkpoint, path)
        saves.append(path.name)
        if len(saves) == 3:  # epoch 1: best.pt and last.pt; epoch 2 (improved): the first file
            raise KeyboardInterrupt  # what kill -9 at that moment leaves behind, minus the rest

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_stop)
    # Every epoch scores better than the one before, so epoch 2 writes both files.
    script = load_script(TRAIN)
    scores = iter([0.5, 0.6, 0.7])
    monkeypatch.setattr(script, "evaluate", lambda *args: (1.0, next(scores)))
    checkpoint_dir = tmp_path / "checkpoints"
    result = run_in_process(TRAIN, *training_args(small_data, checkpoint_dir, epochs=3),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 130, result.stderr
    assert saves[:2] == ["best.pt", "last.pt"]
    last = checkpointing.load_checkpoint(checkpoint_dir / "last.pt")
    best = checkpointing.load_checkpoint(checkpoint_dir / "best.pt")
    assert best["history"]["val_accuracy"][-1] >= last["best_val_accuracy"]
    assert best["epoch"] == 2  # the new best was written before last.pt
    # Interrupted while saving epoch 2: last.pt holds epoch 1, and the hint says so.
    assert last["epoch"] == 1 and "holds the 1 finished epoch(s)" in result.stderr


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_checkpoint_dir_that_cannot_be_a_folder_is_one_sentence(where, tmp_path, small_data,
                                                                  capsys, monkeypatch):
    (tmp_path / "taken").write_text("a file")
    folder = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "below"
    result = run_in_process(TRAIN, *training_args(small_data, folder, epochs=1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "--checkpoint-dir")


def test_a_full_disk_while_saving_is_one_sentence_and_keeps_the_last_epoch(
        trained_checkpoints, small_data, capsys, monkeypatch):
    before = folder_bytes(trained_checkpoints)

    def disk_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed "
                           "writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", disk_full)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "could not write", "previous file is unchanged")
    assert folder_bytes(trained_checkpoints) == before


@pytest.mark.parametrize("script", [TRAIN, EVALUATE])
def test_an_output_dir_that_is_a_file_is_one_sentence(script, trained_checkpoints, small_data,
                                                      tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("a file")
    if script == TRAIN:
        flags = training_args(small_data, tmp_path / "new_run", epochs=1)
        flags[flags.index("--output-dir") + 1] = tmp_path / "taken"
    else:
        flags = ["--data-dir", small_data, "--checkpoint", trained_checkpoints / "best.pt",
                 "--device", "cpu", "--output-dir", tmp_path / "taken"]
    result = run_in_process(script, *flags, capsys=capsys, monkeypatch=monkeypatch)
    line = assert_refused(result, str(tmp_path / "taken"))
    assert "could not write" in line or "cannot write into" in line
    if script == TRAIN:  # found before any training, not after the last epoch
        assert "epoch" not in result.stdout and not (tmp_path / "new_run").exists()


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(tmp_path, small_data, capsys,
                                                           monkeypatch):
    import os

    training = load_script(TRAIN)  # the module run_in_process runs
    real_epoch = training.train_one_epoch

    def epoch_then_sigterm(*args, **kwargs):
        result = real_epoch(*args, **kwargs)
        if kwargs["description"].startswith("epoch 2/"):
            os.kill(os.getpid(), signal.SIGTERM)  # what a shutdown or a cluster sends
        return result

    monkeypatch.setattr(training, "train_one_epoch", epoch_then_sigterm)
    checkpoint_dir = tmp_path / "checkpoints"
    try:
        result = run_in_process(TRAIN, *training_args(small_data, checkpoint_dir, epochs=3),
                                capsys=capsys, monkeypatch=monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert result.returncode == 130
    assert "holds the 1 finished epoch(s)" in result.stderr and "--resume" in result.stderr
    assert checkpointing.load_checkpoint(checkpoint_dir / "last.pt")["epoch"] == 1


def test_resume_with_more_epochs_keeps_the_schedule_without_a_jump(trained_checkpoints,
                                                                   small_data, capsys,
                                                                   monkeypatch):
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 2),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_ok(result)
    assert f"planned for {EPOCHS} epochs" in result.stdout
    rates = checkpointing.load_checkpoint(trained_checkpoints / "last.pt")["history"]["lr"]
    assert len(rates) == EPOCHS + 2
    # The finished schedule had decayed to its floor; the extra epochs stay there.
    assert rates[EPOCHS:] == pytest.approx([rates[EPOCHS - 1]] * 2)


def test_resume_without_a_run_says_what_to_do(tmp_path, small_data, capsys, monkeypatch):
    result = run_in_process(TRAIN, *training_args(small_data, tmp_path / "empty", "--resume"),
                            capsys=capsys, monkeypatch=monkeypatch)
    line = assert_refused(result, "--resume", "--checkpoint-dir")
    assert "--checkpoint " not in line  # 05_train.py has no --checkpoint flag


def test_a_channel_that_never_changes_trains_without_nan(tmp_path, capsys, monkeypatch):
    # Every image grey: the three channels are equal, and in a folder of one-colour images the
    # blue channel is 0 everywhere, so its standard deviation is 0.
    colours = {"dark": (60, 60, 0), "light": (200, 200, 0)}
    data_dir = make_image_folder(tmp_path / "data", colours, train_per_class=20, test_per_class=4)
    result = run_in_process(TRAIN, *training_args(data_dir, tmp_path / "checkpoints", epochs=2),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_ok(result)
    history = checkpointing.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["history"]
    assert all(math.isfinite(value) for value in history["train_loss"] + history["val_loss"])


# ---- Invalid flags: refused by argparse before any work starts ----------------------------------
@pytest.mark.parametrize("script, flags, named", [
    (TRAIN, ["--epochs", "0"], "--epochs"),
    (TRAIN, ["--lr", "-0.1"], "--lr"),
    (TRAIN, ["--lr", "nan"], "--lr"),
    (TRAIN, ["--batch-size", "0"], "--batch-size"),
    (TRAIN, ["--batch-size", str(2 ** 63)], "--batch-size"),
    (TRAIN, ["--lr", "1e308"], "--lr"),
    (TRAIN, ["--weight-decay", "nan"], "--weight-decay"),
    (TRAIN, ["--seed", "-1"], "--seed"),
    (TRAIN, ["--data-dir", "{tmp}/no_such_folder"], "--data-dir"),
    (EVALUATE, ["--batch-size", "-5", "--checkpoint", "{tmp}/empty.pt"], "--batch-size"),
])
def test_invalid_flag_is_refused_before_any_work(script, flags, named, tmp_path, capsys,
                                                 monkeypatch):
    (tmp_path / "empty.pt").touch()
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    folders = ["--checkpoint-dir", tmp_path / "out"] if script == TRAIN else []
    result = run_in_process(script, "--fake-data", *flags, *folders, "--output-dir",
                            tmp_path / "out", capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and "error:" in result.stderr
    assert result.stdout == "", "work started before the flags were checked"
    assert not (tmp_path / "out").exists()


# ---- Subprocess failures: a download that fails half-way ----------------------------------------
def test_evaluate_without_the_checkpoint_says_to_train_first(tmp_path, capsys, monkeypatch):
    result = run_in_process(EVALUATE, "--fake-data", "--checkpoint", tmp_path / "no_such_file.pt",
                            "--output-dir", tmp_path / "out", capsys=capsys,
                            monkeypatch=monkeypatch)
    assert_refused(result, "no_such_file.pt", "05_train.py")
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_failed_download_leaves_nothing_that_breaks_the_next_try(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # What an interrupted download leaves behind: the start of the archive.
    (data_dir / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08" + bytes(5000))
    result = finish(start(TRAIN, "--data-dir", data_dir, "--epochs", 1, "--device", "cpu",
                          "--checkpoint-dir", tmp_path / "checkpoints",
                          "--output-dir", tmp_path / "outputs"), timeout=120)
    assert_refused(result, "CIFAR-10", "--fake-data")
    assert list(data_dir.iterdir()) == [], "the failed download left files behind"
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


@pytest.mark.parametrize("script", [TRAIN, "07_save_load.py"])
def test_an_edited_optimizer_state_is_one_sentence(script, trained_checkpoints, small_data,
                                                   tmp_path, capsys, monkeypatch):
    checkpoint = checkpointing.load_checkpoint(trained_checkpoints / "last.pt")
    checkpoint["optimizer"]["param_groups"] = checkpoint["optimizer"]["param_groups"][:1]
    checkpointing.save_checkpoint(checkpoint, trained_checkpoints / "last.pt")
    if script == TRAIN:
        result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                      epochs=EPOCHS + 1),
                                capsys=capsys, monkeypatch=monkeypatch)
    else:
        result = finish(start(script, "--checkpoint", trained_checkpoints / "last.pt",
                              "--output-dir", tmp_path / "export"), timeout=120)
    assert_refused(result, "does not fit")


# ---- Resuming checks the settings and the checkpoint before any training ----------------------
@pytest.mark.parametrize("flags, named", [
    (["--weight-decay", "0.001"], "weight decay"),
    (["--label-smoothing", "0.1"], "label smoothing"),
    (["--no-augment"], "augment"),
    (["--seed", "1"], "seed"),
])
def test_resume_with_other_settings_is_refused(flags, named, trained_checkpoints, small_data,
                                               capsys, monkeypatch):
    before = folder_bytes(trained_checkpoints)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  *flags, epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, f"trained with {named}")
    assert folder_bytes(trained_checkpoints) == before


def test_resume_on_a_copy_of_the_data_in_another_folder_is_refused(trained_checkpoints,
                                                                   small_data, tmp_path,
                                                                   capsys, monkeypatch):
    copy = tmp_path / "copy_of_the_data"
    shutil.copytree(small_data, copy)  # the same class names: only the folder tells them apart
    result = run_in_process(TRAIN, *training_args(copy, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "trained with data dir", str(copy))


HAND_EDITS = {
    "history key removed": lambda checkpoint: checkpoint["history"].pop("lr"),
    "class names as numbers": lambda checkpoint: checkpoint["config"].update(classes=[0, 1, 2]),
    "batch size 0": lambda checkpoint: checkpoint["config"].update(batch_size=0),
    "learning rate -1": lambda checkpoint: checkpoint["config"].update(lr=-1),
    "epoch as text": lambda checkpoint: checkpoint.update(epoch="4"),
    "a best accuracy that is not the history's": lambda c: c.update(best_val_accuracy=0.999),
}


@pytest.mark.parametrize("edit", HAND_EDITS, ids=list(HAND_EDITS))
def test_a_hand_edited_checkpoint_is_one_sentence_before_any_training(
        edit, trained_checkpoints, small_data, capsys, monkeypatch):
    checkpoint = checkpointing.safe_load(trained_checkpoints / "last.pt")
    HAND_EDITS[edit](checkpoint)
    checkpointing.save_checkpoint(checkpoint, trained_checkpoints / "last.pt")
    before = folder_bytes(trained_checkpoints)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=EPOCHS + 1),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result)
    assert not re.search(r"^epoch ", result.stdout, re.MULTILINE), "it trained first"
    assert folder_bytes(trained_checkpoints) == before


def test_overwrite_stopped_between_its_first_two_saves_leaves_one_run(trained_checkpoints,
                                                                     small_data, capsys,
                                                                     monkeypatch):
    real_save = checkpointing.save_checkpoint

    def save_then_stop(checkpoint, path):  # kill -9 right after the new best.pt is written
        real_save(checkpoint, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_stop)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--overwrite",
                                                  epochs=2),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 130
    assert sorted(path.name for path in trained_checkpoints.glob("*.pt")) == ["best.pt"]
    best = checkpointing.load_checkpoint(trained_checkpoints / "best.pt")
    assert best["epoch"] == 1 and best["config"]["epochs"] == 2  # the new run's
    # --resume then says there is nothing to resume, rather than going on with the old run.
    monkeypatch.setattr(checkpointing, "save_checkpoint", real_save)
    result = run_in_process(TRAIN, *training_args(small_data, trained_checkpoints, "--resume",
                                                  epochs=2),
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "no", "last.pt to resume")
