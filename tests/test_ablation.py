"""Tests for benchmarks/ablation.py: every row trains and is measured, a switched-off part is
really off, and 05_train.py's recipe is left as it was."""

import json
import re

import pytest

import common
from test_05_train import run_in_process

training = common.import_script("05_train")

SCRIPT = "benchmarks/ablation.py"


def test_rows_train_and_leave_the_recipe_as_it_was(tmp_path, capsys, monkeypatch):
    recipe = training.START_FACTOR, training.END_FACTOR
    numbers = tmp_path / "ablation.json"
    result = run_in_process(SCRIPT, "--fake-data", "--device", "cpu", "--epochs", 1,
                            "--rows", "default", "no-warmup", "no-decay", "no-batch-norm",
                            "beginner", "crops-2-wide", "batch-128", "bf16-cpu", "wide-bf16-cpu",
                            "--json", numbers, capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 0, result.stderr
    report = json.loads(numbers.read_text())
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == ["default", "no warm-up", "no decay", "no batch-norm",
                          "beginner's network", "crops of 2 pixels, last block 256 wide",
                          "batch of 128", "bfloat16 on the CPU",
                          "last block 256 wide, bfloat16 on the CPU"]
    for row in rows.values():
        assert not row["diverged"]
        for key in ("test_accuracy", "test_accuracy_tta", "test_accuracy_tta_shifts"):
            assert 0 <= row[key] <= 1, (row["row"], key)
    # The schedule's parts are really switched off: the default starts at a tenth of its peak
    # (0.3 for batches of 256) and ends at a thousandth; no warm-up starts at the peak; no decay
    # ends there. The batch of 128 has half the peak.
    approx = pytest.approx
    assert rows["default"]["first_lr"] == approx(0.03)
    assert rows["default"]["last_lr"] == approx(3e-4)
    assert rows["no warm-up"]["first_lr"] == approx(0.3)
    assert rows["no warm-up"]["last_lr"] == approx(3e-4)
    assert rows["no decay"]["first_lr"] == approx(0.03)
    assert rows["no decay"]["last_lr"] == approx(0.3)
    assert rows["batch of 128"]["first_lr"] == approx(0.015)
    assert rows["batch of 128"]["batch_size"] == 128
    assert rows["bfloat16 on the CPU"]["parameters"] == rows["default"]["parameters"]
    # The switched-off part is really gone: batch-norm's scale and shift, 2 per channel of the
    # 7 batch-norms (16 + 2x32 + 2x64 + 2x128 channels).
    assert rows["default"]["parameters"] - rows["no batch-norm"]["parameters"] == 2 * 464
    # The wider last block: its two convolutions, its batch-norms and the classifier grow from
    # 128 to 256 channels.
    wide = rows["crops of 2 pixels, last block 256 wide"]["parameters"]
    assert wide - rows["default"]["parameters"] == (
        (64 * 256 - 64 * 128) * 9 + (256 * 256 - 128 * 128) * 9 + 2 * 2 * 128 + 10 * 128)
    assert rows["last block 256 wide, bfloat16 on the CPU"]["parameters"] == wide
    assert rows["beginner's network"]["parameters"] == (
        3 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 64 * 8 * 8 * 128 + 128 + 128 * 10 + 10)
    # The printed table has every row, each with its three accuracies and its time.
    for label in ["default", "no warm-up", "beginner's network", "batch of 128"]:
        assert re.search(rf"^\| {label} \| \d+\.\d\d% \|.*\| \d+\.\d\d% \| \d+\.\d\d% \| \d+ s \|$",
                         result.stdout, re.MULTILINE), label
    assert (training.START_FACTOR, training.END_FACTOR) == recipe
