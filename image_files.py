"""Plumbing for reading image files of any format, mode and size: the code that 03_data.py
(training on a folder of your own images) and 08_predict.py (classifying your photos) share.

It is Pillow, not PyTorch: what it does is explained in 08_predict.py, section 1, and you never
need to open this file to follow a lesson.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from common import UserError

# Training on a folder of your own images (03_data.py) and 08_predict.py read files with the
# same function, open_image, so that a photo reaches the network the same way in both.
# Files come in many modes, and the network takes RGB (3 channels of 0..255):
#   - grayscale ("L"): the gray value goes into all three channels;
#   - palette ("P", common in GIF and small PNG files): each pixel's colour is looked up;
#   - with transparency ("RGBA", "LA", or a colour marked transparent): put on white, see to_rgb;
#   - 16 bits per pixel ("I;16", from scientific and medical PNG and TIFF files, 0..65535) or
#     floating point ("F", TIFF, usually 0..1): scaled down to 0..255. Pillow's own
#     convert("RGB") clips them at 255 instead, so nearly every pixel would come out white (16
#     bits) or black (0..1 floats).
# And they come in any size: a phone photo has 12 to 48 million pixels, 3 bytes each in RGB,
# while the network sees 32x32. A JPEG is decoded at 1/2, 1/4 or 1/8 of its size, so a large
# photo is never held at full size. Other formats can only be decoded whole; open_image then
# averages them down by a whole factor at once, before any conversion copies them. Either way
# the shorter side ends between DECODE_SIZE and twice that: plenty for 03_data.shrink, whose
# bilinear filter still averages many pixels into each of the 32x32.
DECODE_SIZE = 256


def to_rgb(image):
    """Convert a PIL image of any mode to RGB: 16-bit and floating-point values scaled to
    0..255, and transparent parts put on a white background.

    A transparent pixel still stores some colour, usually black, that no viewer shows. A plain
    image.convert("RGB") drops the transparency and shows that colour: a logo on a transparent
    background would reach the network on black. Compositing on white instead gives the picture
    you see on a white web page. CIFAR-10 has no transparent images, so white is a choice, not a
    rule.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # nan_to_num: a float file may hold NaN ("not a number") where nothing was measured.
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), posinf=0.0, neginf=0.0)
        largest = values.max()
        if image.mode == "F":  # floats: 0..1 by convention, else scaled so the largest is white
            scale = 255.0 if largest <= 1 else 255.0 / largest
        else:  # integers: 16 bits (65535 / 257 = 255), unless larger values say otherwise
            scale = 1 / 257 if largest <= 65535 else 255.0 / largest
        gray = np.clip(values * scale, 0, 255).round().astype(np.uint8)
        image = PIL.Image.fromarray(gray)  # mode "L", 8 bits
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")  # a palette's or a marked colour's transparency included
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(background, image)
    return image.convert("RGB")  # returns a copy even when the image is already RGB


def open_image(path):
    """Read an image file of any format, mode and size as an RGB PIL image, decoded at a reduced
    size when it is large (its shorter side between DECODE_SIZE and twice that).

    Args:
        path: the image file.

    Returns:
        (image, description): the RGB image, and a line describing the file as it is stored,
        e.g. "JPEG, 8000x6000 RGB".

    Raises:
        UserError: one sentence naming the file, if it is missing, unreadable, not an
            image, damaged, or larger than Pillow agrees to open.
    """
    try:
        # Image.open reads only the header (format, size, mode); the pixels come later.
        with PIL.Image.open(path) as file:
            description = f"{file.format}, {file.width}x{file.height} {file.mode}"
            # A JPEG stores 8x8 blocks of pixels as frequencies, and can be decoded at 1/2, 1/4
            # or 1/8 of its size for less than the full cost. draft() picks the smallest of these
            # that keeps both sides at least DECODE_SIZE; other formats ignore it.
            file.draft("RGB", (DECODE_SIZE, DECODE_SIZE))
            file.load()  # decodes the pixels: a damaged file fails here, where we can name it
            # Phone photos are often stored sideways, with a tag that says how to turn them.
            # Viewers obey it, and so must we, or the network sees the photo lying down.
            # (in_place: turned only if the tag says so; no copy otherwise.)
            PIL.ImageOps.exif_transpose(file, in_place=True)
            # reduce() below averages blocks of pixels. Three kinds of pixel cannot be averaged
            # as they are, and are first converted (a copy at full size, the one open_image
            # makes): 16-bit ones, which reduce() does not take, become 32-bit integers; palette
            # indices become colours; and a colour marked transparent becomes an alpha channel.
            if file.mode.startswith("I;16"):
                image = file.convert("I")
            elif file.mode in ("P", "PA") or "transparency" in file.info:
                transparent = file.mode == "PA" or "transparency" in file.info
                image = file.convert("RGBA" if transparent else "RGB")
            elif file.mode == "1":  # black and white, 1 bit per pixel
                image = file.convert("L")
            else:
                image = file
            factor = min(image.size) // DECODE_SIZE
            if factor > 1:
                # The average of each factor x factor block (for RGBA, weighted by opacity, so
                # the hidden colour of transparent pixels does not bleed into the edges).
                image = image.reduce(factor)
            return to_rgb(image), description
    except FileNotFoundError:
        raise UserError(f"cannot read {path}: there is no such file.") from None
    except (IsADirectoryError, PermissionError):  # Windows says PermissionError for a folder
        if Path(path).is_dir():
            raise UserError(f"cannot read {path}: it is a folder, not an image file."
                                   ) from None
        raise UserError(f"cannot read {path}: you do not have permission to read it."
                               ) from None
    except PIL.Image.DecompressionBombError:
        # Image.open refuses images of more than 2 x PIL.Image.MAX_IMAGE_PIXELS pixels (about
        # 179 million): a small file can claim a huge size and fill the memory when decoded.
        raise UserError(f"cannot read {path}: it has more pixels than Pillow agrees to "
                               "open (a protection against malicious files); make it smaller "
                               "in an image editor first.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        # PIL.UnidentifiedImageError (an OSError): no format Pillow knows; OSError, ValueError
        # and the others: a truncated or corrupt file, depending on the format.
        raise UserError(f"cannot read {path}: it is not an image that Pillow can read "
                               "(PNG, JPEG, BMP, GIF, TIFF, WebP, ...), or the file is damaged."
                               ) from None
