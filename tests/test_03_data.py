"""Tests for 03_data.py: it runs on every data source, and what it prints is what it claims."""

import random
import re

import pytest
import torch
from PIL import Image

import common

SCRIPT = "03_data.py"

# A proxy address where nothing listens: any download attempt fails at once with "connection
# refused", so these tests never reach the network, even on a machine that has one. torchvision
# downloads with urllib, which reads these variables; no_proxy is emptied so nothing bypasses it.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "no_proxy": "", "NO_PROXY": ""}


def channel_values(output, name):
    """The three numbers printed after `name` (e.g. "mean computed here:")."""
    line = re.search(rf"{re.escape(name)}\s+([-\d., ]+)$", output, flags=re.MULTILINE)
    assert line, f"no line {name!r}"
    return [float(value) for value in line.group(1).split(",")]


def assert_is_png(path):
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """One run with --fake-data and the defaults, its output folder shared by the tests below."""
    from conftest import run_script

    output_dir = tmp_path_factory.mktemp("outputs")
    result = run_script(SCRIPT, "--fake-data", "--output-dir", output_dir, env=NO_NETWORK,
                        timeout=120)
    return result, output_dir


def test_fake_data_runs_every_section_and_writes_the_grids(fake_run):
    result, output_dir = fake_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    titles = re.findall(r"^=== (\d+)\. ", result.stdout, flags=re.MULTILINE)
    assert [int(number) for number in titles] == list(range(1, 10))
    assert_is_png(output_dir / "data_samples.png")
    assert_is_png(output_dir / "data_augmentation.png")
    assert f"training images by class: {output_dir / 'data_samples.png'}" in result.stdout


def test_fake_data_sizes_split_and_batches(fake_run):
    output = fake_run[0].stdout
    assert "training images: 1,000 | test images: 200 | classes: 10" in output
    assert "images: shape (1000, 3, 32, 32), dtype torch.uint8, values 0 to 255" in output
    assert "1,000 training images -> 900 for training + 100 for validation" in output
    assert "len(train_dataset): 900 | len(val_dataset): 100" in output
    assert "one training batch: images (256, 3, 32, 32) torch.float32, labels (256,) torch.int64" \
        in output
    # The fast loader's batches arrive as floats, ready for the network: 900 images, 3 batches,
    # on the device --device auto picks here ("cpu", or "cuda:0" on a machine with a GPU).
    device = torch.empty(0, device=common.get_device("auto")).device
    assert ("InMemoryLoader: 3 batch(es) per epoch; one batch: images (256, 3, 32, 32) "
            f"torch.float32 on {device}") in output


def test_fake_data_statistics_are_the_datas_own(fake_run):
    output = fake_run[0].stdout
    # Computed from the training part only: the 100 validation images are left out.
    assert "900 training images (validation left out), per channel" in output
    assert "normalising with: the numbers computed here" in output
    # FakeData's pixels are spread evenly around the middle, unlike CIFAR-10's.
    assert channel_values(output, "mean computed here:") == pytest.approx([0.5] * 3, abs=0.01)
    assert channel_values(output, "CIFAR10_MEAN:") == [0.4914, 0.4822, 0.4465]
    # Normalised with those statistics, a batch has mean about 0 and std about 1 per channel.
    line = re.search(r"^per-channel mean (.*), std (.*); channels_last: True$",
                     output, flags=re.MULTILINE)
    assert [float(v) for v in line.group(1).split(",")] == pytest.approx([0] * 3, abs=0.05)
    assert [float(v) for v in line.group(2).split(",")] == pytest.approx([1] * 3, abs=0.05)


def test_transforms_are_random_for_training_only(fake_run):
    output = fake_run[0].stdout
    assert "eval_transform twice gives the same tensor: True" in output
    assert "train_transform 5 times gives 5 different tensors" in output
    assert output.rstrip().endswith("Next, 04_model.py: the network that these batches are fed to.")


def test_no_network_is_one_sentence_and_leaves_nothing_behind(run, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = run(SCRIPT, "--data-dir", data_dir, "--output-dir", tmp_path / "outputs",
                 env=NO_NETWORK, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: could not download CIFAR-10 into {data_dir}")
    assert "--fake-data" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(data_dir.iterdir()) == []  # no partial download to trip the next attempt
    assert not (tmp_path / "outputs").exists()


def write_colour_folder(root, per_class_train=12, per_class_test=3):
    """train/ and test/ with classes "dusk" and "noon": one random colour per image.

    Most images are 32x32 JPEGs; one per class has another size, one is a PNG and one is
    grayscale. Returns the colours of the training images, as they should load (0..255).
    """
    rng = random.Random(0)
    colours = []
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for class_name in ("dusk", "noon"):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for number in range(count):
                colour = tuple(rng.randrange(256) for _ in range(3))
                size, mode, suffix = (32, 32), "RGB", "jpg"
                if number == 1:
                    size = (45, 60)
                elif number == 2:
                    suffix = "png"
                elif number == 3:
                    mode, colour = "L", (rng.randrange(256),) * 3
                image = Image.new(mode, size, colour if mode == "RGB" else colour[0])
                image.save(folder / f"{number:02d}.{suffix}", quality=95)
                if split == "train":
                    colours.append(colour)
    return colours


def test_reads_your_own_image_folder(run, tmp_path):
    colours = write_colour_folder(tmp_path / "images")
    result = run(SCRIPT, "--data-dir", tmp_path / "images", "--output-dir", tmp_path / "outputs",
                 "--dry-run", "--workers", 1, env=NO_NETWORK, timeout=120)
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "training images: 24 | test images: 6 | classes: 2" in output
    assert "classes: dusk, noon" in output
    assert "24 training images -> 22 for training + 2 for validation" in output
    # A set smaller than one batch is one batch, not dropped.
    assert "one training batch: images (22, 3, 32, 32) torch.float32" in output
    # Every image is one colour, so the per-channel mean is the mean of the colours of the
    # training part (ImageFolder reads the files in the order they were written).
    train_indices, _ = common.import_script("03_data").split_train_val(24)
    kept = [colours[index] for index in train_indices.tolist()]
    expected = [sum(colour[channel] for colour in kept) / len(kept) / 255 for channel in range(3)]
    assert channel_values(output, "mean computed here:") == pytest.approx(expected, abs=0.01)
    assert_is_png(tmp_path / "outputs" / "data_samples.png")
