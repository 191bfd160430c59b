"""Tests for 11_quantization.py: without torchao it ends in one sentence that says how to install
it; with torchao, the int8 model gives the float model's answers on most images and its file
is smaller. (torchao is optional, so the second test is skipped where it is not installed.)"""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_DIR, make_checkpoint, run_script

SCRIPT = "11_quantization.py"

# Runs the lesson as `python 11_quantization.py ARGS` would, but with torchao hidden: a None in
# sys.modules makes every `import torchao...` raise ImportError, as if it were not installed.
WITHOUT_TORCHAO = """
import runpy, sys
sys.modules["torchao"] = None
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_torchao(*args):
    """Run the lesson in a fresh Python where torchao cannot be imported."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCHAO, str(REPO_DIR / SCRIPT),
                           *map(str, args)],
                          cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120)


def test_without_torchao_one_sentence_and_exit_1(tmp_path):
    make_checkpoint(tmp_path / "best.pt")
    result = run_without_torchao("--fake-data", "--dry-run", "--checkpoint", tmp_path / "best.pt",
                                 "--output-dir", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "pip install torchao" in lines[0] and "torch 2." in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_works_without_torchao():
    result = run_without_torchao("--help")
    assert result.returncode == 0, result.stderr
    assert "--calibration-images" in result.stdout


def test_int8_model_agrees_and_is_smaller(tmp_path):
    pytest.importorskip("torchao")
    make_checkpoint(tmp_path / "best.pt")
    # A dry run: calibration and the test on one batch (FakeData's 200 test images), no
    # torch.compile, nothing written.
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--checkpoint", tmp_path / "best.pt",
                        "--output-dir", tmp_path / "out", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    sizes = re.search(r"float32 program: ([\d,]+) KiB \| int8 program: ([\d,]+) KiB",
                      result.stdout)
    float_kib, int8_kib = (int(size.replace(",", "")) for size in sizes.groups())
    # The weights alone go from 4 bytes to 1 each; the example input and the graph stay.
    assert int8_kib < 0.6 * float_kib
    agreement = float(re.search(r"the same answer for ([\d.]+)% of the images",
                                result.stdout).group(1))
    assert agreement >= 80
    # 6 of the 7 convolutions (the first stays float) and the linear layer
    assert "7 weights stored as int8" in result.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
