"""Tests for 05_train.py: a run writes its files, resumes where it stopped, and really learns.

The expensive training runs are shared: `training_runs` starts them once per test session (two at
a time, one CPU thread each) and test_06_evaluate.py evaluates the same checkpoints. Cheap checks
(--help, --dry-run) call the script's main() in this process instead of paying for a new Python.

The helpers here (image folders, background runs, in-process runs) are imported by
test_06_evaluate.py and test_reliability.py too.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import checkpointing
import common

data = common.import_script("03_data")
from conftest import REPO_DIR

SCRIPT = "05_train.py"

# Every script run by these tests: one CPU thread (the machine's cores are shared, and two runs
# must compute the very same numbers to be compared), no window for matplotlib, and a proxy that
# refuses every connection, so nothing can reach the network even by mistake.
NO_NETWORK = {name: "http://127.0.0.1:9" for name in
              ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
SCRIPT_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
              "PYTHONUNBUFFERED": "1", **NO_NETWORK}

# Four classes that a network can tell apart at a glance: a solid colour plus strong noise.
EASY_COLOURS = {"blue": (30, 60, 220), "green": (40, 190, 60),
                "red": (220, 40, 40), "yellow": (230, 210, 40)}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- Helpers shared by the test files of 05, 06 and reliability -------------------------------
def make_image_folder(root, colours, train_per_class, test_per_class, seed=0):
    """Write root/train/<class>/*.png and root/test/<class>/*.png: 32x32 noisy solid colours.

    Args:
        root: the folder to create (it is what --data-dir gets).
        colours: {class name: (r, g, b)}.
        train_per_class, test_per_class: how many images of each class in each split.

    Returns:
        root, as a Path.
    """
    root = Path(root)
    generator = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = np.array(colour, dtype=float) + generator.normal(0, 40, (32, 32, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root


def hear_ctrl_c():
    """In the child, before Python starts: let SIGINT (Ctrl-C) through again. A shell without job
    control starts background commands with SIGINT ignored, the child inherits that, and Python
    then installs no KeyboardInterrupt handler: a test's Ctrl-C would go unheard."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(script, *args):
    """Start `python <script> <args>` in the background, like conftest.run_script but not waiting.

    Output goes to temporary files (a pipe could fill up and stall the script). Collect the result
    with finish().
    """
    stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, str(REPO_DIR / script), *map(str, args)], cwd=REPO_DIR,
        env=dict(os.environ, **SCRIPT_ENV), stdout=stdout, stderr=stderr, text=True,
        preexec_fn=hear_ctrl_c if os.name == "posix" else None)
    process.stdout_file, process.stderr_file = stdout, stderr
    return process


def finish(process, timeout=300):
    """Wait for a process from start() and return a CompletedProcess with its output."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    outputs = []
    for file in (process.stdout_file, process.stderr_file):
        file.seek(0)
        outputs.append(file.read())
        file.close()
    return subprocess.CompletedProcess(process.args, process.returncode, *outputs)


def run_script(script, *args, timeout=300):
    """Run a script to the end in a subprocess (one thread, no network) and return the result."""
    return finish(start(script, *args), timeout=timeout)


_modules = {}


def load_script(script):
    """Import a numbered script as a module (its main() only runs when called)."""
    if script not in _modules:
        spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}",
                                                      REPO_DIR / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[script] = module
    return _modules[script]


def run_in_process(script, *args, capsys, monkeypatch):
    """Run a script's main() here, as `python <script> <args>` would, and return what it did.

    Faster than a subprocess (torch is already imported), for checks that need no separate
    process. common.run_main turns errors into a sentence and an exit code, as in a real run.

    Returns:
        A SimpleNamespace with returncode, stdout and stderr.
    """
    module = load_script(script)
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in SCRIPT_ENV
    try:
        common.run_main(module.main)
        returncode = 0
    except SystemExit as exit_request:
        code = exit_request.code
        returncode = code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        torch.set_num_threads(threads)
    stdout, stderr = capsys.readouterr()
    return SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)


def assert_ok(result):
    """The run succeeded and printed no traceback."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def assert_refused(result, *words, code=1):
    """The run ended with exit `code` and one 'Error: ...' sentence holding every word, and no
    traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


_runs = {}


def training_runs(tmp_path_factory):
    """The 05_train.py runs that the tests of 05 and 06 share, run once per session.

    "fake": one epoch on --fake-data. "easy": two epochs on the four-colour image folder. Both run
    at the same time (each uses one CPU thread).

    Returns:
        {name: SimpleNamespace(result, checkpoint_dir, output_dir, data_args)}.
    """
    if not _runs:
        base = tmp_path_factory.mktemp("training_runs")
        easy_data = make_image_folder(base / "easy_data", EASY_COLOURS,
                                      train_per_class=50, test_per_class=10)
        settings = {
            "fake": (["--fake-data"], ["--epochs", 1, "--batch-size", 64]),
            "easy": (["--data-dir", easy_data], ["--epochs", 2, "--batch-size", 10]),
        }
        processes = {}
        for name, (data_args, training_args) in settings.items():
            run = SimpleNamespace(checkpoint_dir=base / name / "checkpoints",
                                  output_dir=base / name / "outputs", data_args=data_args,
                                  training_args=training_args)
            run.args = [*data_args, *training_args, "--seed", 0, "--device", "cpu",
                        "--checkpoint-dir", run.checkpoint_dir, "--output-dir", run.output_dir]
            processes[name] = (run, start(SCRIPT, *run.args))
        for name, (run, process) in processes.items():
            run.result = finish(process)
            _runs[name] = run
    return _runs


def history_of(checkpoint_path):
    """The history dict stored in a checkpoint."""
    return checkpointing.load_checkpoint(checkpoint_path)["history"]


# ---- Fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    run = training_runs(tmp_path_factory)["fake"]
    assert_ok(run.result)
    return run


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory):
    run = training_runs(tmp_path_factory)["easy"]
    assert_ok(run.result)
    return run


@pytest.fixture(scope="module")
def resumed_run(easy_run, tmp_path_factory):
    """The easy run's checkpoints, copied and resumed from 2 epochs to 3."""
    checkpoint_dir = tmp_path_factory.mktemp("resumed") / "checkpoints"
    shutil.copytree(easy_run.checkpoint_dir, checkpoint_dir)
    output_dir = checkpoint_dir.parent / "outputs"
    result = run_script(SCRIPT, *easy_run.data_args, "--epochs", 3, "--batch-size", 10,
                        "--seed", 0, "--device", "cpu", "--resume",
                        "--checkpoint-dir", checkpoint_dir, "--output-dir", output_dir)
    return SimpleNamespace(result=result, checkpoint_dir=checkpoint_dir, output_dir=output_dir)


# ---- One epoch on fake data: what a run prints and writes -------------------------------------
def test_fake_data_run_prints_the_key_lines(fake_run):
    output = fake_run.result.stdout
    assert "Device: cpu" in output
    assert "Data: 900 training and 100 validation images, 10 classes" in output
    assert re.search(r"^Model: CifarNet small, [\d,]+ parameters", output, re.MULTILINE)
    assert re.search(r"^epoch +1/1 +train loss \d+\.\d+ acc +\d+\.\d+%", output, re.MULTILINE)
    assert "Best validation accuracy:" in output
    assert "Next: python 06_evaluate.py --fake-data" in output


def test_fake_data_run_writes_checkpoints_history_and_plot(fake_run):
    # Exactly the two checkpoints: no temporary file from the atomic save is left behind.
    # (.lock is the folder's lock file, kept on purpose: see checkpointing.lock_folder.)
    assert sorted(path.name for path in fake_run.checkpoint_dir.iterdir()) == [
        ".lock", "best.pt", "history.json", "last.pt"]
    plot = fake_run.output_dir / "training_curves.png"  # --output-dir: the plot only
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    for path in (fake_run.checkpoint_dir / "last.pt", fake_run.checkpoint_dir / "history.json",
                 plot):
        assert str(path) in fake_run.result.stdout, f"{path} is written but its path not printed"


def test_checkpoint_holds_what_the_later_scripts_need(fake_run):
    checkpoint = checkpointing.load_checkpoint(fake_run.checkpoint_dir / "last.pt")
    assert checkpoint["epoch"] == 1
    config = checkpoint["config"]
    assert config["model"] == {"size": "small", "num_classes": 10, "in_channels": 3}
    assert config["image_size"] == 32 and checkpoint["kind"] == checkpointing.CLASSIFIER_KIND
    assert config["classes"] == list(data.CIFAR10_CLASSES)
    assert config["data"] == "fake"
    for statistic in (config["mean"], config["std"]):  # of the fake images, for 06-08
        assert len(statistic) == 3 and all(0 < value < 1 for value in statistic)
    assert (config["epochs"], config["batch_size"], config["seed"]) == (1, 64, 0)
    for key in ("optimizer", "scheduler", "best_val_accuracy"):
        assert key in checkpoint
    history = checkpoint["history"]
    for key in ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                "seconds"):
        assert len(history[key]) == 1, key
    assert json.loads((fake_run.checkpoint_dir / "history.json").read_text()) == history
    model = checkpointing.model_from_checkpoint(checkpoint)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_printed_epoch_line_matches_the_history(fake_run):
    history = history_of(fake_run.checkpoint_dir / "last.pt")
    match = re.search(r"train loss (\S+) acc +(\S+)% +\| +val loss (\S+) acc +(\S+)%",
                      fake_run.result.stdout)
    assert match, fake_run.result.stdout
    train_loss, train_accuracy, val_loss, val_accuracy = map(float, match.groups())
    assert train_loss == pytest.approx(history["train_loss"][0], abs=1e-3)
    assert train_accuracy == pytest.approx(100 * history["train_accuracy"][0], abs=0.01)
    assert val_loss == pytest.approx(history["val_loss"][0], abs=1e-3)
    assert val_accuracy == pytest.approx(100 * history["val_accuracy"][0], abs=0.01)


# ---- The loop learns ----------------------------------------------------------------------------
def test_training_learns_an_easy_dataset(easy_run):
    history = history_of(easy_run.checkpoint_dir / "last.pt")
    assert history["epoch"] == [1, 2]
    assert history["train_loss"][1] < history["train_loss"][0]
    assert history["val_accuracy"][-1] >= 0.9, history["val_accuracy"]
    assert "Data: 180 training and 20 validation images, 4 classes" in easy_run.result.stdout
    config = checkpointing.load_checkpoint(easy_run.checkpoint_dir / "last.pt")["config"]
    assert config["data"] == "folder"
    assert config["classes"] == sorted(EASY_COLOURS)
    # Own images are normalised with their own statistics: the mean of the four colours, here.
    colour_mean = np.mean(list(EASY_COLOURS.values()), axis=0) / 255
    assert config["mean"] == pytest.approx(colour_mean, abs=0.03)


def test_best_checkpoint_is_the_epoch_with_the_best_validation_accuracy(easy_run):
    last = checkpointing.load_checkpoint(easy_run.checkpoint_dir / "last.pt")
    best = checkpointing.load_checkpoint(easy_run.checkpoint_dir / "best.pt")
    accuracies = last["history"]["val_accuracy"]
    assert best["epoch"] == 1 + accuracies.index(max(accuracies))  # the first epoch to reach it
    assert best["best_val_accuracy"] == last["best_val_accuracy"] == max(accuracies)


# ---- Resume -------------------------------------------------------------------------------------
def test_resume_keeps_the_history_and_adds_the_new_epoch(easy_run, resumed_run):
    assert_ok(resumed_run.result)
    assert "Resuming from" in resumed_run.result.stdout
    # The best accuracy so far as the epoch lines print accuracies: a percentage.
    assert re.search(r"best val_accuracy so far \d+\.\d\d%", resumed_run.result.stdout)
    assert re.search(r"^epoch +3/3 ", resumed_run.result.stdout, re.MULTILINE)
    assert not re.search(r"^epoch +[12]/3 ", resumed_run.result.stdout, re.MULTILINE), \
        "a resumed run must not train the finished epochs again"
    before = history_of(easy_run.checkpoint_dir / "last.pt")
    after = history_of(resumed_run.checkpoint_dir / "last.pt")
    assert after["epoch"] == [1, 2, 3]
    for key, values in before.items():
        assert after[key][:2] == values, key
    assert np.isfinite(after["train_loss"][2])
    assert checkpointing.load_checkpoint(resumed_run.checkpoint_dir / "last.pt")["epoch"] == 3
    saved = json.loads((resumed_run.checkpoint_dir / "history.json").read_text())
    assert saved == after


def test_resume_with_every_epoch_done_says_so(easy_run, tmp_path, capsys, monkeypatch):
    checkpoint_dir = tmp_path / "checkpoints"
    shutil.copytree(easy_run.checkpoint_dir, checkpoint_dir)
    before = (checkpoint_dir / "last.pt").read_bytes()
    result = run_in_process(SCRIPT, *easy_run.data_args, "--epochs", 2, "--batch-size", 10,
                            "--resume", "--device", "cpu", "--checkpoint-dir", checkpoint_dir,
                            "--output-dir", tmp_path / "outputs", capsys=capsys,
                            monkeypatch=monkeypatch)
    assert_ok(result)
    assert "Nothing to do" in result.stdout
    assert "--epochs" in result.stdout  # it says how to train more
    assert (checkpoint_dir / "last.pt").read_bytes() == before


# ---- Flags --------------------------------------------------------------------------------------
def test_dry_run_writes_no_files(easy_run, tmp_path, capsys, monkeypatch):
    # A dry run into a folder that holds checkpoints must leave them untouched, and create nothing.
    checkpoint_dir = tmp_path / "checkpoints"
    shutil.copytree(easy_run.checkpoint_dir, checkpoint_dir)
    before = {path.name: path.read_bytes() for path in checkpoint_dir.iterdir()}
    result = run_in_process(SCRIPT, *easy_run.data_args, "--dry-run", "--epochs", 2,
                            "--batch-size", 10, "--device", "cpu", "--checkpoint-dir",
                            checkpoint_dir, "--output-dir", tmp_path / "outputs",
                            capsys=capsys, monkeypatch=monkeypatch)
    assert_ok(result)
    assert "no files written" in result.stdout
    assert re.search(r"^epoch +2/2 ", result.stdout, re.MULTILINE)  # one batch of each epoch
    assert not (tmp_path / "outputs").exists()
    assert {path.name: path.read_bytes() for path in checkpoint_dir.iterdir()} == before


def test_help_lists_the_flags_with_their_defaults(capsys, monkeypatch):
    result = run_in_process(SCRIPT, "--help", capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for flag in ("--epochs", "--lr", "--batch-size", "--model-size", "--resume",
                 "--checkpoint-dir", "--output-dir", "--data-dir", "--fake-data", "--dry-run",
                 "--seed", "--device"):
        assert flag in text, flag
    assert re.search(r"--epochs EPOCHS .*?\(default: 10\)", text)
    assert re.search(r"--model-size \{large,small\} .*?\(default: small\)", text)
    assert re.search(r"--seed SEED .*?\(default: 0\)", text)
    assert "checkpoints" in text  # the default --checkpoint-dir


# ---- --compile: torch.compile, with checkpoints that 06-08 read as they are --------------------
# Compiling the network for real takes 1.5 to 2 minutes on a busy 2-core CPU (with an empty
# compile cache), so the full check is opt-in; the cheap tests below cover the checkpoint
# handling with Dynamo's "eager" backend (the same wrapper, no code generation) and the failure
# message with a compiler that does not exist.
RUN_COMPILE_TESTS = os.environ.get("RUN_COMPILE_TESTS") == "1"


def checkpoint_weight_names(path):
    return list(checkpointing.load_checkpoint(path)["model"])


def test_compiled_model_names_its_weights_with_a_prefix():
    # Why training_tools.compile_model's docstring says to save the original model: the
    # wrapper's state_dict names every weight "_orig_mod.<name>". (torch.compile only wraps
    # here; nothing compiles until the wrapper is called.)
    model = load_script(SCRIPT).models.build_model("small", num_classes=10)
    compiled = torch.compile(model, dynamic=False)
    assert compiled._orig_mod is model
    assert list(compiled.state_dict()) == [f"_orig_mod.{name}" for name in model.state_dict()]


def test_compile_saves_the_plain_model_that_06_loads(tmp_path, capsys, monkeypatch):
    # The real --compile code path, with the wrapper torch.compile makes, but the "eager"
    # backend: Dynamo records the model and runs it as it is, with no C++ to build.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile",
                        lambda model, **options: real_compile(model, backend="eager", **options))
    checkpoint_dir = tmp_path / "checkpoints"
    result = run_in_process(SCRIPT, "--fake-data", "--epochs", 1, "--batch-size", 64, "--compile",
                            "--device", "cpu", "--checkpoint-dir", checkpoint_dir,
                            "--output-dir", tmp_path / "outputs", capsys=capsys,
                            monkeypatch=monkeypatch)
    assert_ok(result)
    assert "torch.compile: on" in result.stdout
    for name in ("best.pt", "last.pt"):
        names = checkpoint_weight_names(checkpoint_dir / name)
        assert names and not any(name.startswith("_orig_mod.") for name in names)
    evaluation = run_in_process("06_evaluate.py", "--fake-data", "--device", "cpu",
                                "--checkpoint", checkpoint_dir / "best.pt",
                                "--output-dir", tmp_path / "evaluation", capsys=capsys,
                                monkeypatch=monkeypatch)
    assert_ok(evaluation)
    assert "Test accuracy on 200 images" in evaluation.stdout


def test_compile_without_a_compiler_says_to_run_without_it(tmp_path):
    # CXX names the C++ compiler torch.compile uses on the CPU; an empty cache folder makes sure
    # it has to call it.
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / SCRIPT), "--fake-data", "--dry-run", "--compile",
         "--device", "cpu"], cwd=REPO_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, **SCRIPT_ENV, CXX=str(tmp_path / "no-such-compiler"),
                 TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache")))
    assert_refused(result, "torch.compile", "run without --compile")


@pytest.mark.skipif(not RUN_COMPILE_TESTS, reason="compiles the network for real: 1.5 to 2 "
                    "minutes on a 2-core CPU; set RUN_COMPILE_TESTS=1 to run it")
def test_compiled_run_writes_checkpoints_that_06_evaluates(tmp_path):
    checkpoint_dir = tmp_path / "checkpoints"
    result = run_script(SCRIPT, "--fake-data", "--epochs", 1, "--batch-size", 64, "--compile",
                        "--device", "cpu", "--checkpoint-dir", checkpoint_dir,
                        "--output-dir", tmp_path / "outputs", timeout=600)
    assert_ok(result)
    names = checkpoint_weight_names(checkpoint_dir / "best.pt")
    assert names and not any(name.startswith("_orig_mod.") for name in names)
    evaluation = run_script("06_evaluate.py", "--fake-data", "--device", "cpu", "--checkpoint",
                            checkpoint_dir / "best.pt", "--output-dir", tmp_path / "evaluation")
    assert_ok(evaluation)
    assert "Test accuracy on 200 images" in evaluation.stdout


# ---- --classes: training and evaluating on some of the data's classes ------------------------
def test_classes_trains_on_those_only_and_06_needs_the_same(easy_run, tmp_path, capsys,
                                                            monkeypatch):
    checkpoint_dir = tmp_path / "checkpoints"
    result = run_in_process(SCRIPT, *easy_run.data_args, "--classes", "red,blue", "--epochs", 1,
                            "--batch-size", 10, "--device", "cpu", "--checkpoint-dir",
                            checkpoint_dir, capsys=capsys, monkeypatch=monkeypatch)
    assert_ok(result)
    assert "Data: 90 training and 10 validation images, 2 classes" in result.stdout
    config = checkpointing.load_checkpoint(checkpoint_dir / "best.pt")["config"]
    assert config["classes"] == ["blue", "red"]  # in the data's order, whatever the flag's
    evaluate = ["06_evaluate.py", *easy_run.data_args, "--device", "cpu", "--checkpoint",
                checkpoint_dir / "best.pt", "--output-dir", tmp_path / "evaluation"]
    refused = run_in_process(*evaluate, capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(refused, "add --classes blue,red")
    evaluated = run_in_process(*evaluate, "--classes", "blue,red", capsys=capsys,
                               monkeypatch=monkeypatch)
    assert_ok(evaluated)
    assert "Test accuracy on 20 images" in evaluated.stdout


@pytest.mark.parametrize("names, problem", [("red,purple", "no 'purple'"),
                                            ("red,red", "red is named twice")])
def test_classes_the_data_does_not_have_is_one_sentence(names, problem, easy_run, tmp_path,
                                                        capsys, monkeypatch):
    result = run_in_process(SCRIPT, *easy_run.data_args, "--classes", names, "--device", "cpu",
                            "--checkpoint-dir", tmp_path / "checkpoints", capsys=capsys,
                            monkeypatch=monkeypatch)
    if names == "red,red":  # refused by the flag's own check: argparse's usage, then one line
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"--classes: {problem}" in result.stderr.strip().splitlines()[-1]
    else:
        assert_refused(result, "--classes", problem)
    assert not (tmp_path / "checkpoints").exists() or not list(
        (tmp_path / "checkpoints").glob("*.pt"))
