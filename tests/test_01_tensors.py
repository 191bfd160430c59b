"""Tests for 01_tensors.py: it runs, and what it prints is what the lesson claims."""

import re

import pytest
import torch

from conftest import REPO_DIR, run_script_once

SCRIPT = "01_tensors.py"


def run_once(run, *args):
    """The script's run with these arguments, shared by every test that asks for it."""
    return run_script_once(SCRIPT, *args, timeout=120)


@pytest.fixture
def output(run):
    """The stdout of a successful default run (the CPU, seed 0)."""
    result = run_once(run, "--device", "cpu", "--seed", 0)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def parse_shape(text):
    """'(2, 3)' -> (2, 3)."""
    return tuple(int(size) for size in text.strip("()").split(",") if size.strip())


def test_runs_every_section_in_order(output):
    titles = re.findall(r"^=== (\d+)\. ", output, flags=re.MULTILINE)
    assert [int(number) for number in titles] == list(range(1, 12))


def test_ends_with_a_summary_and_the_next_lesson(output):
    summary = output.split("=== Summary: what you just did")[1]
    assert "(N, C, H, W)" in summary and "views" in summary
    assert summary.rstrip().endswith("Next, 02_autograd.py: how PyTorch computes gradients.")


def test_plumbing_is_marked_as_skippable():
    # The setup lines before section 1 are plumbing; one comment says so where they begin.
    source = (REPO_DIR / SCRIPT).read_text()
    setup = source[:source.index("common.report_errors_plainly()")]
    assert re.search(r"^# Plumbing, down to section 1, which you can skip", setup, re.MULTILINE)


def test_help_exits_cleanly(run):
    result = run_once(run, "--help")
    assert result.returncode == 0
    assert "--device" in result.stdout and "--seed" in result.stdout


def test_numpy_bridge_shares_and_copies_as_claimed(output):
    # Each of these lines prints a comparison the script computed, so a wrong claim prints False.
    assert re.search(r"the tensor holds 42\.0 -> from_numpy shares memory: True", output)
    assert re.search(r"the copy holds 0\.0 -> torch\.tensor\(array\) copies: True", output)
    assert re.search(r"\[2\.0, 2\.0, 2\.0\] -> \.numpy\(\) shares memory: True", output)
    assert "tracked.numpy() fails:" in output  # a tensor that requires grad has no .numpy()


def test_matmul_shape_line_follows_the_rule(output):
    match = re.search(r"^matmul: (\(.*?\)) @ (\(.*?\)) -> (\(.*?\))$", output, flags=re.MULTILINE)
    assert match, "no 'matmul: (n, k) @ (k, m) -> (n, m)' line"
    left, right, result = (parse_shape(group) for group in match.groups())
    assert left[1] == right[0], "the inner sizes of a matrix product must match"
    assert result == (left[0], right[1])
    assert "product[0, 1] equals row 0 of left dot column 1 of right: True" in output
    assert "(2, 3) @ (2, 3) fails:" in output


def test_views_share_memory_and_reshape_copies_when_it_must(output):
    assert "matrix shares memory with numbers: True" in output
    assert "transposed.stride(): (1, 3) | contiguous: False" in output
    assert "transposed.view(6) fails:" in output
    assert "transposed.reshape(6): tensor([0, 3, 1, 4, 2, 5]) | copied: True" in output
    assert "after first_row[0] = 100, grid[0, 0] is 100" in output
    assert "after picked[0, 0] = -1, grid[0, 0] is still 100" in output


def test_broadcasting_and_reductions(output):
    assert "(3, 4) + (3,) fails:" in output
    assert "(5, 1) - (5,) gives shape (5, 5)" in output
    assert "scores.sum(dim=0): tensor([8., 5., 5.]) shape (3,)" in output
    assert "scores.sum(dim=1): tensor([ 8., 10.]) shape (2,)" in output
    assert "scores.sum(dim=1, keepdim=True).shape: (2, 1)" in output
    assert "scores.argmax(dim=1): tensor([1, 0])" in output


def test_batch_of_images_shapes(output):
    assert "batch (N, C, H, W): (8, 3, 32, 32)" in output
    assert "flatten: (8, 3, 32, 32) -> (8, 3072)" in output
    assert "-> (8, 10)" in output
    std_line = re.search(r"after normalizing, per-channel std: tensor\(\[(.*?)\]\)", output)
    assert [float(value) for value in std_line.group(1).split(",")] == pytest.approx([1.0] * 3)


def test_device_section_reports_the_device(output):
    assert re.search(r"this run uses: cpu$", output, flags=re.MULTILINE)
    assert "layer.to(device) returns the same layer: True" in output
    assert re.search(r"1024x1024 matmul on cpu: [\d.]+ ms per product", output)


def test_same_seed_same_output(run, output):
    # The default seed is 0, so a run without --seed must print the same numbers (timings aside).
    again = run_once(run, "--device", "cpu")
    assert again.returncode == 0, again.stderr

    def without_timings(text):
        return [line for line in text.splitlines() if "ms per product" not in line]

    assert without_timings(again.stdout) == without_timings(output)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_missing_gpu_is_one_plain_sentence(run):
    result = run_once(run, "--device", "cuda")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: --device cuda was asked for")
    assert result.stdout == ""  # it stops before printing any lesson
