"""Tests for 11_quantization.py: without torchao it ends in one sentence that says how to install
it; section 1's worked example is right; with torchao, the int8 model gives the float model's
answers on most images and its file is smaller, a batch size of 1 works, and the results folder
is checked before any work and written, at the end, as one run's files. (torchao is optional, so
the tests that need it are skipped where it is not installed.)"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO_DIR, make_checkpoint, run_script

SCRIPT = "11_quantization.py"
RESULT_FILES = ("cifarnet_float32.pt2", "cifarnet_int8.pt2", "quantization.json")

# Runs the lesson as `python 11_quantization.py ARGS` would, but with torchao hidden: a None in
# sys.modules makes every `import torchao...` raise ImportError, as if it were not installed.
WITHOUT_TORCHAO = """
import runpy, sys
sys.modules["torchao"] = None
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
SCRIPT_ENV = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_without_torchao(*args):
    """Run the lesson in a fresh Python where torchao cannot be imported."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCHAO, str(REPO_DIR / SCRIPT),
                           *map(str, args)],
                          cwd=REPO_DIR, env=SCRIPT_ENV, capture_output=True, text=True,
                          timeout=120)


def assert_one_sentence(result, *words):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("quantization") / "best.pt"
    make_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def dry_run(checkpoint_path, tmp_path_factory):
    """A dry run: calibration and the test on one batch (FakeData's 200 test images), no
    torch.compile, nothing written."""
    pytest.importorskip("torchao")
    output_dir = tmp_path_factory.mktemp("dry_run") / "out"
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--checkpoint", checkpoint_path,
                        "--output-dir", output_dir, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    result.output_dir = output_dir
    return result


def test_without_torchao_one_sentence_and_exit_1(checkpoint_path, tmp_path):
    result = run_without_torchao("--fake-data", "--dry-run", "--checkpoint", checkpoint_path,
                                 "--output-dir", tmp_path / "out")
    line = assert_one_sentence(result, "pip install torchao", "torch 2.")
    assert line
    assert not (tmp_path / "out").exists()


def test_help_works_without_torchao():
    result = run_without_torchao("--help")
    assert result.returncode == 0, result.stderr
    assert "--calibration-images" in result.stdout and "--overwrite" in result.stdout


# ---- Section 1: the idea on a few numbers, before any API --------------------------------------
def test_the_worked_example_is_right(dry_run):
    text = dry_run.stdout.split("=== 1. ")[1].split("=== 2. ")[0]
    match = re.search(r"scale = 3 / 255 = (\S+), zero point = (\d+)", text)
    scale, zero_point = float(match.group(1)), int(match.group(2))
    assert scale == pytest.approx(3 / 255, abs=1e-5) and zero_point == 85
    scale = 3 / 255  # printed with 5 digits; the formula uses all of them
    rows = [[float(value) for value in row] for row in re.findall(
        r"^ +(-?\d+\.\d+) +(\d+) +(-?\d+\.\d+) +(-?\d+\.\d+)$", text, flags=re.MULTILINE)]
    assert len(rows) >= 6
    for value, q, back, error in rows:
        assert 0 <= q <= 255 and q == int(q)
        assert back == pytest.approx(scale * (q - zero_point), abs=1e-4)  # the formula
        assert error == pytest.approx(back - value, abs=1e-4)
        if -1 <= value <= 2:  # inside the range: at most half a step off
            assert abs(error) <= scale / 2 + 1e-4, value
        else:  # outside: clipped to the end of the range
            assert back == pytest.approx(2.0)
    assert [back for value, _, back, _ in rows if value == 0.0] == [0.0]  # 0.0 exactly
    assert "stores the same whole numbers: True" in text


def test_the_idea_comes_before_any_api():
    # A reader meets scale and zero point on plain numbers before export, prepare or convert.
    source = (REPO_DIR / SCRIPT).read_text()
    lesson = source[source.index('common.section("1.'):]
    first_api = min(lesson.index(name) for name in ("torch.export.export", "prepare_pt2e(",
                                                     "convert_pt2e(", "torch.compile("))
    assert lesson.index("zero_point =") < first_api
    assert lesson.index("scale =") < first_api
    # The compiler and CPU details are out of the lesson's way, in a cell at the end.
    going_further = source.index("# %% Going further")
    assert source.index("AVX512-VNNI") > going_further
    assert source.index("oneDNN") > going_further


# ---- The whole flow, on a dry run --------------------------------------------------------------
def test_int8_model_agrees_and_is_smaller(dry_run):
    sizes = re.search(r"float32 program: ([\d,]+) KiB \| int8 program: ([\d,]+) KiB",
                      dry_run.stdout)
    float_kib, int8_kib = (int(size.replace(",", "")) for size in sizes.groups())
    # The weights alone go from 4 bytes to 1 each; the example input and the graph stay.
    assert int8_kib < 0.6 * float_kib
    agreement = float(re.search(r"the same answer for ([\d.]+)% of the images",
                                dry_run.stdout).group(1))
    assert agreement >= 80
    # 6 of the 7 convolutions (the first stays float) and the linear layer
    assert "7 weights stored as int8" in dry_run.stdout
    assert not dry_run.output_dir.exists()  # a dry run writes nothing


def test_plumbing_is_marked_and_a_summary_ends_it(dry_run):
    source = (REPO_DIR / SCRIPT).read_text()
    setup = source[:source.index("common.report_errors_plainly()")]
    assert re.search(r"^# Plumbing, down to section 1, which you can skip", setup, re.MULTILINE)
    summary = dry_run.stdout.split("=== Summary: what you just did")[1]
    assert "scale and a zero point" in summary and "calibrate" in summary
    assert "Next: the full lesson, python 11_quantization.py" in summary


def test_a_batch_size_of_one_works(checkpoint_path, tmp_path):
    # The example that export records the graph with is 8 test images whatever --batch-size:
    # an example batch of 1 made export fail (`Constraints violated (batch)!`).
    pytest.importorskip("torchao")
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--batch-size", 1, "--checkpoint",
                        checkpoint_path, "--output-dir", tmp_path / "out", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "1 calibration images" in result.stdout
    assert "test accuracy on 1 images" in result.stdout


# ---- The results folder: checked first, written last, never two runs mixed ----------------------
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_is_a_file_is_refused_before_any_work(checkpoint_path, tmp_path,
                                                                 where):
    (tmp_path / "taken").write_text("a file where the folder should be\n")
    output_dir = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "out"
    result = run_script(SCRIPT, "--fake-data", "--checkpoint", checkpoint_path, "--output-dir",
                        output_dir, timeout=120)
    assert_one_sentence(result, str(tmp_path / "taken"), "is a file", "--output-dir")
    assert result.stdout == ""  # before section 1, not after minutes of work
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]


def plant_earlier_run(folder):
    """Files standing for an earlier run's results; returns {name: inode}."""
    folder.mkdir(parents=True)
    (folder / "cifarnet_float32.pt2").write_bytes(b"the float32 program of an earlier run")
    (folder / "cifarnet_int8.pt2").write_bytes(b"its int8 program")
    (folder / "quantization.json").write_text(json.dumps({"file_bytes": {"float32": 37,
                                                                        "int8": 16}}))
    return {name: (folder / name).stat().st_ino for name in RESULT_FILES}


def test_earlier_results_are_refused_without_overwrite(checkpoint_path, tmp_path):
    earlier = plant_earlier_run(tmp_path / "out" / "quantization")
    result = run_script(SCRIPT, "--fake-data", "--checkpoint", checkpoint_path, "--output-dir",
                        tmp_path / "out", timeout=120)
    assert_one_sentence(result, str(tmp_path / "out" / "quantization"), "--overwrite")
    assert result.stdout == ""
    folder = tmp_path / "out" / "quantization"
    assert {path.name: path.stat().st_ino for path in folder.iterdir()} == earlier


def test_a_full_run_replaces_an_earlier_one_and_never_mixes_them(checkpoint_path, tmp_path):
    # The whole lesson, torch.compile included (a couple of minutes), with --overwrite over an
    # earlier run's folder. While it runs, the folder is looked at again and again: whenever it
    # is seen, it holds the earlier run's files or this run's, never some of each, and
    # quantization.json only beside the two programs it describes. (A run killed at any moment
    # therefore leaves one run's files.)
    pytest.importorskip("torchao")
    folder = tmp_path / "out" / "quantization"
    earlier = plant_earlier_run(folder)
    process = subprocess.Popen(
        [sys.executable, str(REPO_DIR / SCRIPT), "--fake-data", "--overwrite", "--checkpoint",
         str(checkpoint_path), "--output-dir", str(tmp_path / "out")],
        cwd=REPO_DIR, env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    states = set()
    deadline = time.monotonic() + 900
    while process.poll() is None and time.monotonic() < deadline:
        state = []
        for name in RESULT_FILES:
            try:
                inode = (folder / name).stat().st_ino
            except FileNotFoundError:
                continue
            state.append((name, "earlier" if inode == earlier[name] else "new"))
        states.add(tuple(state))
        time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr
    for state in states:
        kinds = {kind for _, kind in state}
        assert len(kinds) <= 1, f"two runs' files at once: {state}"
        if ("quantization.json", "new") in state:
            assert {name for name, _ in state} == set(RESULT_FILES), state
    # At the end: this run's three files, and the numbers describe the programs beside them.
    assert sorted(path.name for path in folder.iterdir()) == sorted(RESULT_FILES)
    results = json.loads((folder / "quantization.json").read_text())
    assert results["file_bytes"] == {
        "float32": (folder / "cifarnet_float32.pt2").stat().st_size,
        "int8": (folder / "cifarnet_int8.pt2").stat().st_size}
    assert results["compiled_matches_converted"] >= 0.99
    assert f"Saved in {folder}: " in stdout
