"""Shared test helpers: run a numbered script the way a user would, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # so tests can `import common`

import checkpointing  # noqa: E402  (needs the path above)
import common  # noqa: E402

data = common.import_script("03_data")
models = common.import_script("04_model")
training = common.import_script("05_train")

# The tests that train in this process do so on one thread, like the scripts they start (below):
# their tensors are tiny, and on a busy 2-core machine two threads mostly wait for each other
# (a small LSTM's test took 88 s on two threads beside another job).
torch.set_num_threads(1)


def run_script(script, *args, cwd=None, timeout=300, env=None):
    """Run `python <script> <args>` from the repository and return the CompletedProcess.

    The child gets MPLBACKEND=Agg (no window) and no network is ever needed: tests pass
    --fake-data or a folder of generated images.
    """
    # One thread per script: on a busy 2-core machine two PyTorch threads mostly wait for each other.
    child_env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO_DIR / script), *map(str, args)],
        cwd=cwd or REPO_DIR, env=child_env, capture_output=True, text=True, timeout=timeout)


_finished_runs = {}


def run_script_once(script, *args, timeout=300):
    """run_script, but each (script, arguments) runs once per test session and tests share it.

    Every run pays for starting Python and importing torch, so tests that only read the output
    of the same command should not each start their own.
    """
    key = (script, *map(str, args))
    if key not in _finished_runs:
        _finished_runs[key] = run_script(script, *args, timeout=timeout)
    return _finished_runs[key]


@pytest.fixture
def run():
    """The run_script function, as a fixture."""
    return run_script


def make_checkpoint(path, classes=data.CIFAR10_CLASSES):
    """Write a checkpoint as 05_train.py does, without training: a small CifarNet after one
    "epoch" of two SGD steps, out of two epochs, with 05's own optimizer and schedule.

    The real steps give the optimizer momentum buffers and the schedule a position.
    """
    torch.manual_seed(0)
    model = models.build_model("small", num_classes=len(classes))
    optimizer = training.make_optimizer(model, lr=0.05, weight_decay=5e-4)
    scheduler = training.make_scheduler(optimizer, total_steps=4)
    for _ in range(2):
        images = torch.randn(16, 3, 32, 32)
        labels = torch.randint(0, len(classes), (16,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        scheduler.step()
    history = {"epoch": [1], "train_loss": [2.3], "train_accuracy": [0.1], "val_loss": [2.3],
               "val_accuracy": [0.1], "lr": [scheduler.get_last_lr()[0]], "seconds": [1.0]}
    checkpoint = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "epoch": 1, "best_val_accuracy": 0.1,
        "history": history,
        "config": {"model": {"size": "small", "num_classes": len(classes)},
                   "classes": list(classes), "mean": list(data.CIFAR10_MEAN),
                   "std": list(data.CIFAR10_STD), "data": "fake", "epochs": 2, "lr": 0.05,
                   "batch_size": 16, "seed": 0, "weight_decay": 5e-4, "label_smoothing": 0.2,
                   "augment": True, "steps_per_epoch": 2},
    }
    checkpointing.save_checkpoint(checkpoint, path)
    return checkpoint
