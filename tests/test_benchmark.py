"""Tests for benchmarks/benchmark.py: it runs offline, reports every measurement, and its
full-loop measurement runs 05_train.py's train_one_epoch on exactly the batches it times."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

REPO_DIR = Path(__file__).resolve().parents[1]

SCRIPT = "benchmarks/benchmark.py"
BATCH_SIZE = 16
ROWS = {  # JSON key -> the start of its row in the printed table
    "data_pipeline": "1a. data pipeline of 05_train.py",
    "pil_pipeline": "1b. classic PIL pipeline",
    "model": "2.  model alone",
    "full_loop": "3.  full training loop",
}
_results = {}


@pytest.fixture
def tiny_run(run, tmp_path_factory):
    """One quick run on fake data (shared by the tests): (stdout, the numbers from --json)."""
    if "tiny" not in _results:
        json_path = tmp_path_factory.mktemp("benchmark") / "numbers.json"
        # One thread: on a busy machine, two threads that keep waiting for each other make
        # each step many times slower, and this test checks what is printed, not the speed.
        result = run(SCRIPT, "--fake-data", "--device", "cpu", "--batch-size", BATCH_SIZE,
                     "--warmup", 1, "--batches", 2, "--json", json_path, timeout=180,
                     env={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        _results["tiny"] = (result.stdout, json.loads(json_path.read_text()))
    return _results["tiny"]


def test_table_has_every_measurement_with_positive_numbers(tiny_run):
    output, numbers = tiny_run
    for key, label in ROWS.items():
        match = re.search(rf"^{re.escape(label)}.*?\s([\d,.]+)\s+([\d.]+)$", output, re.MULTILINE)
        assert match, f"no table row for {label!r} in:\n{output}"
        images_per_second = float(match[1].replace(",", ""))
        ms_per_batch = float(match[2])
        assert images_per_second > 0 and ms_per_batch > 0
        # The table shows the JSON's numbers, rounded; both columns describe the same time.
        measured = numbers["results"][key]
        assert ms_per_batch == pytest.approx(measured["ms_per_batch"], abs=0.06)
        assert images_per_second == pytest.approx(measured["images_per_second"], rel=0.006)
        assert measured["images_per_second"] == pytest.approx(
            BATCH_SIZE / (measured["ms_per_batch"] / 1000))


def test_ratio_line_and_estimate_follow_from_the_measurements(tiny_run):
    output, numbers = tiny_run
    results = numbers["results"]
    ratio = results["full_loop"]["ms_per_batch"] / results["model"]["ms_per_batch"]
    match = re.search(r"^Full loop / model alone: ([\d.]+)x .*target <= 1\.3x.* -> (met|NOT met)$",
                      output, re.MULTILINE)
    assert match, output
    assert float(match[1]) == pytest.approx(ratio, abs=0.006)
    assert (match[2] == "met") == (ratio <= 1.3) == numbers["target_met"]
    steps = 45_000 // BATCH_SIZE
    assert f"Estimated 10 epochs on 45,000 images: 10 x {steps} batches" in output
    assert numbers["estimated_10_epoch_seconds"] == pytest.approx(
        10 * steps * results["full_loop"]["ms_per_batch"] / 1000)


def test_header_names_the_device_and_settings(tiny_run):
    output, numbers = tiny_run
    assert f"PyTorch {torch.__version__}" in output
    assert numbers["device"] == "cpu" and "PyTorch uses 1 thread" in numbers["device_name"]
    assert (numbers["model_size"], numbers["batch_size"], numbers["batches"], numbers["warmup"]) \
        == ("small", BATCH_SIZE, 2, 1)


@pytest.fixture(scope="module")
def benchmark_module():
    """benchmarks/benchmark.py imported as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location("benchmark", REPO_DIR / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_next_batches_continues_one_stream_across_epochs(benchmark_module):
    loader = [0, 1, 2]  # an "epoch" of three batches
    stream = benchmark_module.endless(loader)
    first, second = benchmark_module.NextBatches(stream, 2), benchmark_module.NextBatches(stream, 5)
    assert len(first) == 2 and len(second) == 5
    assert list(first) == [0, 1]
    assert list(second) == [2, 0, 1, 2, 0]  # picks up where the first stopped, then a new epoch


def test_full_loop_times_train_one_epoch_on_warmup_then_timed_batches(benchmark_module, monkeypatch):
    calls = []

    def recording_train_one_epoch(model, train_loader, loss_fn, optimizer, scheduler, device,
                                  args, epoch):
        batches = list(train_loader)
        calls.append((len(train_loader), len(batches), args.dry_run))
        return 0.0, 0.0

    monkeypatch.setattr(benchmark_module.train, "train_one_epoch", recording_train_one_epoch)
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    train_set = benchmark_module.common.InMemoryDataset(images, torch.zeros(10, dtype=torch.long))
    train_args = benchmark_module.training_defaults()
    train_args.batch_size, train_args.workers, train_args.dry_run = 4, 0, False
    seconds = benchmark_module.time_full_loop((None, None, None, None), train_set, train_args,
                                       torch.device("cpu"), warmup=3, batches=7)
    # 10 images in batches of 4 is 2 batches an epoch: 3 + 7 batches need several epochs.
    assert calls == [(3, 3, False), (7, 7, False)]
    assert seconds > 0
