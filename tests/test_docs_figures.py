"""docs/'s figure scripts: the parts that read the lessons' output and draw, checked without
running the lessons (the runs take most of an hour on a CPU), and the record they leave."""

import importlib.util
import json

import pytest
import torch

from conftest import REPO_DIR

FIGURES_DIR = REPO_DIR / "docs" / "figures"


def load(name):
    """A script of docs/ as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_DIR / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COMPARE_OUTPUT = """\
from scratch: test accuracy 9.4% on 64 images, 11,181,642 trainable parameters, 44.7 s
=== 6. Scratch vs frozen vs fine-tuned (--compare) ==========================
ResNet-18 with random weights (--no-pretrained: nothing to transfer)
64 training images of 10 classes, 2 epochs each, tested on 64:
  method           test accuracy  training time  trainable parameters
  from scratch              9.4%          44.7s            11,181,642
  frozen backbone          10.9%          13.6s                 5,130
  fine-tuned                3.1%           3.1s             8,398,858

Finished in 73 s. Next, 10_sequences.py: an LSTM that learns to write text.
"""


def test_the_compare_table_of_09_is_read_row_by_row():
    rows = load("make_next_steps_figures").parse_compare_table(COMPARE_OUTPUT)
    assert rows == [
        {"method": "from scratch", "test_accuracy": 9.4, "seconds": 44.7,
         "trainable_parameters": 11_181_642},
        {"method": "frozen backbone", "test_accuracy": 10.9, "seconds": 13.6,
         "trainable_parameters": 5_130},
        {"method": "fine-tuned", "test_accuracy": 3.1, "seconds": 3.1,
         "trainable_parameters": 8_398_858}]
    with pytest.raises(ValueError):
        load("make_next_steps_figures").parse_compare_table("no table here")


def small_record():
    """A record with every part make_next_steps_figures draws, with made-up numbers."""
    rows = [{"method": method, "test_accuracy": accuracy, "seconds": 2.0,
             "trainable_parameters": 645}
            for method, accuracy in [("from scratch", 60.0), ("frozen backbone", 65.0),
                                     ("fine-tuned", 75.0)]]
    timing = {label: {"batch_1": 1.0, "batch_256": 0.3}
              for label in ["float32, eager", "int8 quantize/dequantize, eager",
                            "float32, torch.compile", "int8, torch.compile"]}
    return {
        "machine": {"cpu": "Some CPU", "cores": 2},
        "transfer": {"five_classes": {"classes": "a,b,c,d,e"}, "new_classes": "f,g,h,i,j",
                     "images_per_class": 50, "compare": {"0": {"rows": rows},
                                                         "1": {"rows": rows}}},
        "sequences": {"history": {"epoch": [1, 2, 3], "train_loss": [2.5, 2.0, 1.8],
                                  "val_perplexity": [12.0, 8.0, 6.5]},
                      "parameters": 1000, "text_characters": 5000, "uniform_perplexity": 90,
                      "frequencies_perplexity": 29.4,
                      "samples": {"0.5": "The model is " * 15, "1.5": "The modxl qz " * 15}},
        "quantization": {"results": {"checkpoint": "checkpoints/best.pt",
                                     "cpu_capability": "AVX512", "threads": 2,
                                     "test_images": 10000,
                                     "file_bytes": {"float32": 1_363_000, "int8": 555_000},
                                     "milliseconds_per_image": timing,
                                     "test_accuracy": {"float32": 0.85, "int8": 0.849}}},
        "distributed": {"global_batch": 256, "setups": [
            {"label": label, "epoch_seconds": [40.0, 42.0]}
            for label in ["1 process, 1 thread", "2 processes, 1 thread each",
                          "1 process, 2 threads"]]},
    }


def test_every_figure_is_drawn_small_from_a_record(tmp_path):
    drawn = load("make_next_steps_figures").draw_all(small_record(), tmp_path)
    assert sorted(path.name for path in drawn) == ["distributed.png", "quantization.png",
                                                   "sequences.png", "transfer.png"]
    for path in drawn:  # 256 colours: a few dozen KB, as make_figures.py's
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size < 150_000


def test_the_record_in_the_repository_draws_every_figure_the_guide_shows():
    record = json.loads((FIGURES_DIR / "next_steps.json").read_text())
    for part in ("machine", "transfer", "sequences", "quantization", "distributed"):
        assert part in record, part
    assert "cpu" in record["machine"] and "torch" in record["machine"]
    guide = (REPO_DIR / "GUIDE.md").read_text()
    for name in ("transfer.png", "sequences.png", "quantization.png", "distributed.png",
                 "model_architecture.png"):
        assert (FIGURES_DIR / name).is_file(), name
        assert f"docs/figures/{name}" in guide, name


def test_make_figures_copies_04s_architecture_drawing():
    assert load("make_figures").MADE_BY["model_architecture.png"] == "04_model.py"


def test_the_confidence_report_splits_right_and_wrong_answers():
    top = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.3])
    right = torch.tensor([True, True, True, False, False])
    lines = load("measure_confidence").confidence_report(top, right, percentiles=(50,),
                                                         thresholds=(0.75,))
    assert lines[1].split() == ["all", "5", "0.700"]
    assert lines[2].split() == ["right", "3", "0.800"]
    assert lines[3].split() == ["wrong", "2", "0.350"]
    assert lines[4] == ("top probability above 0.75:  40.0% of all images;  66.7% of those it "
                        "gets right,   0.0% (0) of those it gets wrong")
