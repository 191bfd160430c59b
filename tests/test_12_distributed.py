"""Tests for 12_distributed.py: DDP training on the CPU (gloo), with fake data, under torchrun.

The torchrun runs are started once, together, at the start of the module (each pays for starting
torchrun and a Python per process), and the tests read their results. `python -m
torch.distributed.run` is torchrun, run by the interpreter of this test session (the venv's).
"""

import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DistributedSampler

import checkpointing
import common
from conftest import REPO_DIR
from test_05_train import run_in_process

data = common.import_script("03_data")
models = common.import_script("04_model")
training = common.import_script("05_train")

SCRIPT = "12_distributed.py"
BATCH_SIZE, LR, STEPS = 256, 0.3, 3  # fake data: 900 training images, so 3 steps of 256
# One CPU thread per process (the machine's cores are shared, and runs are compared), no window,
# and a proxy that refuses every connection: nothing may reach the network.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
           PYTHONUNBUFFERED="1", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")


def start(*command):
    """Start a command in the background; its output goes to a temporary file (a full pipe
    would stall it)."""
    output = tempfile.TemporaryFile("w+")
    return subprocess.Popen([*map(str, command)], cwd=REPO_DIR, env=ENV, stdout=output,
                            stderr=subprocess.STDOUT, text=True), output


def start_torchrun(processes, *args):
    """Start `torchrun --standalone --nproc_per_node=<processes> 12_distributed.py <args>`."""
    return start(sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={processes}", REPO_DIR / SCRIPT, *args)


def finish(started, timeout=240):
    """Wait for a run of start; return (exit status, everything it printed)."""
    process, output = started
    try:
        process.wait(timeout=timeout)
    finally:
        process.kill()
    output.seek(0)
    return process.returncode, output.read()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The dry run on 2 processes, one epoch on 1 and on 2 processes with the same global batch
    (no augmentation, so both see the very same images), each into its own folder, a run on 2
    processes whose learning rate makes it diverge, and the script run without torchrun."""
    root = tmp_path_factory.mktemp("distributed")
    common_args = ["--fake-data", "--device", "cpu"]
    epoch_args = common_args + ["--epochs", 1, "--no-augment", "--batch-size", BATCH_SIZE]
    started = {
        "dry": start_torchrun(2, *common_args, "--dry-run", "--output-dir", root / "dry"),
        1: start_torchrun(1, *epoch_args, "--checkpoint-dir", root / "one",
                          "--output-dir", root / "one"),
        2: start_torchrun(2, *epoch_args, "--checkpoint-dir", root / "two",
                          "--output-dir", root / "two"),
        "diverging": start_torchrun(2, *common_args, "--epochs", 1, "--lr", 10,
                                    "--checkpoint-dir", root / "diverging",
                                    "--output-dir", root / "diverging"),
        "alone": start(sys.executable, REPO_DIR / SCRIPT, "--fake-data", "--dry-run"),
        "bad flag": start_torchrun(2, *common_args, "--epochs", 0),
        "odd batch": start_torchrun(2, *common_args, "--dry-run", "--batch-size", 3),
    }
    finished = {key: finish(run) for key, run in started.items()}
    return root, finished


def test_dry_run_on_two_processes(runs):
    root, finished = runs
    status, output = finished["dry"]
    assert status == 0, output
    assert "2 process(es), backend gloo" in output
    # Only rank 0 prints: every line once.
    assert output.count("Dry run finished") == 1, output
    # The script's own check that DDP kept the two copies identical.
    assert "in every one of the 2 process(es)" in output, output
    assert not (root / "dry").exists()  # a dry run writes nothing


def test_without_torchrun_it_says_how_to_launch(runs):
    status, output = runs[1]["alone"]
    assert status == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "torchrun --standalone --nproc_per_node=2 12_distributed.py" in lines[0]


def test_a_diverging_run_stops_every_process_with_one_sentence(runs):
    root, finished = runs
    status, output = finished["diverging"]
    assert status == 1, output
    # Rank 0 alone explains (torchrun then adds its own report of the failed workers).
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0] and "--lr" in errors[0], output
    assert "Traceback" not in output.split("Error: ")[0]  # nothing from the script before it
    assert not (root / "diverging" / "best.pt").exists()  # no epoch finished, none saved


@functools.cache
def fake_training_images():
    """The training part of the fake data, as the script loads it (loaded once)."""
    return data.load_train_and_val(common.DATA_DIR, fake_data=True)[0]


def emulate(processes, config):
    """What DDP should compute in a run on `processes` processes, done in this one process: each
    step, every process's share of the global batch (DistributedSampler's) gives a gradient, and
    the step uses their average. Returns the model's parameters after the epoch."""
    common.seed_everything(0)  # as the script does before building the model
    model = models.build_model("small", num_classes=10).to(memory_format=torch.channels_last)
    optimizer = training.make_optimizer(model, LR, weight_decay=5e-4)
    scheduler = training.make_scheduler(optimizer, total_steps=STEPS)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    train = fake_training_images()
    shares = []
    for rank in range(processes):
        sampler = DistributedSampler(train.labels, num_replicas=processes, rank=rank,
                                     shuffle=True, seed=0, drop_last=True)
        sampler.set_epoch(1)
        shares.append(torch.tensor(list(sampler)))
    model.train()
    local = BATCH_SIZE // processes
    for step in range(STEPS):
        optimizer.zero_grad()
        for share in shares:  # one forward pass per process: batch-norm sees only its share
            indices = share[step * local:(step + 1) * local]
            images = data.prepare_batch(train.images[indices], "cpu", config["mean"],
                                        config["std"])
            # A share of each process's mean loss: the gradients add up to their average.
            (loss_fn(model(images), train.labels[indices]) / processes).backward()
        optimizer.step()
        scheduler.step()
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("processes", [1, 2])
def test_ddp_steps_with_the_average_gradient(runs, processes):
    """Each step of a run on N processes is the step on the average of their gradients, to float
    rounding."""
    root, finished = runs
    status, output = finished[processes]
    assert status == 0, output
    folder = {1: "one", 2: "two"}[processes]
    checkpoint = checkpointing.load_checkpoint(root / folder / "last.pt", for_resume=True)
    assert checkpoint["config"]["steps_per_epoch"] == STEPS
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the runs (ENV): another thread count sums in another order
    try:
        emulated = emulate(processes, checkpoint["config"])
    finally:
        torch.set_num_threads(threads)
    for name, parameter in emulated.items():
        torch.testing.assert_close(checkpoint["model"][name], parameter, rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_one_and_two_processes_train_alike(runs):
    """1 process and 2 processes with the same global batch take nearly the same steps.

    Not exactly: batch-norm normalises with the statistics of the images it sees, and under DDP
    each process sees only its half of the batch (SyncBatchNorm shares them, but PyTorch has it
    for GPUs only). The test above checks both runs exactly against the same computation, which
    differs only in that split. Here the bound: after 3 steps on random images the weights are
    about a third as far apart as training moved them (the gradients of random labels are
    mostly noise, which the split changes most); far apart would be as far as they moved.
    """
    root, finished = runs
    one = checkpointing.load_checkpoint(root / "one" / "last.pt")["model"]
    two = checkpointing.load_checkpoint(root / "two" / "last.pt")["model"]
    common.seed_everything(0)
    start = models.build_model("small", num_classes=10).state_dict()
    names = [name for name, _ in models.build_model("small").named_parameters()]

    def distance(first, second):
        return torch.cat([(first[name] - second[name]).flatten() for name in names]).norm()

    assert 0 < distance(one, two) < 0.5 * distance(one, start)


def test_its_checkpoint_loads_in_06_evaluate(runs, capsys, monkeypatch):
    root, finished = runs
    assert finished[2][0] == 0, finished[2][1]
    result = run_in_process("06_evaluate.py", "--fake-data", "--checkpoint",
                            root / "two" / "best.pt", "--output-dir", root / "evaluation",
                            capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout.lower()


def test_a_bad_flag_is_said_once_not_once_per_process(runs):
    status, output = runs[1]["bad flag"]
    assert status != 0
    assert output.count("usage:") == 1 and output.count("--epochs: must be 1 or more") == 1, output


def test_a_mistake_every_process_meets_is_said_once(runs):
    status, output = runs[1]["odd batch"]
    assert status == 1
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "must split evenly" in errors[0], output
    assert "Traceback" not in output.split("Error: ")[0]


def test_a_killed_process_is_one_sentence_and_the_resume_command(tmp_path):
    """kill -9 of one worker in the middle of a run: the other says what happened and how to go
    on from the last saved epoch (torchrun then adds its report)."""
    checkpoint_dir = tmp_path / "checkpoints"
    process, output = start_torchrun(2, "--fake-data", "--device", "cpu", "--epochs", 50,
                                     "--batch-size", 32, "--checkpoint-dir", checkpoint_dir)
    try:
        deadline = time.monotonic() + 180
        while not (checkpoint_dir / "last.pt").exists():
            assert time.monotonic() < deadline and process.poll() is None, "no epoch was saved"
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert len(workers) == 2, workers
        # Kill rank 1 (torchrun tells each worker its RANK in its environment), so that rank 0,
        # the one that writes, is the one left to explain.
        rank_1 = next(pid for pid in workers
                      if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes())
        os.kill(int(rank_1), signal.SIGKILL)
        process.wait(timeout=120)
    finally:
        process.kill()
    output.seek(0)
    text = output.read()
    assert process.returncode != 0
    # Which of the two is said first is a race: the backend's error when rank 0 next exchanges
    # with rank 1, or torchrun's SIGTERM when it sees rank 1 gone. Either way, one sentence.
    assert ("Another process of this run stopped" in text
            or "torchrun does that when another process of the run stops" in text), text
    assert re.search(r"holds the \d+ finished epoch\(s\); continue with:\n  torchrun "
                     r".*--resume", text), text
    assert "[rank0]: Traceback" not in text, text


def test_torchrun_s_sigterm_is_said_as_well_as_a_lost_connection(capsys):
    """The two ways rank 0 learns that rank 1 died, each said in one sentence, then stopped as
    Ctrl-C is: the backend's error at the next exchange, or torchrun's SIGTERM (which
    stop_cleanly turns into KeyboardInterrupt("SIGTERM")). Ctrl-C itself adds nothing."""
    distributed = common.import_script("12_distributed")
    for raised, said in [(RuntimeError("[gloo] Connection reset by peer. More"),
                          "Another process of this run stopped (Connection reset by peer)."),
                         (KeyboardInterrupt("SIGTERM"), "torchrun does that when another"),
                         (KeyboardInterrupt(), None)]:
        with pytest.raises(KeyboardInterrupt):
            with distributed.stop_if_a_process_is_lost():
                raise raised
        printed = capsys.readouterr().err
        assert (said in printed) if said else printed == "", printed
    with pytest.raises(RuntimeError, match="a bug"):  # not a lost process: its traceback shows
        with distributed.stop_if_a_process_is_lost():
            raise RuntimeError("a bug")
