"""Tests for 04_model.py: the network's shapes and parameters, a block as a Sequential, the lesson.

The model is imported the way 05-08 import it (common.import_script("04_model")); the lesson is
run as a user runs it, once per model size, and what it prints is checked against the real model.
The diagram's drawing code lives in figures.py and is tested here too.
"""

import importlib.util
import math
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


def test_build_model_keeps_its_keywords_and_defaults():
    # 05-12 call build_model(**checkpoint["config"]["model"]), with these keys.
    model = model_module.build_model(size="large", num_classes=7, in_channels=1)
    assert (model.size, model.num_classes, model.in_channels) == ("large", 7, 1)
    default = model_module.build_model()
    assert (default.size, default.num_classes, default.in_channels) == ("small", 10, 3)
    assert default.stem[0].in_channels == 3
    assert set(model_module.MODEL_SIZES) == {"small", "large"}


def test_state_dict_names_are_those_of_saved_checkpoints():
    # Checkpoints store weights under these names; renaming an attribute would break loading.
    norm = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = ["stem.0.weight", *(f"stem.1.{name}" for name in norm)]
    for block in range(3):
        for index in (1, 2):
            expected += [f"blocks.{block}.conv{index}.weight",
                         *(f"blocks.{block}.norm{index}.{name}" for name in norm)]
    expected.append("classifier.weight")
    for in_channels in (3, 1):
        model = model_module.build_model("small", in_channels=in_channels)
        assert list(model.state_dict()) == expected


def test_one_channel_64x64_images_train_without_edits():
    # A grayscale 64x64 dataset with 5 classes: the network takes in_channels, and global
    # max-pooling takes any image size of 8x8 or more.
    torch.manual_seed(0)
    model = model_module.build_model("small", num_classes=5, in_channels=1)
    images, labels = torch.randn(16, 1, 64, 64), torch.arange(16) % 5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    model.train()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and abs(loss.item() - math.log(5)) < 0.5
    assert all(parameter.grad is not None and torch.isfinite(parameter.grad).all()
               for parameter in model.parameters())
    assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters()))
    with torch.no_grad():
        assert model(images).shape == (16, 5)
        records, output = model_module.layer_by_layer(model.eval(), images)
    assert records[0][2] == (16, 1, 64, 64) and records[-1][2] == (16, 5)
    assert dict((name, shape) for name, _, shape in records)["blocks.2.pool"] == (16, 128, 8, 8)
    with pytest.raises(RuntimeError):  # 3-channel images into a 1-channel network: loud
        model(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("size", SIZES)
def test_sequential_conv_block_computes_what_convblock_computes(size):
    torch.manual_seed(0)
    stem_width, first_width, *_ = model_module.MODEL_SIZES[size]
    block = model_module.ConvBlock(stem_width, first_width)
    sequential = model_module.sequential_conv_block(stem_width, first_width)
    features = torch.randn(2, stem_width, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(sequential(features), block(features))  # own weights
        sequential.load_state_dict(block.state_dict())  # strict: every name matches
        # Train mode (batch statistics) and eval mode (the loaded running averages) both agree.
        torch.testing.assert_close(sequential(features), block(features), rtol=0, atol=1e-6)
        block.eval()
        sequential.eval()
        torch.testing.assert_close(sequential(features), block(features), rtol=0, atol=1e-6)
        assert sequential(features).shape == (2, first_width, 16, 16)


@pytest.mark.parametrize("size", SIZES)
def test_layer_by_layer_is_forward_and_the_formula_predicts_every_size(size):
    torch.manual_seed(0)
    model = model_module.build_model(size).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        records, output = model_module.layer_by_layer(model, images)
        torch.testing.assert_close(output, model(images), rtol=0, atol=0)
    # Every leaf layer appears (the GELU of each block twice, as forward calls it twice).
    names = [name for name, layer, _ in records if layer is not None]
    leaves = {name for name, module in model.named_modules() if not list(module.children())}
    assert set(names) == leaves
    assert len(names) == len(leaves) + 3
    # conv_output_size predicts the height of every Conv2d and MaxPool2d from the one before.
    for (_, _, before), (_, layer, after) in zip(records, records[1:]):
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            settings = [layer.kernel_size, layer.stride, layer.padding, layer.dilation]
            kernel, stride, padding, dilation = (value if isinstance(value, int) else value[0]
                                                 for value in settings)
            assert model_module.conv_output_size(before[2], kernel, stride, padding,
                                                 dilation) == after[2]


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
    assert callable(module.build_model) and callable(module.sequential_conv_block)
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


def test_figures_draws_the_architecture_from_the_layer_by_layer_shapes(tmp_path):
    import figures

    torch.manual_seed(0)
    model = model_module.build_model("small")
    with torch.no_grad():
        records, _ = model_module.layer_by_layer(model, torch.randn(2, 3, 32, 32))
    path = figures.draw_architecture(model, records, tmp_path / "nested" / "architecture.png")
    assert path == tmp_path / "nested" / "architecture.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# %% The lesson, run as a user runs it ------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_lesson_runs_every_section_in_order(run, size):
    output = lesson_output(run, size)
    titles = re.findall(r"^=== (\d+)\. ", output, flags=re.MULTILINE)
    assert [int(number) for number in titles] == list(range(1, 8))
    summary = output.split("=== Summary: what you just did")[1]
    assert "nn.Sequential" in summary and "logits" in summary
    assert summary.rstrip().endswith("Next, 05_train.py: the training loop that teaches this "
                                     "network to classify images.")


def test_plumbing_is_marked_as_skippable():
    # The setup lines are plumbing; one comment says so where they begin.
    source = (common.REPO_DIR / SCRIPT).read_text()
    setup = source[:source.index("common.report_errors_plainly()")]
    assert re.search(r"^# Plumbing, down to the building block, which you can skip", setup,
                     re.MULTILINE)


@pytest.mark.parametrize("size", SIZES)
def test_printed_parameter_counts_are_the_models(run, size):
    output = lesson_output(run, size)
    table = section_text(output, 4)
    with torch.device("meta"):
        model = model_module.build_model(size)
    rows = re.findall(r"^(\S+) +(Conv2d|BatchNorm2d|Linear) +(\S+(?: \+ \S+)*) +([\d,]+)$",
                      table, flags=re.MULTILINE)
    assert rows, "no per-layer rows in section 4"
    for name, kind, formula, printed in rows:
        layer = model.get_submodule(name)
        assert type(layer).__name__ == kind
        assert count(printed) == sum(p.numel() for p in layer.parameters(recurse=False)), name
        # The formula multiplies out to the count: '32×16×3×3', '32 + 32'.
        assert count(printed) == sum(math.prod(int(size) for size in term.split("×"))
                                     for term in formula.split(" + ")), name
    total = sum(p.numel() for p in model.parameters())
    assert sum(count(printed) for *_, printed in rows) == total  # every parameter, once
    assert count(re.search(r"^total parameters: ([\d,]+)", table, re.MULTILINE).group(1)) == total
    assert count(re.search(r"^trainable parameters: ([\d,]+)", table, re.MULTILINE).group(1)) \
        == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("size", SIZES)
def test_shape_trace_covers_every_layer_from_images_to_scores(run, size):
    output = lesson_output(run, size)
    trace = section_text(output, 3)
    # One row per layer call: its name, its type and its output shape.
    rows = re.findall(r"^([\w.]+) +(\w+) +(\([\d, ]+\))$", trace, flags=re.MULTILINE)
    batch_size = parse_shape(re.search(r"^\(input\) +(\(.*\))$", trace, re.MULTILINE).group(1))[0]
    with torch.device("meta"):
        model = model_module.build_model(size)
    leaves = {name for name, module in model.named_modules() if not list(module.children())}
    assert {name for name, _, _ in rows} == leaves
    for name, kind, _ in rows:
        assert type(model.get_submodule(name)).__name__ == kind
    shapes = {name: parse_shape(shape) for name, _, shape in rows}
    assert shapes["stem.0"] == (batch_size, model_module.MODEL_SIZES[size][0], 32, 32)
    assert shapes["blocks.2.pool"][2:] == (4, 4)
    assert shapes["classifier"] == (batch_size, 10)
    scaled = re.search(r"^\* logit_scale +(\(.*\))$", trace, re.MULTILINE).group(1)
    assert parse_shape(scaled) == (batch_size, 10)
    assert "the same scores as model(images): True" in trace


@pytest.mark.parametrize("size", SIZES)
def test_lesson_shows_sequential_equal_and_modes_different(run, size):
    output = lesson_output(run, size)
    sequential = section_text(output, 2)
    assert number_after("each with its own random weights:", sequential) > 1e-3
    assert number_after("after loading the ConvBlock's state_dict into it:", sequential) <= 1e-6
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
