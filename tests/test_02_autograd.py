"""Tests for 02_autograd.py: the gradients it prints are right, the line fits converge, and the
losses of section 10 behave as the lesson says."""

import math
import re

import pytest

from conftest import REPO_DIR, run_script_once

SCRIPT = "02_autograd.py"
TOLERANCE = 1e-2  # how close a fitted parameter must be to the true one


def run_once(run, *args):
    """The script's run with these arguments, shared by every test that asks for it."""
    return run_script_once(SCRIPT, *args, timeout=120)


def stdout_of(run, *args):
    """The stdout of a run that must succeed."""
    result = run_once(run, *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture
def output(run):
    """The stdout of the default run (seed 0, learning rate 0.1), on the CPU."""
    return stdout_of(run, "--device", "cpu")


def parse_fit(output, label):
    """The (weight, bias) on the line '<label>: weight=W bias=B ...', and the true ones if given."""
    match = re.search(rf"^{label}: +weight=(\S+) bias=(\S+)(?: \(true: weight=(\S+) bias=(\S+)\))?",
                      output, flags=re.MULTILINE)
    assert match, f"no '{label}: weight=... bias=...' line"
    return [float(value) if value is not None else None for value in match.groups()]


def test_help_exits_cleanly(run):
    result = run_once(run, "--help")
    assert result.returncode == 0
    for flag in ("--device", "--seed", "--lr"):
        assert flag in result.stdout


def test_gradient_of_the_polynomial_is_7(output):
    # y = x**2 + 3x + 1 has dy/dx = 2x + 3, which is 7 at x = 2.
    match = re.search(r"^dy/dx at x = (\S+): (\S+)$", output, flags=re.MULTILINE)
    assert match, "no 'dy/dx at x = ...' line"
    x_value, gradient = float(match.group(1)), float(match.group(2))
    assert x_value == 2.0
    assert gradient == pytest.approx(2 * x_value + 3)
    assert gradient == pytest.approx(7.0)


def test_the_graph_is_printed(output):
    for operation in ("AddBackward0", "PowBackward0", "MulBackward0", "AccumulateGrad"):
        assert operation in output
    assert "a second y.backward() fails: Trying to backward through the graph" in output


def test_gradients_accumulate_until_zeroed(output):
    values = [float(value) for value in re.findall(r"x\.grad = (\S+)", output)]
    assert values[:3] == pytest.approx([7.0, 14.0, 7.0])
    accumulated = output.index("without zeroing: x.grad = 14.0")
    zeroed = output.index("after x.grad.zero_() and one more backward: x.grad = 7.0")
    assert accumulated < zeroed


def test_vector_gradients_and_no_grad(output):
    assert "v.grad = tensor([2., 4., 6.])" in output  # d/dv of sum(v**2) is 2v
    assert "v.grad = tensor([0.6667, 1.3333, 2.0000])" in output  # of mean(v**2): 2v/3
    assert "x * 2 under no_grad: requires_grad False | grad_fn None" in output
    assert "requires_grad after detach: False" in output


def test_gradient_descent_finds_the_minimum(output):
    steps = re.findall(r"^step +\d+: x = +(\S+), y = +(\S+),", output, flags=re.MULTILINE)
    x_last, y_last = (float(value) for value in steps[-1])
    assert x_last == pytest.approx(-1.5, abs=1e-3)
    assert y_last == pytest.approx(-1.25, abs=1e-3)


def descent_steps(output):
    """{step: x} from the lines 'step N: x = X, ...' of section 7."""
    text = section_text(output, 7)
    return {int(step): float(x) for step, x in re.findall(
        r"^step +(\d+): x = +(\S+), y =", text, flags=re.MULTILINE)}


def learning_rate_table(output):
    """{lr: the six values of x} from section 7's table of learning rates."""
    text = section_text(output, 7)
    return {float(lr): [float(value) for value in values.split()]
            for lr, values in re.findall(r"^  lr +(\S+): ((?: +-?\d+\.\d+){6})  ", text,
                                         flags=re.MULTILINE)}


def test_every_first_step_is_printed(output):
    # x - 0.1 * (2x + 3) from x = 2: the distance to -1.5 shrinks by 0.8 at each step.
    steps = descent_steps(output)
    assert list(steps)[:5] == [0, 1, 2, 3, 10]
    for step in (1, 2, 3):
        assert steps[step] == pytest.approx(-1.5 + 3.5 * 0.8**step, abs=1e-4)
    assert "by 1 - 2*lr = 0.8" in output


def test_learning_rate_one_swings_and_the_output_shows_it(run):
    # The issue: with --lr 1.0 only even steps were printed, so x looked stuck at 2. The first
    # steps now show the swing, and the line fits that curve more steeply blow up (to inf).
    output = stdout_of(run, "--device", "cpu", "--lr", "1.0")
    steps = descent_steps(output)
    assert [steps[step] for step in (0, 1, 2, 3)] == [2.0, -5.0, 2.0, -5.0]
    assert "by 1 - 2*lr = -1" in output
    assert re.search(r"^step +\d+: loss inf,", section_text(output, 8), flags=re.MULTILINE)
    assert "mean loss inf" in section_text(output, 9)
    check_classifier(output)  # section 10's loss curves gently: it still learns


def test_the_learning_rate_table_shows_each_regime(output):
    # Each step multiplies x's distance from -1.5 by 1 - 2 * lr, as the comment says.
    table = learning_rate_table(output)
    assert list(table) == [0.1, 0.5, 0.9, 1.0, 1.1]
    for lr, values in table.items():
        expected = [-1.5 + 3.5 * (1 - 2 * lr) ** step for step in range(6)]
        assert values == pytest.approx(expected, abs=0.006), lr
    assert table[1.0] == [2.0, -5.0, 2.0, -5.0, 2.0, -5.0]  # swings forever
    assert abs(table[1.1][-1] + 1.5) > abs(table[1.1][0] + 1.5)  # flies off
    assert abs(table[0.9][-1] + 1.5) < abs(table[0.9][0] + 1.5)  # settles


def test_the_docstring_tells_what_lr_1_shows():
    # The docstring, the comment and the guide tell one story: a swing in section 7, inf in 8-9.
    source = (REPO_DIR / SCRIPT).read_text()
    docstring = source.split('"""')[1]
    assert "--lr 1.0" in docstring and "swings forever" in docstring and "inf" in docstring
    assert "explode" not in docstring


def test_plumbing_is_marked_as_skippable():
    source = (REPO_DIR / SCRIPT).read_text()
    setup = source[:source.index("common.report_errors_plainly()")]
    assert re.search(r"^# Plumbing, down to section 1, which you can skip", setup, re.MULTILINE)


def test_autograd_matches_the_calculus(output):
    assert re.search(r"autograd's gradients equal the formulas .*: True$", output,
                     flags=re.MULTILINE)


def check_fits(output):
    """Both fits land within TOLERANCE of the true line, and the loss falls to the noise level."""
    for label in ("by hand", "learned"):
        weight, bias, true_weight, true_bias = parse_fit(output, label)
        assert (true_weight, true_bias) == (2.0, -1.0)
        assert weight == pytest.approx(true_weight, abs=TOLERANCE), label
        assert bias == pytest.approx(true_bias, abs=TOLERANCE), label
    # Gradient descent should reach the least-squares line, up to mini-batch jitter.
    best_weight, best_bias, _, _ = parse_fit(output, "least squares")
    learned_weight, learned_bias, _, _ = parse_fit(output, "learned")
    assert learned_weight == pytest.approx(best_weight, abs=5e-3)
    assert learned_bias == pytest.approx(best_bias, abs=5e-3)
    losses = [float(value) for value in re.findall(r"^epoch +\d+: mean loss (\S+)$", output,
                                                    flags=re.MULTILINE)]
    assert len(losses) == 10
    assert losses[-1] < losses[0] / 10
    assert losses[-1] < 2 * 0.05**2  # about the noise variance: nothing left to learn


def test_fitted_line_is_close_to_the_true_one(output):
    check_fits(output)


def test_another_seed_also_fits(run, output):
    # Different data and starting weights: the fit must not depend on a lucky seed.
    other = stdout_of(run, "--device", "cpu", "--seed", 1)
    assert parse_fit(other, "learned") != parse_fit(output, "learned")
    check_fits(other)
    check_classifier(other)


def section_text(output, number):
    """The output of section `number`, from its banner to the next banner (or the end)."""
    match = re.search(rf"^=== {number}\. .*?(?=^=== |\Z)", output, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {number} in the output"
    return match.group(0)


def test_runs_every_section_in_order(output):
    numbers = [int(number) for number in re.findall(r"^=== (\d+)\. ", output, flags=re.MULTILINE)]
    assert numbers == list(range(1, 11))
    summary = output.split("=== Summary: what you just did")[1]
    assert "dy/dx = 7" in summary and "7 steps of 05's loop" in summary
    assert output.rstrip().endswith("Next, 03_data.py: loading CIFAR-10 images in batches.")


def check_classifier(output):
    """The yes/no classifier of section 10 learns: its loss falls and its accuracy is high."""
    text = section_text(output, 10)
    losses = [float(value) for value in re.findall(r"^step +\d+: loss (\S+)$", text,
                                                    flags=re.MULTILINE)]
    assert len(losses) >= 2 and losses[-1] < losses[0] / 2
    match = re.search(r"^yes/no classifier: final accuracy (\S+) ", text, flags=re.MULTILINE)
    assert match, "no 'yes/no classifier: final accuracy ...' line"
    assert float(match.group(1)) > 0.9


def test_binary_classifier_is_accurate(output):
    check_classifier(output)


def test_targets_have_the_dtypes_each_loss_needs(output):
    text = section_text(output, 10)
    printed = dict((name, (dtype, shape)) for name, dtype, shape in re.findall(
        r"^(\w+Loss) +targets: torch\.(\w+), shape (\(.*\))$", text, flags=re.MULTILINE))
    assert printed == {"MSELoss": ("float32", "(1000, 1)"),
                       "BCEWithLogitsLoss": ("float32", "(1000, 1)"),
                       "CrossEntropyLoss": ("int64", "(2,)")}
    assert "BCEWithLogitsLoss with int64 targets fails: result type Float" in text
    cross_entropy = float(re.search(r"cross-entropy of the 2 samples: (\S+)", text).group(1))
    assert 0 < cross_entropy < 0.5  # both samples answered right


def test_logits_keep_the_precision_that_a_sigmoid_loses(output):
    text = section_text(output, 10)
    rows = re.findall(r"^logit +(\S+): exact +(\S+) \| BCEWithLogitsLoss +(\S+) \((\S+)\) \| "
                      r"sigmoid then BCELoss +(\S+) \((\S+)\)$", text, flags=re.MULTILINE)
    assert [float(row[0]) for row in rows] == [2.0, 20.0, 40.0]
    for row in rows:
        logit, exact, with_logits, with_logits_gradient, via_sigmoid, via_sigmoid_gradient = (
            float(value) for value in row)
        # For target 0 the loss is log(1 + e**logit) and its gradient sigmoid(logit).
        assert exact == pytest.approx(math.log1p(math.exp(logit)), abs=1e-4)
        assert math.isfinite(with_logits)
        assert with_logits == pytest.approx(exact, abs=1e-3)
        assert with_logits_gradient == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-4)
        if logit < 10:  # a moderate logit: both ways agree
            assert via_sigmoid == pytest.approx(exact, abs=1e-3)
            assert via_sigmoid_gradient == pytest.approx(with_logits_gradient, abs=1e-4)
        else:  # sigmoid rounds to 1.0: the loss is wrong (clamped or infinite), the gradient gone
            assert not via_sigmoid == pytest.approx(exact, abs=1.0)
            assert via_sigmoid_gradient == 0.0


def test_the_table_says_which_loss_for_which_question(output):
    table = section_text(output, 10).split("which loss for which question")[1]
    rows = {row.split()[0]: row for row in table.splitlines()[2:6]}
    assert "MSELoss" in rows["a"] and "float" in rows["a"]
    assert "BCEWithLogitsLoss" in rows["yes"]
    assert "CrossEntropyLoss" in rows["one"] and "int64 class indices" in rows["one"]
    assert "BCEWithLogitsLoss" in rows["several"] and "multi-label" in rows["several"]
