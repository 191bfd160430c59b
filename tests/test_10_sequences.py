"""Tests for 10_sequences.py: the dry run prints its shapes, the LSTM learns a repetitive text,
generation writes what was asked, --resume goes on, and 06-08 refuse its checkpoints in one
sentence. Kept small: one tiny training run is shared by the checkpoint tests."""

import re
import shutil

import pytest
import torch
from torch import nn

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
    assert "without detach, the second backward() fails" in output
    assert "Dry run finished" in output
    assert not (tmp_path / "checkpoints").exists()


def test_batches_are_inputs_shifted_by_one():
    encoded = torch.arange(41)
    loader = sequences.SequenceLoader(encoded, batch_size=4, sequence_length=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # streams of 10: inputs 0-8 in pieces of 3
    for inputs, targets in batches:
        assert torch.equal(targets, inputs + 1)
    # Row i of one batch continues row i of the batch before.
    assert torch.equal(batches[1][0][:, 0], batches[0][0][:, -1] + 1)


def test_the_loss_falls_on_a_repetitive_text():
    torch.manual_seed(0)
    vocabulary = sequences.Vocabulary.from_text(TINY_TEXT)
    loader = sequences.SequenceLoader(vocabulary.encode(TINY_TEXT), batch_size=4,
                                      sequence_length=16)
    model = sequences.CharacterLSTM(len(vocabulary), embedding_dim=8, hidden_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    untrained_loss, _ = sequences.evaluate(model, loader, loss_fn, "cpu")
    losses = [sequences.train_one_epoch(model, loader, loss_fn, optimizer, "cpu")[0]
              for _ in range(4)]
    assert losses == sorted(losses, reverse=True), losses  # falls every epoch
    trained_loss, accuracy = sequences.evaluate(model, loader, loss_fn, "cpu")
    assert untrained_loss > 2.0 and trained_loss < 0.3 * untrained_loss, (untrained_loss, losses)
    assert accuracy > 0.8


def test_generation_writes_the_requested_characters_from_the_vocabulary():
    torch.manual_seed(0)
    vocabulary = sequences.Vocabulary.from_text(TINY_TEXT)
    model = sequences.CharacterLSTM(len(vocabulary), embedding_dim=8, hidden_size=16)
    texts = [sequences.generate(model, vocabulary, "the ", 50, temperature, "cpu",
                                torch.Generator().manual_seed(1)) for temperature in (0.5, 1.5)]
    for text in texts:
        assert len(text) == 50 and set(text) <= set(vocabulary.characters)
    again = sequences.generate(model, vocabulary, "the ", 50, 0.5, "cpu",
                               torch.Generator().manual_seed(1))
    assert again == texts[0]  # the same seed writes the same text
    with pytest.raises(ValueError):
        sequences.generate(model, vocabulary, "the ", 5, temperature=0)
    with pytest.raises(ValueError):
        sequences.generate(model, vocabulary, "Z", 5)  # not in the vocabulary


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
    _, checkpoint_dir, result = tiny_run
    assert re.search(r"held-out perplexity: \d+\.\d+ after epoch 1", result.stdout)
    checkpoint = sequences.load_sequence_checkpoint(checkpoint_dir / "best.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["kind"] == sequences.CHECKPOINT_KIND
    # A second run into the same folder refuses to replace it.
    text_path = tiny_run[0]
    again = run_script(SCRIPT, "--text", text_path, *TINY_FLAGS, "--checkpoint-dir",
                       checkpoint_dir)
    assert_one_sentence(again)
    assert "--resume" in again.stderr


def test_resume_goes_on_from_the_last_epoch(tiny_run, tmp_path):
    text_path, checkpoint_dir, _ = tiny_run
    copy = shutil.copytree(checkpoint_dir, tmp_path / "checkpoints")
    result = run_script(SCRIPT, "--text", text_path, "--epochs", "2", "--resume", *TINY_FLAGS,
                        "--checkpoint-dir", copy)
    assert result.returncode == 0, result.stderr
    assert "Resuming from" in result.stdout and "1 epochs done" in result.stdout
    assert "epoch   2/2" in result.stdout and "epoch   1/2" not in result.stdout
    checkpoint = sequences.load_sequence_checkpoint(copy / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["history"]["epoch"] == [1, 2]


@pytest.mark.parametrize("script, arguments", [
    ("06_evaluate.py", ["--fake-data"]),
    ("08_predict.py", [REPO_DIR / "samples" / "frog.png"]),
])
def test_06_and_08_refuse_a_sequence_checkpoint_in_one_sentence(tiny_run, script, arguments):
    _, checkpoint_dir, _ = tiny_run
    result = run_script(script, *arguments, "--checkpoint", checkpoint_dir / "best.pt")
    assert_one_sentence(result)
    assert "not a checkpoint written by 05_train.py" in result.stderr


def test_checkpoints_of_05_and_10_are_told_apart(tiny_run, tmp_path):
    _, checkpoint_dir, _ = tiny_run
    # 07_save_load.py loads with for_resume=True: it refuses a 10 checkpoint too.
    for for_resume in (False, True):
        with pytest.raises(common.UserError, match="not a checkpoint written by 05_train.py"):
            checkpointing.load_checkpoint(checkpoint_dir / "best.pt", for_resume=for_resume)
    make_checkpoint(tmp_path / "best.pt")  # a 05_train.py checkpoint, given to 10
    with pytest.raises(common.UserError, match="not written by 10_sequences.py"):
        sequences.load_sequence_checkpoint(tmp_path / "best.pt")


def test_a_learners_mistakes_are_one_sentence(tmp_path):
    with pytest.raises(common.UserError, match="no text file"):
        sequences.read_text(tmp_path / "missing.txt")
    with pytest.raises(common.UserError, match="too few for 32 streams; pass a longer --text"):
        sequences.make_loader(torch.arange(40), 32, 100, "training text", "pass a longer --text")
