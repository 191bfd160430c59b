"""Tests for image_files.open_image, the one function that reads image files for training (a
folder) and prediction (08_predict.py): any mode is scaled to 8-bit RGB or grayscale correctly, a
large image is decoded at a reduced size, a long strip is cut to its middle (what it returns has
at most about a million pixels, whatever the file), and a bad file (in a training folder too) or
one that is not a regular file is one sentence that names it."""

import errno
import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import datasets

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
    return image_files.shrink(image)


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
    assert np.all(np.array(image_files.convert(transparent)) == 255)
    gray = Image.new("L", (4, 4), 77)
    assert np.all(np.array(image_files.convert(gray)) == 77)


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
        reference = image_files.shrink(full.convert("RGB"))
    difference = (image_files.shrink(image).int() - reference.int()).abs().float()
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


# ---- The decoded images kept for the next run -----------------------------------------------
def test_a_folder_s_decoded_images_are_read_back_unless_its_files_change(tmp_path, capsys,
                                                                           monkeypatch):
    write_folder(tmp_path)
    first = data.read_image_folder(tmp_path)
    kept = tmp_path / image_files.DECODED_NAME
    assert kept.is_file() and "Kept the 4 decoded images in" in capsys.readouterr().out
    # Read back, not decoded: with every file unreadable, the same tensors come back.
    def refuse(path, mode="RGB"):
        raise AssertionError(f"{path} was decoded again")
    with monkeypatch.context() as patch:
        patch.setattr(image_files, "open_image", refuse)
        again = data.read_image_folder(tmp_path)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert again[2] == first[2] == ("blue", "red")  # the kept file is not taken for a class
    # A changed image (another size, so its file's size changes), an added one and a removed
    # one are each seen: the folder is decoded again, and what is kept is replaced.
    Image.new("RGB", (50, 30), (0, 255, 0)).save(tmp_path / "red" / "0.png")
    capsys.readouterr()
    changed = data.read_image_folder(tmp_path)
    assert capsys.readouterr().out.startswith(
        f"Decoding the images again: {kept} no longer matches the folder (an image was added, "
        "removed or changed, or Pillow or the decoding settings were).\nKept the 4 decoded "
        "images in")
    assert torch.equal(changed[0][2], torch.tensor([0, 255, 0], dtype=torch.uint8)
                       .view(3, 1, 1).expand(3, 32, 32))
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "red" / "2.png")
    assert len(data.read_image_folder(tmp_path)[1]) == 5
    (tmp_path / "blue" / "1.png").unlink()
    images, labels, _ = data.read_image_folder(tmp_path)
    assert len(labels) == 4 and labels.tolist() == [0, 1, 1, 1]
    assert torch.equal(data.read_image_folder(tmp_path)[0], images)


def test_a_damaged_or_unwritable_kept_file_only_means_decoding_again(tmp_path, capsys,
                                                                      monkeypatch):
    write_folder(tmp_path)
    kept = tmp_path / image_files.DECODED_NAME
    first = data.read_image_folder(tmp_path)
    kept.write_bytes(kept.read_bytes()[:100])  # cut short, as by a crash without the rename
    capsys.readouterr()
    assert torch.equal(data.read_image_folder(tmp_path)[0], first[0])
    assert capsys.readouterr().out.startswith(f"Decoding the images again: {kept} could not be "
                                              "read (")
    # The same files with another Pillow (or other decoding settings) are decoded again too.
    folder = datasets.ImageFolder(tmp_path)
    def fingerprint():
        return image_files.folder_fingerprint(tmp_path, folder.samples, folder.classes)
    assert image_files.read_decoded(kept, fingerprint()) is not None
    monkeypatch.setattr(image_files.PIL, "__version__", "0.0")
    assert image_files.read_decoded(kept, fingerprint()) is None
    monkeypatch.undo()
    assert image_files.read_decoded(kept, "any") is None
    # Where it cannot be written (here a full disk; a read-only folder alike), the images still
    # come back, with one line that says what happens next time, and nothing is left behind.
    kept.unlink()
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", disk_full)
    capsys.readouterr()
    assert torch.equal(data.read_image_folder(tmp_path)[0], first[0])
    printed = capsys.readouterr().out
    assert printed == (f"Note: could not write {kept} (No space left on device), so the next "
                       "run decodes the images again.\n"), printed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blue", "red"]


def test_missing_file_and_folder_are_one_sentence_each(tmp_path):
    for path, reason in ((tmp_path / "missing.png", "no such file"), (tmp_path, "a folder")):
        with pytest.raises(common.UserError, match=reason) as refusal:
            image_files.open_image(path)
        assert str(path) in str(refusal.value)


# ---- Grayscale, for a network trained on one channel -----------------------------------------
def test_grayscale_is_read_as_grayscale_and_colour_as_its_brightness(tmp_path):
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    colour.save(tmp_path / "colour.png")
    Image.fromarray(pattern()).save(tmp_path / "gray.png")
    image, description = image_files.open_image(tmp_path / "colour.png", mode="L")
    assert description == "PNG, 60x40 RGB" and image.mode == "L"
    # Pillow's 0.299 R + 0.587 G + 0.114 B, as torchvision's Grayscale.
    assert np.array_equal(np.asarray(image), np.asarray(colour.convert("L")))
    gray, _ = image_files.open_image(tmp_path / "gray.png", mode="L")
    assert np.array_equal(np.asarray(gray), pattern())
    # Read as RGB, the gray value is in all three channels.
    rgb = np.asarray(image_files.open_image(tmp_path / "gray.png")[0])
    assert rgb.shape == (40, 60, 3) and all(np.array_equal(rgb[..., c], pattern())
                                            for c in range(3))
    with pytest.raises(ValueError, match="mode"):
        image_files.open_image(tmp_path / "gray.png", mode="RGBA")


def test_16_bit_float_and_transparent_images_read_as_grayscale_too(tmp_path):
    Image.fromarray(pattern().astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(pattern().astype(np.float32) / 255).save(tmp_path / "unit.tif")
    for name in ("sixteen.png", "unit.tif"):  # scaled to 0..255, not clipped
        image, _ = image_files.open_image(tmp_path / name, mode="L")
        assert image.mode == "L" and np.array_equal(np.asarray(image), pattern())
    Image.new("RGBA", (600, 600), (0, 0, 0, 0)).save(tmp_path / "clear.png")  # reduced, too
    image, _ = image_files.open_image(tmp_path / "clear.png", mode="L")
    assert image.size == (300, 300) and np.all(np.asarray(image) == 255)  # on white


# ---- Long strips: bounded by pixel count, not by the shorter side ---------------------------
@pytest.mark.parametrize("mode, size, kept", [
    ("L", (1, 1_000_000), (1, 16)),       # issue 21's 2 KB file: 6 GB in 08 before
    ("RGB", (3, 5_000_000), (3, 48)),     # 10 GB in 08 before
    ("RGB", (2_000_000, 2), (32, 2)),     # lying down
    ("I;16", (2, 400_000), (2, 32)),      # 16-bit: converted after the cut, not before
    ("P", (100_000, 300), (4800, 300)),   # cut to 16:1 (then too small to reduce)
    ("RGB", (20_000, 600), (4800, 300)),  # cut to 16:1, then reduced by 2
    ("RGB", (6000, 2000), (858, 286)),    # a wide photo: 3:1 is kept whole, reduced by 7
])
def test_what_open_image_returns_is_bounded_whatever_the_shape(tmp_path, mode, size, kept):
    Image.new(mode, size, 100).save(tmp_path / "strip.png")
    image, description = image_files.open_image(tmp_path / "strip.png")
    assert description.startswith(f"PNG, {size[0]}x{size[1]}")
    assert image.size == kept and image.mode == "RGB"
    assert image.width * image.height <= 511 * 8176  # 16:1, the shorter side below 512


def test_a_long_strip_still_gives_the_network_its_middle_square(tmp_path):
    # The network sees the middle square (image_files.shrink), and the cut keeps it and more on
    # each side: what the network gets is the whole strip's middle square, scaled to 32x32 (with its
    # neighbours in the bilinear filter's reach). Not compared with shrinking the whole strip:
    # torchvision's Resize rounds the longer side down, which moves its "centre" crop of a long
    # strip off the centre by pixels.
    rng = np.random.default_rng(0)
    for width, height in ((40, 20_000), (20_006, 6), (3, 100_001)):
        strip = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        strip.save(tmp_path / "strip.png")
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = strip.resize((32, 32), Image.Resampling.BILINEAR,
                              box=(left, top, left + side, top + side))
        cut = image_files.open_image(tmp_path / "strip.png")[0]
        assert max(cut.size) == 16 * side + (max(width, height) - 16 * side) % 2
        expected = torch.from_numpy(np.array(square)).permute(2, 0, 1)
        # Within 1: shrink rounds the scaled size of the longer side down (03_image_files.shrink).
        assert (image_files.shrink(cut).int() - expected.int()).abs().max() <= 1, (width, height)


def test_middle_cuts_only_what_is_longer_than_the_ratio():
    image = Image.new("L", (10, 45))
    assert image_files.middle(image, max_aspect_ratio=4).size == (10, 41)  # 2 cut at each end
    assert image_files.middle(image, max_aspect_ratio=5) is image  # 4.5 : 1, kept whole
    assert image_files.middle(image) is image  # at most 16 : 1 by default
    ramp = Image.fromarray(np.arange(42, dtype=np.uint8).reshape(1, 42))  # 42 x 1: 0..41
    assert np.asarray(image_files.middle(ramp, 4)).tolist() == [[19, 20, 21, 22]]  # the middle


# ---- Not a regular file -----------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /dev/null")
def test_a_device_is_refused_before_it_is_read():
    with pytest.raises(common.UserError, match="not a regular file") as refusal:
        image_files.open_image("/dev/null")
    assert "/dev/null" in str(refusal.value) and "\n" not in str(refusal.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a Unix thing")
def test_a_named_pipe_is_refused_without_opening_it(tmp_path, monkeypatch):
    # Opening a named pipe for reading waits until a writer comes: the check must come first.
    # (tests/test_08_predict.py runs 08 on one, with a time limit.)
    os.mkfifo(tmp_path / "pipe")
    monkeypatch.setattr(PIL.Image, "open", lambda *args: pytest.fail("the pipe was opened"))
    with pytest.raises(common.UserError, match="not a regular file"):
        image_files.open_image(tmp_path / "pipe")
