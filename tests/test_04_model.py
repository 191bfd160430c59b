"""Tests for 04_model.py: the network's shapes and parameters, its Sequential twin, and the lesson.

The model is imported the way 05-08 import it (common.import_script("04_model")); the lesson is
run as a user runs it, once per model size, and what it prints is checked against the real model.
The diagram's drawing code lives in figures.py and is tested here too.
"""

import importlib.util
import re
import struct
import subprocess
import sys
import time

import pytest
import torch

import common

SCRIPT = "04_model.py"
SIZES = ["small", "large"]
DIAGRAM = common.OUTPUT_DIR / "model_architecture.png"
model_module = common.import_script("04_model")
_results = {}


def run_once(run, *args):
    """Run the script with these arguments once per test session and reuse the result.

    Every run pays for importing torch, so tests that read the same output share one run.
    Returns (CompletedProcess, the diagram's modification time and first 24 bytes right after
    the run, or None if there is no diagram, and the time the run started).
    """
    key = tuple(str(arg) for arg in args)
    if key not in _results:
        started = time.time()
        result = run(SCRIPT, *key, timeout=120)
        diagram = ((DIAGRAM.stat().st_mtime, DIAGRAM.read_bytes()[:24])
                   if DIAGRAM.is_file() else None)
        _results[key] = (result, diagram, started)
    return _results[key]


def lesson_output(run, size):
    """The stdout of a successful run of the lesson on the CPU for one model size."""
    result, _, _ = run_once(run, "--device", "cpu", "--model-size", size)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def section_text(output, number):
    """The lines printed under the banner '=== <number>. ...', up to the next banner."""
    match = re.search(rf"^=== {number}\. .*?$(.*?)(?=^=== |\Z)", output,
                      flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {number} in the output"
    return match.group(1)


def parse_shape(text):
    """'(8, 3, 32, 32)' -> (8, 3, 32, 32)."""
    return tuple(int(size) for size in text.strip("()").split(",") if size.strip())


def count(text):
    """'295,480' -> 295480."""
    return int(text.replace(",", ""))


def number_after(label, output):
    """The number printed right after `label` (a literal string) in the output."""
    match = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", output)
    assert match, f"no {label!r} line in the output"
    return float(match.group(1))


def parameter_count(size):
    """build_model(size)'s parameter count, built on the "meta" device (no memory, instant)."""
    with torch.device("meta"):
        return sum(p.numel() for p in model_module.build_model(size).parameters())


# %% The model itself, imported ------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_every_size_maps_images_to_one_score_per_class(size):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model_module.build_model(size)(images).shape == (2, 10)
        assert model_module.build_model(size, num_classes=3)(images).shape == (2, 3)


def test_build_model_rejects_an_unknown_size():
    with pytest.raises(ValueError, match="medium"):
        model_module.build_model("medium")


def test_sizes_have_the_parameter_counts_the_docs_quote():
    # The comment on MODEL_SIZES quotes 0.29M and 17.7M (about 60 times).
    small, large = (parameter_count(size) for size in SIZES)
    assert round(small / 1e6, 2) == 0.29
    assert round(large / 1e6, 1) == 17.7
    assert round(large / small) == 60


@pytest.mark.parametrize("size", SIZES)
def test_sequential_version_computes_what_cifarnet_computes(size):
    torch.manual_seed(0)
    model = model_module.build_model(size)
    sequential = model_module.build_sequential(size)
    assert list(sequential.state_dict()) == list(model.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(sequential(images), model(images))  # own weights: different
        sequential.load_state_dict(model.state_dict())
        # Train mode (batch statistics) and eval mode (the loaded running averages) both agree.
        torch.testing.assert_close(sequential(images), model(images), rtol=0, atol=1e-6)
        model.eval()
        sequential.eval()
        torch.testing.assert_close(sequential(images), model(images), rtol=0, atol=1e-6)


def test_train_and_eval_modes_differ_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = model_module.build_model("small")
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        model.train()
        in_train_mode = model(images)
        model.eval()
        in_eval_mode = model(images)
        assert not torch.allclose(in_train_mode, in_eval_mode, atol=1e-3)
        assert torch.equal(model(images), in_eval_mode)
        # In eval mode an image's scores do not depend on the rest of its batch.
        torch.testing.assert_close(model(images[:1]), in_eval_mode[:1], rtol=0, atol=1e-5)


def test_importing_the_module_prints_nothing(capfd):
    # Run the file's top level again in a fresh module object, which is what an import does
    # (05-08 import it through common.import_script): it must define things and print nothing.
    spec = importlib.util.spec_from_file_location("fresh_04_model", common.REPO_DIR / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert capfd.readouterr() == ("", "")
    assert callable(module.build_model) and callable(module.build_sequential)
    assert common.import_script("04_model").CifarNet.__module__ == "04_model"


def test_importing_the_module_runs_no_lesson_code():
    # In a fresh Python, as 05-08 (and their DataLoader worker processes) see it: importing
    # prints nothing, draws nothing (matplotlib stays unloaded), does not load 03_data.py and
    # does not touch the error hook that the lesson installs for itself.
    code = ("import sys; import common; hook = sys.excepthook; "
            "common.import_script('04_model'); "
            "print(sorted(name for name in ('matplotlib', 'figures', '03_data') "
            "if name in sys.modules), sys.excepthook is hook)")
    result = subprocess.run([sys.executable, "-c", code], cwd=common.REPO_DIR,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("[] True\n", "")


def test_figures_draws_the_architecture_from_a_shape_trace(tmp_path):
    import figures

    torch.manual_seed(0)
    model = model_module.build_model("small")
    records = model_module.trace_shapes(model, torch.randn(2, 3, 32, 32))
    path = figures.draw_architecture(model, records, tmp_path / "nested" / "architecture.png")
    assert path == tmp_path / "nested" / "architecture.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# %% The lesson, run as a user runs it ------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_lesson_runs_every_section_in_order(run, size):
    output = lesson_output(run, size)
    titles = re.findall(r"^=== (\d+)\. ", output, flags=re.MULTILINE)
    assert [int(number) for number in titles] == list(range(1, 8))


@pytest.mark.parametrize("size", SIZES)
def test_printed_parameter_counts_are_the_models(run, size):
    output = lesson_output(run, size)
    table = section_text(output, 4)
    with torch.device("meta"):
        model = model_module.build_model(size)
    rows = re.findall(r"^(\S+) +(Conv2d|BatchNorm2d|Linear) +\S+ +([\d,]+)$", table,
                      flags=re.MULTILINE)
    assert rows, "no per-layer rows in section 4"
    for name, kind, printed in rows:
        layer = model.get_submodule(name)
        assert type(layer).__name__ == kind
        assert count(printed) == sum(p.numel() for p in layer.parameters(recurse=False)), name
    total = sum(p.numel() for p in model.parameters())
    assert sum(count(printed) for *_, printed in rows) == total  # every parameter, once
    assert count(re.search(r"^total parameters: ([\d,]+)", table, re.MULTILINE).group(1)) == total
    assert count(re.search(r"^trainable parameters: ([\d,]+)", table, re.MULTILINE).group(1)) \
        == sum(p.numel() for p in model.parameters() if p.requires_grad)
    for other in SIZES:  # the one-line comparison of both sizes
        printed = re.search(rf"{other}: ([\d,]+) parameters", table).group(1)
        assert count(printed) == parameter_count(other)


@pytest.mark.parametrize("size", SIZES)
def test_shape_trace_covers_every_layer_from_images_to_scores(run, size):
    output = lesson_output(run, size)
    trace = section_text(output, 3)
    rows = re.findall(r"^(\S+) +\S+ +(\([\d, ]+\))$", trace, flags=re.MULTILINE)
    batch_size = parse_shape(re.search(r"^\(input\) +(\(.*\))$", trace, re.MULTILINE).group(1))[0]
    with torch.device("meta"):
        model = model_module.build_model(size)
    leaves = {name for name, module in model.named_modules() if not list(module.children())}
    assert {name for name, _ in rows} == leaves
    shapes = dict(rows)
    assert parse_shape(shapes["stem.0"]) == (batch_size, model_module.MODEL_SIZES[size][0], 32, 32)
    assert parse_shape(shapes["blocks.2.pool"])[2:] == (4, 4)
    assert parse_shape(shapes["classifier"]) == (batch_size, 10)
    assert "the formula agrees with every Conv2d and MaxPool2d in the trace: True" in trace


@pytest.mark.parametrize("size", SIZES)
def test_lesson_shows_sequential_equal_and_modes_different(run, size):
    output = lesson_output(run, size)
    sequential = section_text(output, 2)
    assert number_after("each with its own random weights:", sequential) > 1e-3
    assert number_after("after loading CifarNet's state_dict into it:", sequential) <= 1e-6
    modes = section_text(output, 5)
    assert number_after("train() vs eval(), same images: max |difference| of the outputs",
                        modes) > 1e-3
    assert number_after("image 0 with other companions in its batch: max |difference|",
                        modes) > 1e-4
    assert "eval(): the same images twice give identical outputs: True" in modes
    assert number_after("eval(): image 0 alone vs in its batch: max |difference|", modes) < 1e-4


def test_lesson_turns_logits_into_near_uniform_probabilities(run):
    logits = section_text(lesson_output(run, "small"), 6)
    sums = re.search(r"each row of probabilities sums to: \[(.*)\]", logits).group(1)
    assert all(abs(float(value) - 1) < 1e-3 for value in sums.split(","))
    low, high = map(float, re.search(r"range from (\S+) to (\S+) ", logits).groups())
    assert 0.03 < low <= 0.1 <= high < 0.3  # untrained and scaled by 1/8: close to uniform
    loss = number_after("CrossEntropyLoss()(logits, labels) =", logits)
    assert loss == number_after("of each image's label, by hand:", logits)
    assert abs(loss - number_after("ln(10) =", logits)) < 0.2
    # Undoing logit_scale makes the same untrained network confident and its loss worse.
    without_scale = re.search(r"without the \* 0\.125: probabilities up to (\S+), loss (\S+)",
                              logits)
    assert float(without_scale.group(1)) > high
    assert float(without_scale.group(2)) > loss


@pytest.mark.parametrize("size", SIZES)
def test_lesson_writes_the_architecture_diagram(run, size):
    output = lesson_output(run, size)
    _, diagram, started = run_once(run, "--device", "cpu", "--model-size", size)
    assert f"saved the architecture diagram to {DIAGRAM}" in output
    assert diagram is not None, f"no {DIAGRAM} after the run"
    modified, header = diagram
    assert modified >= started - 1  # written by this run, not left over from an earlier one
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 1000 and height > 400  # large enough to read the labels


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_missing_device_ends_in_one_sentence(run):
    result, _, _ = run_once(run, "--device", "cuda")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: --device cuda was asked for")
