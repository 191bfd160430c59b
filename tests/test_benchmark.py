"""Tests for benchmarks/benchmark.py: it runs offline, reports every measurement, and its
full-loop measurement runs 05_train.py's train_one_epoch on exactly the batches it times."""

import importlib.util
import json
import re
import sys
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

    def recording_train_one_epoch(model, loader, loss_fn, optimizer, device, scheduler=None,
                                  mixed_precision=False, description="training"):
        batches = list(loader)
        calls.append((len(loader), [len(labels) for _, labels in batches], mixed_precision))
        return 0.0, 0.0

    monkeypatch.setattr(benchmark_module.train, "train_one_epoch", recording_train_one_epoch)
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    train_split = benchmark_module.data.Split(images, torch.zeros(10, dtype=torch.long))
    train_loader = benchmark_module.make_train_loader(train_split, 4, torch.device("cpu"),
                                                      mean=(0.5,) * 3, std=(0.25,) * 3)
    seconds = benchmark_module.time_full_loop((None, None, None, None), train_loader,
                                              torch.device("cpu"), warmup=3, batches=7,
                                              mixed_precision=True)
    # 10 images in batches of 4 is 2 full batches an epoch (the last 2 images are dropped, as in
    # 05_train.py): 3 + 7 batches need several epochs, and every batch is a full one.
    assert calls == [(3, [4] * 3, True), (7, [4] * 7, True)]
    assert seconds > 0


def test_uses_the_statistics_and_training_loader_of_05_train(benchmark_module, tmp_path):
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    # CIFAR-10 (a --data-dir without train/ and test/): its published constants.
    data = benchmark_module.data
    assert data.normalization_statistics(images, tmp_path, False) == (
        data.CIFAR10_MEAN, data.CIFAR10_STD)
    # Fake data or a folder of images: the training images' own statistics.
    assert data.normalization_statistics(images, tmp_path, True) == \
        data.channel_statistics(images)
    # The training loader yields what the model takes: float batches, channels_last.
    loader = benchmark_module.make_train_loader(
        benchmark_module.data.Split(images, torch.zeros(6, dtype=torch.long)), 3,
        torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3)
    batch, labels = next(iter(loader))
    assert batch.dtype == torch.float32 and batch.shape == (3, 3, 32, 32)
    assert batch.is_contiguous(memory_format=torch.channels_last) and len(labels) == 3


def test_compiled_row_is_opt_in(tiny_run):
    output, numbers = tiny_run
    assert "3c." not in output and "full_loop_compiled" not in numbers["results"]


def test_compiled_full_loop_compiles_once_then_times_like_row_3(benchmark_module, monkeypatch):
    calls = []

    def recording_compile_model(model, device):
        calls.append(("compile", model))
        return "compiled model"

    def recording_train_one_epoch(model, loader, loss_fn, optimizer, device, scheduler=None,
                                  mixed_precision=False, description="training"):
        calls.append((model, len(list(loader))))
        return 0.0, 0.0

    monkeypatch.setattr(benchmark_module.training_tools, "compile_model", recording_compile_model)
    monkeypatch.setattr(benchmark_module.train, "train_one_epoch", recording_train_one_epoch)
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    train_split = benchmark_module.data.Split(images, torch.zeros(10, dtype=torch.long))
    train_loader = benchmark_module.make_train_loader(train_split, 4, torch.device("cpu"),
                                                      mean=(0.5,) * 3, std=(0.25,) * 3)
    seconds, compile_seconds = benchmark_module.time_compiled_full_loop(
        ("model", None, None, None), train_loader, torch.device("cpu"), warmup=2, batches=3,
        mixed_precision=False)
    # training_tools.compile_model wraps the model once; one batch compiles it, then row 3's
    # warm-up and timed batches run on the compiled model.
    assert calls == [("compile", "model"), ("compiled model", 1), ("compiled model", 2),
                     ("compiled model", 3)]
    assert seconds > 0 and compile_seconds > 0


def test_compile_flag_adds_row_3c(benchmark_module, tmp_path, capsys, monkeypatch):
    # The whole --compile path in this process, with Dynamo's "eager" backend: the wrapper that
    # torch.compile makes, without generating code (compiling for real takes a minute or more).
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda model, **options: real_compile(model, backend="eager", **options))
    json_path = tmp_path / "numbers.json"
    arguments = ["--fake-data", "--device", "cpu", "--batch-size", BATCH_SIZE, "--warmup", 1,
                 "--batches", 2, "--compile", "--json", json_path]
    monkeypatch.setattr(sys, "argv", [SCRIPT, *map(str, arguments)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark_module.main()
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr().out
    numbers = json.loads(json_path.read_text())
    measured = numbers["results"]["full_loop_compiled"]
    match = re.search(r"^3c\. full loop, torch\.compile\s+([\d,.]+)\s+([\d.]+)$", output,
                      re.MULTILINE)
    assert match, output
    assert float(match[2]) == pytest.approx(measured["ms_per_batch"], abs=0.06)
    speedup = numbers["results"]["full_loop"]["ms_per_batch"] / measured["ms_per_batch"]
    assert numbers["compile_speedup"] == pytest.approx(speedup)
    assert re.search(rf"^torch\.compile: {speedup:.2f}x the speed of row 3; ", output,
                     re.MULTILINE)
    assert numbers["compile_seconds"] > 0
