"""Shared test helpers: run a numbered script the way a user would, in a subprocess. Also the
suite's two settings: deprecation warnings raised in the project's own code are errors, and the
tests that start new Pythons are marked slow (`python -m pytest -m "not slow"` leaves them out).
"""

import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # so tests can `import common`

# ---- Deprecated APIs: an error when the project's own code uses one ------------------------------
# A warning names the module whose line called the deprecated function (its stacklevel), so these
# filters turn into errors what the project's modules trigger: the scripts (imported under their
# own names by common.import_script, as script_<name> by test_05_train.load_script, or run as
# __main__), the plumbing modules, benchmarks/ and the tests. A warning that PyTorch raises from
# its own code for its own reasons names a torch module, and stays a warning.
DEPRECATIONS = ("DeprecationWarning", "PendingDeprecationWarning", "FutureWarning")
PROJECT_MODULES = sorted({"__main__", "conftest"} | {
    path.stem for folder in (REPO_DIR, REPO_DIR / "benchmarks") for path in folder.glob("*.py")})


def pytest_configure(config):
    """In this process: the filters above, for every test (module names as a regular
    expression, which also matches the tests' own modules)."""
    names = "|".join([*map(re.escape, PROJECT_MODULES), r"script_\w+", r"test_\w+"])
    for category in DEPRECATIONS:
        config.addinivalue_line("filterwarnings", rf"error::{category}:({names})\Z")


# In every script the tests start (they inherit this environment): the same filters, one per
# module, as PYTHONWARNINGS takes them.
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *(
    f"error::{category}:{module}" for category in DEPRECATIONS for module in PROJECT_MODULES)]))

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


# ---- The quick subset: python -m pytest -m "not slow" ----------------------------------------------
# A test is slow when it starts a script in a new Python (each start pays 3 to 5 seconds of
# importing torch and torchvision on a 2-core machine), directly or through a fixture that does,
# or when it trains for seconds in this process. The rest, under a minute in all, checks the
# functions the lessons define and that later scripts import.
SLOW_FIXTURES = {
    "run",  # conftest: starts a script
    "fake_run", "easy_run", "resumed_run",  # 03 and 05: runs of the scripts
    "evaluations",  # 06
    "mixed_run",  # 08
    "tiny_run",  # 10 and benchmarks: a training run
    "dry_run",  # 11, with torchao
    "runs",  # 12: seven torchrun starts
    "interrupted_runs",  # reliability: three training runs, two of them killed
}
SLOW_TESTS = {  # tests that train, or trace with torch.compile, for seconds in this process
    "test_ablation.py": {"test_rows_train_and_leave_the_recipe_as_it_was"},
    "test_05_train.py": {"test_compile_saves_the_plain_model_that_06_loads",
                         "test_compiled_model_names_its_weights_with_a_prefix"},
    "test_benchmark.py": {"test_compile_flag_adds_row_3c"},
}
# A test's own code starting a Python: conftest's and the test files' helpers, or subprocess.
STARTS_A_PYTHON = re.compile(r"(?<![.\w])(?:run_script|run_script_once|start|start_torchrun|"
                             r"run_without_torchao)\(|\bsubprocess\.(?:run|Popen|check_\w+)\(")


# Tests that compile a network with torch.compile for real, in C++ (minutes each on 2 cores): they
# run only with RUN_COMPILE_TESTS=1, as test_05_train.py's own does.
COMPILES_FOR_REAL = {
    "test_11_quantization.py": {"test_a_full_run_replaces_an_earlier_one_and_never_mixes_them"},
}


def pytest_collection_modifyitems(config, items):
    """Mark the slow tests (see above) with @pytest.mark.slow, and skip those that compile for
    real unless RUN_COMPILE_TESTS=1."""
    compile_for_real = os.environ.get("RUN_COMPILE_TESTS") == "1"
    for item in items:
        if not compile_for_real and item.originalname in COMPILES_FOR_REAL.get(item.path.name, ()):
            item.add_marker(pytest.mark.skip(
                reason="compiles the network for real: minutes on a 2-core CPU; set "
                       "RUN_COMPILE_TESTS=1 to run it"))
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function else ""
        except (OSError, TypeError):
            source = ""
        if (SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or STARTS_A_PYTHON.search(source)
                or item.originalname in SLOW_TESTS.get(item.path.name, ())):
            item.add_marker(pytest.mark.slow)
    # A test named above that was renamed would quietly lose its mark: say so.
    collected = {}
    for item in items:
        collected.setdefault(item.path.name, set()).add(item.originalname)
    for listing in (SLOW_TESTS, COMPILES_FOR_REAL):
        for file, names in listing.items():
            for name in names - collected.get(file, names):  # only files that were collected
                warnings.warn(f"tests/conftest.py names {file}::{name}, which is not there")
