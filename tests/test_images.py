"""Tests for 03_image_files.open_image, the one function that reads image files for training (a folder)
and prediction (08_predict.py): any mode is scaled to 8-bit RGB correctly, a large image is
decoded at a reduced size, and a bad file in a training folder is one sentence that names it."""

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image, ImageDraw

import checkpointing
import common
import image_files
from conftest import make_checkpoint

data = common.import_script("03_data")
prediction = common.import_script("08_predict")


def pattern(height=40, width=60):
    """An 8-bit grayscale image with every value from 0 to 255 in it, as a NumPy array."""
    values = np.arange(height * width) % 256
    return values.reshape(height, width).astype(np.uint8)


def read(path):
    """What the network gets from a file: open_image, then 03's shrink to 3x32x32."""
    image, _ = image_files.open_image(path)
    return data.shrink(image)


@pytest.fixture(scope="module")
def model_and_config(tmp_path_factory):
    checkpoint = make_checkpoint(tmp_path_factory.mktemp("images") / "best.pt")
    return checkpointing.model_from_checkpoint(checkpoint), checkpoint["config"]


def probabilities(tensors, model_and_config):
    model, config = model_and_config
    return prediction.predict(model, torch.stack(tensors), config["mean"], config["std"], "cpu")


# ---- High bit depths: scaled, not clipped ----------------------------------------------------
@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_a_16_bit_gray_image_reads_and_classifies_as_its_8_bit_version(tmp_path, suffix,
                                                                        model_and_config):
    eight = pattern()
    Image.fromarray(eight).save(tmp_path / "eight.png")
    # 16 bits: 0..65535, and x * 257 is the 16-bit value of the 8-bit x (255 * 257 = 65535).
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / f"sixteen.{suffix}")
    with Image.open(tmp_path / f"sixteen.{suffix}") as file:
        assert file.mode.startswith("I;16")  # the mode Pillow used to clip at 255 (all white)
    expected, got = read(tmp_path / "eight.png"), read(tmp_path / f"sixteen.{suffix}")
    assert torch.equal(got, expected)
    white = torch.full_like(expected, 255)
    mid_grey = Image.fromarray(np.full((40, 60), 128 * 257, dtype=np.uint16))
    mid_grey.save(tmp_path / f"grey.{suffix}")
    assert torch.all(read(tmp_path / f"grey.{suffix}") == 128)
    found = probabilities([expected, got, white], model_and_config)
    assert torch.equal(found[0], found[1]) and not torch.equal(found[1], found[2])


def test_a_32_bit_integer_image_is_read_as_16_bits(tmp_path):
    Image.fromarray(pattern().astype(np.int32) * 257).save(tmp_path / "int32.tif")
    with Image.open(tmp_path / "int32.tif") as file:
        assert file.mode == "I"
    Image.fromarray(pattern()).save(tmp_path / "eight.png")
    assert torch.equal(read(tmp_path / "int32.tif"), read(tmp_path / "eight.png"))


def test_a_float_tiff_reads_and_classifies_as_its_8_bit_version(tmp_path, model_and_config):
    eight = pattern()
    Image.fromarray(eight).save(tmp_path / "eight.png")
    # Floats from 0 to 1, the usual convention (Pillow would clip them to 0 and 1: black).
    Image.fromarray(eight.astype(np.float32) / 255).save(tmp_path / "unit.tif")
    with Image.open(tmp_path / "unit.tif") as file:
        assert file.mode == "F"
    expected, got = read(tmp_path / "eight.png"), read(tmp_path / "unit.tif")
    assert torch.equal(got, expected)
    black = torch.zeros_like(expected)
    found = probabilities([expected, got, black], model_and_config)
    assert torch.equal(found[0], found[1]) and not torch.equal(found[1], found[2])


def test_a_float_image_beyond_1_is_scaled_by_its_largest_value(tmp_path):
    values = pattern().astype(np.float32) * 4  # 0..1020: the largest becomes white
    Image.fromarray(values).save(tmp_path / "wide.tif")
    Image.fromarray(pattern()).save(tmp_path / "eight.png")
    assert torch.equal(read(tmp_path / "wide.tif"), read(tmp_path / "eight.png"))


# ---- Modes with transparency ----------------------------------------------------------------
def test_transparent_pixels_become_white():
    # Fully transparent black pixels would come out black with a plain convert("RGB").
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.all(np.array(image_files.to_rgb(transparent)) == 255)
    gray = Image.new("L", (4, 4), 77)
    assert np.all(np.array(image_files.to_rgb(gray)) == 77)


def test_a_palette_or_gray_png_with_a_transparent_colour_is_put_on_white(tmp_path):
    palette = Image.new("P", (600, 600), 0)  # large enough to be reduced
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    ImageDraw.Draw(palette).rectangle((200, 200, 399, 399), fill=1)
    palette.save(tmp_path / "palette.png", transparency=0)  # colour 0 (black) is transparent
    Image.new("L", (40, 40), 0).save(tmp_path / "gray.png", transparency=0)
    image, _ = image_files.open_image(tmp_path / "palette.png")
    pixels = np.asarray(image)
    assert image.size == (300, 300)  # reduced by 2
    assert np.all(pixels[0, 0] == 255) and tuple(pixels[150, 150]) == (200, 30, 30)
    assert np.all(np.asarray(image_files.open_image(tmp_path / "gray.png")[0]) == 255)


def test_a_large_rgba_image_is_reduced_without_dark_edges(tmp_path):
    # Transparent pixels hold black; averaging them into the edge of a white square unweighted
    # would make a gray border. Weighted by opacity, the edge stays white.
    rgba = Image.new("RGBA", (1000, 1000), (0, 0, 0, 0))
    # Columns 0..499 white: the block of columns 498..500 is two thirds white, one third hidden
    # black.
    ImageDraw.Draw(rgba).rectangle((0, 0, 499, 999), fill=(255, 255, 255, 255))
    rgba.save(tmp_path / "half.png")
    image, description = image_files.open_image(tmp_path / "half.png")
    assert description == "PNG, 1000x1000 RGBA" and image.size == (334, 334)  # 1000 / 3, up
    assert np.all(np.asarray(image) == 255)


# ---- Size ------------------------------------------------------------------------------------
def test_a_large_jpeg_is_decoded_at_a_reduced_size_that_shrinks_alike(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    # A 4000x3000 photo: smooth colour patches, so JPEG keeps it close to the original.
    photo = Image.fromarray(small).resize((4000, 3000), PIL.Image.Resampling.BILINEAR)
    photo.save(tmp_path / "photo.jpg", quality=95)
    image, description = image_files.open_image(tmp_path / "photo.jpg")
    assert description == "JPEG, 4000x3000 RGB"
    assert 256 <= min(image.size) < 512 and image.width / image.height == pytest.approx(4 / 3, 0.01)
    # What the network gets is nearly what shrinking the full-size photo gives.
    with Image.open(tmp_path / "photo.jpg") as full:
        reference = data.shrink(full.convert("RGB"))
    difference = (data.shrink(image).int() - reference.int()).abs().float()
    assert difference.mean() < 2 and difference.max() < 20


def test_a_small_image_is_read_at_its_own_size(tmp_path):
    Image.fromarray(pattern(32, 32)).save(tmp_path / "small.png")
    image, description = image_files.open_image(tmp_path / "small.png")
    assert image.size == (32, 32) and image.mode == "RGB" and description == "PNG, 32x32 L"


def test_a_sideways_photo_is_turned_upright(tmp_path):
    image = Image.new("RGB", (600, 300), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # the Orientation tag: "turn 90 degrees clockwise to show"
    image.save(tmp_path / "sideways.jpg", exif=exif)
    upright, description = image_files.open_image(tmp_path / "sideways.jpg")
    assert description == "JPEG, 600x300 RGB"
    assert upright.width < upright.height


# ---- Bad files: one sentence that names the file -------------------------------------------
def write_folder(root):
    """train/<class>/ with two good images in each of two classes."""
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for number in range(2):
            Image.new("RGB", (40, 40), colour).save(root / name / f"{number}.png")


def check_refused(folder, bad_file, reason):
    with pytest.raises(common.UserError) as refusal:
        data.read_image_folder(folder)
    message = str(refusal.value)
    assert str(bad_file) in message and reason in message and "\n" not in message


def test_a_damaged_ppm_in_a_training_folder_is_one_sentence(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "red" / "damaged.ppm").write_bytes(b"P6\n64 x\n255\n")  # Pillow: ValueError
    check_refused(tmp_path, tmp_path / "red" / "damaged.ppm", "damaged")


def test_a_truncated_png_in_a_training_folder_is_one_sentence(tmp_path):
    write_folder(tmp_path)
    Image.fromarray(pattern()).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "blue" / "cut.png").write_bytes(whole[:len(whole) // 2])
    check_refused(tmp_path, tmp_path / "blue" / "cut.png", "damaged")


def test_an_oversized_png_in_a_training_folder_is_one_sentence(tmp_path, monkeypatch):
    write_folder(tmp_path)
    Image.new("RGB", (100, 100)).save(tmp_path / "blue" / "huge.png")
    # Pillow refuses more than twice MAX_IMAGE_PIXELS; a low limit stands in for a huge image.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)
    check_refused(tmp_path, tmp_path / "blue" / "huge.png", "more pixels than Pillow")
    # The 40x40 images are below the limit, and read as before.
    (tmp_path / "blue" / "huge.png").unlink()
    images, labels, classes = data.read_image_folder(tmp_path)
    assert images.shape == (4, 3, 32, 32) and classes == ("blue", "red")


def test_missing_file_and_folder_are_one_sentence_each(tmp_path):
    for path, reason in ((tmp_path / "missing.png", "no such file"), (tmp_path, "a folder")):
        with pytest.raises(common.UserError, match=reason) as refusal:
            image_files.open_image(path)
        assert str(path) in str(refusal.value)
