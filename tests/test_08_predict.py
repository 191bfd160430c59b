"""Tests for 08_predict.py: images of any size and mode are classified, bad files are reported
one sentence each without stopping the others, and a missing checkpoint is one sentence."""

import importlib.util
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import common

data = common.import_script("03_data")
from conftest import make_checkpoint

SCRIPT = "08_predict.py"
SAMPLES = sorted(path for path in (common.REPO_DIR / "samples").iterdir()
                 if path.suffix in (".png", ".jpg"))
_results = {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkpoint and test images: a 1000x700 RGBA PNG, a grayscale JPEG, a text file."""
    folder = tmp_path_factory.mktemp("predict")
    make_checkpoint(folder / "best.pt")
    # A red disc on a transparent background, wider than tall.
    rgba = Image.new("RGBA", (1000, 700), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((300, 150, 700, 550), fill=(200, 30, 30, 255))
    rgba.save(folder / "disc.png")
    gray = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(folder / "gray.jpg")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def predict_module():
    """08_predict.py imported as a module (its name starts with a digit, hence importlib)."""
    spec = importlib.util.spec_from_file_location("predict", common.REPO_DIR / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predictions(stdout):
    """{image path as printed: [(class, probability), ...] in the printed order}."""
    results = {}
    for block in stdout.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines or not re.match(r"^\S.*  \(.* -> 32x32\)$", lines[0]):
            continue
        path = lines[0].split("  (")[0]
        rows = [re.match(r"^\s+\d+\. (\S+)\s+([\d.]+)%", line) for line in lines[1:]]
        assert all(rows), f"unexpected lines under {path}: {lines[1:]}"
        results[path] = [(row.group(1), float(row.group(2)) / 100) for row in rows]
    return results


def check_ranking(ranking, classes=data.CIFAR10_CLASSES, top=3):
    """`top` known classes, each once, with probabilities in [0, 1], largest first, sum <= 1."""
    assert len(ranking) == top
    names = [name for name, _ in ranking]
    values = [value for _, value in ranking]
    assert set(names) <= set(classes) and len(set(names)) == top
    assert all(0 <= value <= 1 for value in values)
    assert values == sorted(values, reverse=True)
    assert sum(values) <= 1 + 0.0015 * top  # each printed value is rounded to 0.1%


@pytest.fixture
def mixed_run(run, workspace):
    """One call with two good images around a missing file and a file that is not an image.

    It runs once; the tests that read it share the result (every run pays for importing torch).
    """
    if "mixed" not in _results:
        _results["mixed"] = run(SCRIPT, workspace / "disc.png", workspace / "missing.png",
                                workspace / "notes.txt", workspace / "gray.jpg",
                                "--checkpoint", workspace / "best.pt", "--device", "cpu",
                                "--output-dir", workspace / "outputs", timeout=180)
    return _results["mixed"]


def test_rgba_png_and_grayscale_jpeg_are_classified(mixed_run, workspace):
    results = predictions(mixed_run.stdout)
    assert list(results) == [str(workspace / "disc.png"), str(workspace / "gray.jpg")]
    for ranking in results.values():
        check_ranking(ranking)
    assert "PNG, 1000x700 RGBA -> 32x32" in mixed_run.stdout
    assert "JPEG, 300x200 L -> 32x32" in mixed_run.stdout
    assert (workspace / "outputs" / "predictions.png").is_file()


def test_bad_files_are_reported_and_the_others_classified(mixed_run, workspace):
    assert mixed_run.returncode == 1
    assert "Traceback" not in mixed_run.stderr
    errors = mixed_run.stderr.strip().splitlines()
    assert len(errors) == 2, errors  # one sentence per bad file, nothing more
    assert str(workspace / "missing.png") in errors[0] and "no such file" in errors[0]
    assert str(workspace / "notes.txt") in errors[1] and "not an image" in errors[1]
    # The good images, before and after the bad ones, were still classified (previous test).
    assert len(predictions(mixed_run.stdout)) == 2


def test_missing_checkpoint_is_one_sentence(run, workspace, tmp_path):
    result = run(SCRIPT, workspace / "disc.png", "--checkpoint", tmp_path / "nothing.pt",
                 "--output-dir", tmp_path, timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "python 05_train.py" in lines[0]
    assert predictions(result.stdout) == {}


def test_sample_images_run_with_the_checkpoints_classes(run, workspace, tmp_path):
    # A checkpoint trained on a folder of 4 classes: the names and their number come from its
    # config, and --top larger than that shows all 4, whose probabilities add up to 1.
    classes = ("apple", "bicycle", "cloud", "dolphin")
    make_checkpoint(tmp_path / "folder.pt", classes=classes)
    assert len(SAMPLES) >= 3
    result = run(SCRIPT, *SAMPLES, "--checkpoint", tmp_path / "folder.pt", "--top", "10",
                 "--device", "cpu", "--output-dir", tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    results = predictions(result.stdout)
    assert len(results) == len(SAMPLES)
    for ranking in results.values():
        check_ranking(ranking, classes=classes, top=len(classes))
        assert sum(value for _, value in ranking) == pytest.approx(1, abs=0.003)


def test_transparent_pixels_become_white(predict_module):
    # Fully transparent black pixels would come out black with a plain convert("RGB").
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.all(np.array(predict_module.to_rgb(transparent)) == 255)
    gray = Image.new("L", (4, 4), 77)
    assert np.all(np.array(predict_module.to_rgb(gray)) == 77)


def test_shrink_keeps_the_centre_of_a_wide_image(predict_module):
    # 1000x700: the shorter side becomes 32, the width 45, and 6-7 columns are cut off on each
    # side, which is about 150 pixels of the original: red bands 100 pixels wide disappear.
    image = Image.new("RGB", (1000, 700), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 699), fill=(255, 0, 0))
    ImageDraw.Draw(image).rectangle((900, 0, 999, 699), fill=(255, 0, 0))
    tensor = data.shrink(image)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8
    assert tensor[0].max() < 10 and tensor[2].min() > 245  # only the blue middle is left


def test_shrink_is_torchvisions_resize_and_center_crop(predict_module):
    # The images of a --data-dir folder are resized with torchvision for training (common.py);
    # 08 does it with Pillow alone, and must give the very same pixels.
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32),
                                    transforms.PILToTensor()])
    rng = np.random.default_rng(0)
    for width, height in [(1000, 700), (700, 1000), (33, 32), (32, 32), (45, 1000), (99, 101)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        assert torch.equal(data.shrink(image), reference(image)), (width, height)


def test_an_image_gets_the_same_answer_alone_or_in_a_batch(predict_module, workspace):
    # Eval mode: batch-norm uses its stored statistics, so the other images cannot matter.
    checkpoint = common.load_checkpoint(workspace / "best.pt")
    model = common.model_from_checkpoint(checkpoint)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    config = checkpoint["config"]
    together = predict_module.predict(model, images, config["mean"], config["std"], "cpu")
    alone = predict_module.predict(model, images[2:3], config["mean"], config["std"], "cpu")
    assert together.shape == (5, 10)
    assert torch.allclose(together.sum(dim=1), torch.ones(5))
    assert torch.allclose(together[2:3], alone, atol=1e-6)
