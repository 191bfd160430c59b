"""Tests for 10_sequences.py: the dry run prints its shapes, the LSTM learns a repetitive text,
generation writes what was asked (at any temperature), a loader that does not keep its rows in
order is refused, --resume goes on (and refuses another text or a hand-edited checkpoint in one
sentence, before any training), SIGTERM prints the resume command, flags and texts out of range
are refused, and 06-08 refuse its checkpoints in one sentence. Kept small: one tiny training run
is shared by the checkpoint tests."""

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import checkpointing
import common
from conftest import REPO_DIR, make_checkpoint, run_script

sequences = common.import_script("10_sequences")

SCRIPT = "10_sequences.py"
TINY_TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
# A model and run small enough to train in a second or two on one CPU thread.
TINY_FLAGS = ["--batch-size", "4", "--sequence-length", "16", "--hidden-size", "16",
              "--sample-length", "10", "--device", "cpu"]


def assert_one_sentence(result):
    """A refusal: exit code 1, and a single "Error: ..." line, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def test_dry_run_prints_shapes_and_writes_nothing(tmp_path):
    result = run_script(SCRIPT, "--dry-run", "--device", "cpu",
                        "--checkpoint-dir", tmp_path / "checkpoints")
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "one batch: inputs (32, 100)  targets (32, 100)" in output
    assert re.search(r"-> scores \(32, 100, \d+\)", output)
    assert "h (1, 32, 256), c (1, 32, 256)" in output
    assert re.search(r"scores \(32, 100, \d+\) -> \(3200, \d+\)", output)
    assert "without detach, the second backward() fails: Trying to backward through the graph" \
        in output
    assert "with detach_hidden(hidden), it works" in output
    assert "Summary: what you just did" in output and "Dry run finished" in output
    assert not (tmp_path / "checkpoints").exists()


def test_the_setup_says_it_is_plumbing():
    source = (REPO_DIR / SCRIPT).read_text()
    plumbing = source.index("# Plumbing, down to section 1, which a first read can skip")
    assert plumbing < source.index("common.report_errors_plainly()") < source.index("# %% 1.")
    assert len(source.splitlines()) <= 550


def test_batches_are_inputs_shifted_by_one():
    encoded = torch.arange(41)
    loader = sequences.SequenceLoader(encoded, batch_size=4, sequence_length=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # streams of 10: inputs 0-8 in pieces of 3
    for inputs, targets in batches:
        assert torch.equal(targets, inputs + 1)
    # Row i of one batch continues row i of the batch before.
    assert torch.equal(batches[1][0][:, 0], batches[0][0][:, -1] + 1)
    with pytest.raises(ValueError, match="too few for 32 streams"):
        sequences.SequenceLoader(torch.arange(40), batch_size=32, sequence_length=100)


def tiny_model_and_loader():
    torch.manual_seed(0)
    vocabulary = sequences.Vocabulary(TINY_TEXT)
    loader = sequences.SequenceLoader(vocabulary.encode(TINY_TEXT), batch_size=4,
                                      sequence_length=16)
    model = sequences.CharacterLSTM(len(vocabulary), embedding_dim=8, hidden_size=32)
    return vocabulary, loader, model


def test_the_loss_falls_on_a_repetitive_text():
    _, loader, model = tiny_model_and_loader()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    untrained_loss = sequences.evaluate(model, loader, loss_fn, "cpu")
    losses = [sequences.train_one_epoch(model, loader, loss_fn, optimizer, "cpu")
              for _ in range(4)]
    assert losses == sorted(losses, reverse=True), losses  # falls every epoch
    trained_loss = sequences.evaluate(model, loader, loss_fn, "cpu")
    assert untrained_loss > 2.0 and trained_loss < 0.3 * untrained_loss, (untrained_loss, losses)
    assert sequences.perplexity(trained_loss) < 2.0


def test_a_loader_that_does_not_keep_its_rows_in_order_is_refused():
    # Issue 20: a shuffled DataLoader of windows with drop_last=True gives batches of the right
    # shape, so the hidden state would silently be carried across unrelated pieces of text.
    vocabulary, _, model = tiny_model_and_loader()
    encoded = vocabulary.encode(TINY_TEXT)
    windows = encoded[:len(encoded) // 17 * 17].view(-1, 17)
    shuffled = DataLoader(TensorDataset(windows[:, :-1], windows[:, 1:]), batch_size=4,
                          shuffle=True, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters())
    before = [parameter.clone() for parameter in model.parameters()]
    for run in (lambda: sequences.train_one_epoch(model, shuffled, nn.CrossEntropyLoss(),
                                                  optimizer, "cpu"),
                lambda: sequences.evaluate(model, shuffled, nn.CrossEntropyLoss(), "cpu")):
        with pytest.raises(ValueError, match="continues_rows = True"):
            run()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing trained


def test_generation_writes_the_requested_characters_at_any_temperature():
    vocabulary, _, model = tiny_model_and_loader()
    texts = [sequences.generate(model, vocabulary, "the ", 50, temperature, "cpu", seed=1)
             for temperature in (1e-40, 0.5, 1.5, 100)]
    for text in texts:  # 1e-40: no "probability tensor contains inf, nan"
        assert len(text) == 50 and set(text) <= set(vocabulary.characters)
    assert sequences.generate(model, vocabulary, "the ", 50, 0.5, "cpu", seed=1) == texts[1]
    with pytest.raises(ValueError):
        sequences.generate(model, vocabulary, "the ", 5, temperature=0)
    with pytest.raises(ValueError):
        sequences.generate(model, vocabulary, "Z", 5)  # not in the vocabulary


def test_perplexity_never_overflows():
    assert sequences.perplexity(0.0) == 1.0
    assert sequences.perplexity(1e6) == float("inf")


def test_a_text_that_cannot_be_read_is_one_sentence(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "big.txt").write_text("x" * 11)
    for path, max_bytes in [(tmp_path / "missing.txt", 10), (tmp_path, 10), (fifo, 10),
                            ("/dev/zero", 10), (tmp_path / "latin1.txt", 10),
                            (tmp_path / "empty.txt", 10), (tmp_path / "big.txt", 10)]:
        with pytest.raises(common.UserError, match="it must be a UTF-8 text file, not empty "
                                                   "and at most 10 bytes"):
            sequences.read_text(path, max_bytes)
    assert sequences.read_text(tmp_path / "big.txt", 11) == "x" * 11


@pytest.mark.parametrize("arguments, message", [
    (["--hidden-size", "200000"], "--hidden-size must be between 1 and 4096"),
    (["--temperature", "1e-40"], "--temperature must be between 0.01 and 100"),
    (["--lr", "nan"], "--lr must be between"),
])
def test_numbers_out_of_range_are_refused(arguments, message):
    result = run_script(SCRIPT, *arguments, "--dry-run")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_text_that_is_a_device_is_one_sentence(tmp_path):
    result = run_script(SCRIPT, "--text", "/dev/zero", "--dry-run")  # would never end
    assert_one_sentence(result)
    assert "/dev/zero" in result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of the script on TINY_TEXT; returns (text path, checkpoint folder, result)."""
    folder = tmp_path_factory.mktemp("sequences")
    text_path = folder / "tiny.txt"
    text_path.write_text(TINY_TEXT, encoding="utf-8")
    checkpoint_dir = folder / "checkpoints"
    result = run_script(SCRIPT, "--text", text_path, "--epochs", "1", *TINY_FLAGS,
                        "--checkpoint-dir", checkpoint_dir)
    assert result.returncode == 0, result.stderr
    return text_path, checkpoint_dir, result


def test_a_run_writes_checkpoints_and_reports_perplexity(tiny_run):
    text_path, checkpoint_dir, result = tiny_run
    assert re.search(r"held-out perplexity: \d+\.\d+ after epoch 1", result.stdout)
    checkpoint = checkpointing.safe_load(checkpoint_dir / "best.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["kind"] == sequences.CHECKPOINT_KIND
    assert set(checkpoint["history"]) == set(sequences.HISTORY_KEYS)
    assert len(checkpoint["config"]["text_fingerprint"]) == 64  # the text, by its contents
    # The config rebuilds the model, and the vocabulary writes with it.
    model = sequences.CharacterLSTM(**checkpoint["config"]["model"])
    model.load_state_dict(checkpoint["model"])
    vocabulary = sequences.Vocabulary(checkpoint["config"]["vocabulary"])
    assert len(sequences.generate(model, vocabulary, "the", 5, seed=0)) == 5
    # A second run into the same folder refuses to replace it.
    again = run_script(SCRIPT, "--text", text_path, *TINY_FLAGS, "--checkpoint-dir",
                       checkpoint_dir)
    assert_one_sentence(again)
    assert "--resume" in again.stderr


def test_resume_goes_on_from_the_last_epoch_even_with_the_text_moved(tiny_run, tmp_path):
    text_path, checkpoint_dir, _ = tiny_run
    copy = shutil.copytree(checkpoint_dir, tmp_path / "checkpoints")
    moved = shutil.copy(text_path, tmp_path / "moved.txt")  # the same text: its path may change
    result = run_script(SCRIPT, "--text", moved, "--epochs", "2", "--resume", *TINY_FLAGS,
                        "--checkpoint-dir", copy)
    assert result.returncode == 0, result.stderr
    assert "Resuming from" in result.stdout and "1 epoch(s) done" in result.stdout
    assert "epoch   2/2" in result.stdout and "epoch   1/2" not in result.stdout
    checkpoint = checkpointing.safe_load(copy / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["history"]["epoch"] == [1, 2]


def scrambled(text):
    """Another text of the same length and the same characters (issue 21, item 7)."""
    return text[1:] + text[0]


HAND_EDITS = {  # issue 21, item 4, and two more ways to resume the wrong run
    "config without model": lambda c: c["config"].pop("model"),
    "config as a list": lambda c: c.update(config=[1, 2]),
    "epoch as text": lambda c: c.update(epoch="1"),
    "best_val_loss as text": lambda c: c.update(best_val_loss="2.0"),
    "best_val_loss 1e6": lambda c: c.update(best_val_loss=1e6),
    "history key removed": lambda c: c["history"].pop("seconds"),
    "history as a list": lambda c: c.update(history=[1]),
    "a 05 checkpoint": None,
    "another text of the same length and characters": None,
}


@pytest.mark.parametrize("edit", HAND_EDITS, ids=list(HAND_EDITS))
def test_resuming_the_wrong_run_is_one_sentence_before_any_training(edit, tiny_run, tmp_path):
    text_path, checkpoint_dir, _ = tiny_run
    copy = shutil.copytree(checkpoint_dir, tmp_path / "checkpoints")
    if edit == "a 05 checkpoint":
        make_checkpoint(copy / "last.pt")
    elif edit.startswith("another text"):
        text_path = tmp_path / "other.txt"
        text_path.write_text(scrambled(TINY_TEXT), encoding="utf-8")
    else:
        checkpoint = checkpointing.safe_load(copy / "last.pt")
        HAND_EDITS[edit](checkpoint)
        torch.save(checkpoint, copy / "last.pt")
    before = (copy / "last.pt").read_bytes()
    result = run_script(SCRIPT, "--text", text_path, "--epochs", "2", "--resume", *TINY_FLAGS,
                        "--checkpoint-dir", copy)
    assert_one_sentence(result)
    assert "epoch   2/2" not in result.stdout  # refused before any training
    assert (copy / "last.pt").read_bytes() == before
    if edit.startswith("another text"):
        assert "trained with text fingerprint" in result.stderr


def test_a_huge_but_consistent_best_loss_resumes_without_overflow(tiny_run, tmp_path):
    text_path, checkpoint_dir, _ = tiny_run
    copy = shutil.copytree(checkpoint_dir, tmp_path / "checkpoints")
    checkpoint = checkpointing.safe_load(copy / "last.pt")
    checkpoint["history"]["val_loss"] = [1e6]
    checkpoint.update(best_val_loss=1e6)
    torch.save(checkpoint, copy / "last.pt")
    result = run_script(SCRIPT, "--text", text_path, "--epochs", "2", "--resume", *TINY_FLAGS,
                        "--checkpoint-dir", copy)
    assert result.returncode == 0, result.stderr  # no OverflowError from exp(1e6)
    assert "*best" in result.stdout


def test_sigterm_stops_with_the_command_that_resumes(tmp_path):
    text_path = tmp_path / "tiny.txt"
    text_path.write_text(TINY_TEXT, encoding="utf-8")
    command = [sys.executable, str(REPO_DIR / SCRIPT), "--text", str(text_path), "--epochs",
               "10000", *TINY_FLAGS, "--checkpoint-dir", str(tmp_path / "checkpoints")]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        for line in process.stdout:  # wait until an epoch is saved
            if line.startswith("epoch   1/10000"):
                break
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "finished epoch(s); continue with:" in stderr and "--resume" in stderr


@pytest.mark.parametrize("script, arguments", [
    ("06_evaluate.py", ["--fake-data"]),
    ("08_predict.py", [REPO_DIR / "samples" / "frog.png"]),
])
def test_06_and_08_refuse_a_sequence_checkpoint_in_one_sentence(tiny_run, script, arguments):
    _, checkpoint_dir, _ = tiny_run
    result = run_script(script, *arguments, "--checkpoint", checkpoint_dir / "best.pt")
    assert_one_sentence(result)
    assert "not a checkpoint written by 05_train.py" in result.stderr


def test_07_refuses_a_sequence_checkpoint_too(tiny_run):
    _, checkpoint_dir, _ = tiny_run
    # 07_save_load.py loads with for_resume=True.
    for for_resume in (False, True):
        with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
            checkpointing.load_checkpoint(checkpoint_dir / "best.pt", for_resume=for_resume)
