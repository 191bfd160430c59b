"""Tests for image_files.shrink, which 03 (a folder of your own images) and 08_predict.py (single
image files) use to turn a PIL image of any size into the network's square input."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import common
import image_files
from conftest import REPO_DIR

data = common.import_script("03_data")

# Widths and heights: ordinary photos, near-squares, odd sizes, and strips far wider or taller
# than they are high or wide (the shorter side scaled up as well as down).
SIZES = [(1000, 700), (700, 1000), (33, 32), (32, 32), (45, 1000), (99, 101), (640, 480),
         (1920, 1080), (3, 50), (50, 3), (1, 1), (1, 40), (17, 64), (20, 34), (300, 2)]


def torchvision_shrink(image, size):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                               transforms.PILToTensor()])(image)


def random_image(mode, width, height, rng):
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [32, 64])
def test_shrink_is_torchvisions_resize_and_center_crop_within_rounding(mode, size):
    # shrink cuts the centre out before it scales; torchvision scales the whole image, then cuts.
    # The filter and the positions are the same, but Pillow rounds the two computations apart
    # at exact ties: a pixel may then differ by 1 (of 255), never by more.
    rng = np.random.default_rng(0)
    sizes = SIZES + [tuple(int(side) for side in rng.integers(1, 300, 2)) for _ in range(40)]
    for width, height in sizes:
        image = random_image(mode, width, height, rng)
        ours, theirs = image_files.shrink(image, size), torchvision_shrink(image, size)
        assert ours.shape == theirs.shape == ((3 if mode == "RGB" else 1), size, size)
        assert ours.dtype == torch.uint8
        difference = (ours.int() - theirs.int()).abs()
        assert difference.max() <= 1, (width, height)
        assert difference.float().mean() < 0.35, (width, height)  # mostly exactly equal


@pytest.mark.parametrize("width, height", [(32, 32), (64, 64), (31, 20), (1000, 700)])
def test_shrink_is_exact_for_square_images_and_one_colour(width, height):
    rng = np.random.default_rng(1)
    if width == height:  # a square is only scaled: no crop, the very same pixels as torchvision
        image = random_image("RGB", width, height, rng)
        assert torch.equal(image_files.shrink(image), torchvision_shrink(image, 32))
    plain = Image.new("RGB", (width, height), (200, 100, 7))  # one colour stays that colour
    assert torch.equal(image_files.shrink(plain), torch.tensor([200, 100, 7]).view(3, 1, 1)
                       .expand(3, 32, 32).to(torch.uint8))


def test_shrink_keeps_the_centre_of_a_wide_and_of_a_tall_image():
    # 1000x700: the scaled image is 45x32, and 6-7 of its columns (about 150 pixels of the
    # original) are cut off on each side: red bands 100 pixels wide disappear.
    image = Image.new("RGB", (1000, 700), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 699), fill=(255, 0, 0))
    ImageDraw.Draw(image).rectangle((900, 0, 999, 699), fill=(255, 0, 0))
    for picture in (image, image.transpose(Image.Transpose.ROTATE_90)):
        tensor = image_files.shrink(picture)
        assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.uint8
        assert tensor[0].max() < 10 and tensor[2].min() > 245  # only the blue middle is left


def test_shrink_keeps_a_grayscale_image_grayscale():
    image = Image.new("L", (80, 50), 0)
    ImageDraw.Draw(image).rectangle((30, 0, 49, 49), fill=255)  # a white band in the middle
    tensor = image_files.shrink(image, size=16)
    assert tensor.shape == (1, 16, 16) and tensor.dtype == torch.uint8
    assert tensor[0, :, 8].min() == 255 and tensor[0, :, 0].max() == 0


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "F", "1", "LA", "CMYK"])
def test_shrink_refuses_other_modes_rather_than_guess_the_channels(mode):
    with pytest.raises(ValueError, match="RGB or L"):
        image_files.shrink(Image.new(mode, (40, 40)))


def test_shrink_memory_is_bounded_by_its_output_not_by_the_shape_of_its_input():
    # A 1 x 100,000 strip scaled before cropping would be 32 x 3,200,000 pixels, 300 MB as RGB.
    # Cropping first keeps it to the output. Measured in a fresh process: its peak memory
    # (ru_maxrss, in kB on Linux) after importing everything, then after shrinking the strips.
    script = textwrap.dedent("""
        import resource
        import PIL.Image
        import image_files
        strips = [PIL.Image.new(mode, size, 128) for mode in ("L", "RGB")
                  for size in ((1, 100_000), (100_000, 1), (3, 500_000))]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for strip in strips:
            assert image_files.shrink(strip).shape[1:] == (32, 32)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    if sys.platform != "linux":
        pytest.skip("ru_maxrss is in kB on Linux only")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO_DIR, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 20_000  # kB: well under the 300 MB of scaling first
