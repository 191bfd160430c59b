"""Plumbing for reading image files of any format, mode and size: the code that 03_data.py
(training on a folder of your own images) and 08_predict.py (classifying your photos) share;
a folder's decoded images, kept in a file for the next run (read_image_folder); and, at the end,
the checks that make 03's in-memory pipeline refuse wrong inputs.

It is Pillow, not PyTorch, and you never need to open this file to follow a lesson. What
open_image does on the way from a file to the image the network is shown:
  - Modes. A network takes either RGB (3 channels of 0..255, like CIFAR-10) or grayscale ("L",
    1 channel), whichever it was trained on; open_image(path, mode) gives either from any file:
      - grayscale read as RGB: the gray value goes into all three channels; RGB read as
        grayscale: Pillow's weighted sum, 0.299 R + 0.587 G + 0.114 B (as torchvision's
        Grayscale), the brightness the eye sees;
      - palette ("P", common in GIF and small PNG files): each pixel's colour is looked up;
      - with transparency ("RGBA", "LA", or a colour marked transparent): put on white, see
        convert;
      - 16 bits per pixel ("I;16", from scientific and medical PNG and TIFF files, 0..65535) or
        floating point ("F", TIFF, usually 0..1): scaled down to 0..255. Pillow's own convert()
        clips them at 255 instead, so nearly every pixel would come out white (16 bits) or black
        (0..1 floats).
  - Orientation. A photo stored sideways, with a tag saying how to turn it (phones do this), is
    turned upright, as every viewer shows it.
  - Size. The network sees a small square (32x32 for CIFAR-10) cut from the middle of the image,
    so open_image never keeps much more than that needs, whatever the file holds:
      - a large photo is read at a reduced size: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
        (a 48-megapixel phone photo would take 144 MB as RGB), other formats are decoded whole and
        at once averaged down by a whole factor, before any conversion copies them; either way the
        shorter side ends between DECODE_SIZE and twice that, plenty for shrink();
      - a very long strip (a file made to fill the memory: 1 x 1,000,000 pixels takes 2 KB as a
        PNG) is cut to its middle, at most MAX_ASPECT_RATIO times longer than it is wide, since
        scaling it whole to 32 pixels wide would make a 32 x 32,000,000 image (4 GB) of which the
        network sees the middle 32x32. Photos, panoramas included, are never that long.
    So what open_image returns has at most 511 x 8176 pixels (16 MB as RGB), whatever the file.
    The file itself is decoded whole (apart from a JPEG's reduced decoding), and Pillow refuses to
    decode one of more than 2 x PIL.Image.MAX_IMAGE_PIXELS pixels (about 179 million).
  - Errors. A file that is missing, not a regular file (a folder, a named pipe, a device), not an
    image, damaged, or of more pixels than Pillow agrees to open is a common.UserError: one
    sentence that names it.
"""

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision import datasets

from common import UserError, write_atomically

DECODE_SIZE = 256  # a large image is read with its shorter side between 256 and 511 pixels
MAX_ASPECT_RATIO = 16  # a longer side beyond 16x the shorter one is cut, keeping the middle
MODES = ("RGB", "L")  # what open_image returns: colour, or grayscale


def convert(image, mode="RGB"):
    """Convert a PIL image of any mode to `mode` ("RGB" or "L", grayscale): 16-bit and
    floating-point values scaled to 0..255, and transparent parts put on a white background.

    A transparent pixel still stores some colour, usually black, that no viewer shows. A plain
    image.convert("RGB") drops the transparency and shows that colour: a logo on a transparent
    background would reach the network on black. Compositing on white instead gives the picture
    you see on a white web page. CIFAR-10 has no transparent images, so white is a choice, not a
    rule.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
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
    return image.convert(mode)  # returns a copy even when the image is already in that mode


def middle(image, max_aspect_ratio=MAX_ASPECT_RATIO):
    """The middle of `image`, with its longer side cut to at most `max_aspect_ratio` times the
    shorter one (the image itself, not a copy, when it is not that long)."""
    width, height = image.size
    shorter = min(width, height)
    if max(width, height) <= max_aspect_ratio * shorter:
        return image
    # As many pixels cut at each end: one more kept if need be, so the middle stays the middle.
    keep = max_aspect_ratio * shorter + (max(width, height) - max_aspect_ratio * shorter) % 2
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def check_regular_file(path):
    """A UserError unless `path` is a regular file: reading a named pipe or a device would wait
    forever or never end, and a folder holds no pixels."""
    kind = os.stat(path).st_mode  # FileNotFoundError and PermissionError: open_image words them
    if stat.S_ISDIR(kind):
        raise UserError(f"cannot read {path}: it is a folder, not an image file.")
    if not stat.S_ISREG(kind):
        raise UserError(f"cannot read {path}: it is not a regular file (a named pipe or a "
                        "device, say), so it holds no image to read.")


def open_image(path, mode="RGB"):
    """Read an image file of any format, mode and size as an RGB or grayscale PIL image, decoded
    at a reduced size when it is large (its shorter side between DECODE_SIZE and twice that) and
    cut to its middle when it is very long (see MAX_ASPECT_RATIO).

    Args:
        path: the image file.
        mode: "RGB" (3 channels) or "L" (grayscale, 1 channel): what the network was trained on.

    Returns:
        (image, description): the image, and a line describing the file as it is stored,
        e.g. "JPEG, 8000x6000 RGB".

    Raises:
        UserError: one sentence naming the file, if it is missing, not a regular file,
            unreadable, not an image, damaged, or larger than Pillow agrees to open.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        check_regular_file(path)
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
            # A very long strip keeps only its middle, before anything copies it whole.
            image = middle(file)
            # reduce() below averages blocks of pixels. Three kinds of pixel cannot be averaged
            # as they are, and are first converted (a copy, the one open_image makes at full
            # size): 16-bit ones, which reduce() does not take, become 32-bit integers; palette
            # indices become colours; and a colour marked transparent becomes an alpha channel.
            if image.mode.startswith("I;16"):
                image = image.convert("I")
            elif image.mode in ("P", "PA") or "transparency" in image.info:
                transparent = image.mode == "PA" or "transparency" in image.info
                image = image.convert("RGBA" if transparent else "RGB")
            elif image.mode == "1":  # black and white, 1 bit per pixel
                image = image.convert("L")
            factor = min(image.size) // DECODE_SIZE
            if factor > 1:
                # The average of each factor x factor block (for RGBA, weighted by opacity, so
                # the hidden colour of transparent pixels does not bleed into the edges).
                image = image.reduce(factor)
            return convert(image, mode), description
    except FileNotFoundError:
        raise UserError(f"cannot read {path}: there is no such file.") from None
    except (IsADirectoryError, PermissionError):  # Windows says PermissionError for a folder
        if Path(path).is_dir():
            raise UserError(f"cannot read {path}: it is a folder, not an image file.") from None
        raise UserError(f"cannot read {path}: you do not have permission to read it.") from None
    except PIL.Image.DecompressionBombError:
        # Image.open refuses images of more than 2 x PIL.Image.MAX_IMAGE_PIXELS pixels (about
        # 179 million): a small file can claim a huge size and fill the memory when decoded.
        raise UserError(f"cannot read {path}: it has more pixels than Pillow agrees to open (a "
                        "protection against malicious files); make it smaller in an image "
                        "editor first.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        # PIL.UnidentifiedImageError (an OSError): no format Pillow knows; OSError, ValueError
        # and the others: a truncated or corrupt file, depending on the format.
        raise UserError(f"cannot read {path}: it is not an image that Pillow can read (PNG, "
                        "JPEG, BMP, GIF, TIFF, WebP, ...), or the file is damaged.") from None


# %% Where a script's images come from (03_data.load_split picks one) ----------------------------
# CIFAR-10's download, a folder of your own image files (train/ and test/, one subfolder per
# class), or FakeData's random images; each as uint8 tensors (N, 3, 32, 32).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32  # every image is fed to the network as 3 x 32 x 32


def data_source(data_dir, fake_data=False):
    """Which source the flags pick: "fake", "folder" (train/ and test/ inside --data-dir) or
    "cifar10" (downloaded into --data-dir)."""
    if fake_data:
        return "fake"
    has = [(Path(data_dir) / split).is_dir() for split in ("train", "test")]
    if all(has):
        return "folder"
    if any(has):  # half of a folder of your own images: say so, rather than try a download
        missing, present = ("test", "train") if has[0] else ("train", "test")
        raise UserError(f"{data_dir} has a {present}/ folder but no {missing}/ folder; "
                               "your own images need both, each with one subfolder per class.")
    return "cifar10"


def download_cifar10(data_dir, train):
    """CIFAR-10 through torchvision, downloading it (170 MB) the first time."""
    try:
        return datasets.CIFAR10(root=data_dir, train=train, download=True)
    except (OSError, RuntimeError, ValueError) as error:  # no network, a broken download, ...
        # A half-downloaded archive fails its checksum; remove it so the next try starts clean.
        partial = Path(data_dir) / "cifar-10-python.tar.gz"
        if partial.exists():
            partial.unlink()
        raise UserError(
            f"could not download CIFAR-10 into {data_dir} ({type(error).__name__}); connect to "
            "the internet and run again, or pass --data-dir with a folder of images (train/ and "
            "test/ with one subfolder per class), or try everything offline with --fake-data."
        ) from None


def shrink(image, size=IMAGE_SIZE):
    """A PIL image ("RGB" or "L") scaled so its shorter side is `size`, centre square kept, as a
    uint8 tensor (3 or 1, size, size): torchvision's Resize(size) + CenterCrop(size) with Pillow
    (each pixel within 1 of theirs). It cuts before it scales, so memory follows the output: a
    1 x 1,000,000 strip scaled first would become 32 x 32,000,000 pixels, nearly all thrown away.
    """
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"shrink takes RGB or L (grayscale) images, not {image.mode}; convert "
                         "it first (open_image reads any file as RGB)")
    # The size the whole image would be scaled to: the shorter side `size`, the longer one in
    # proportion, rounded down with int() as torchvision does.
    if image.width <= image.height:
        width, height = size, int(size * image.height / image.width)
    else:
        width, height = int(size * image.width / image.height), size
    # Its centre square, and the box of the original image that square comes from.
    left, top = round((width - size) / 2), round((height - size) / 2)
    x_scale, y_scale = image.width / width, image.height / height
    box = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
    # resize(box=...) scales only that box. Bilinear resampling averages neighbouring pixels, and
    # when Pillow shrinks an image it looks at all the pixels each new one covers, so fine detail
    # blurs rather than flickers.
    image = image.resize((size, size), PIL.Image.Resampling.BILINEAR, box=box)
    # PIL and NumPy store pixels as (height, width, channels), or (height, width) for one
    # channel; PyTorch puts the channels first.
    pixels = torch.from_numpy(np.array(image))
    return pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)


# Decoding CIFAR-10's 60,000 small JPEG files takes 7 to 23 s, every run. So read_image_folder
# keeps what it decoded in one file inside the folder, and the next run reads that back in about
# a second, as long as the folder still lists the same files in the same class folders, each of
# the same size and times of last change. Change, add or remove an image and the folder is
# decoded again. Delete the file to free its space (3 KB per image), or to decode again whatever
# happened; ImageFolder ignores it, as it ignores every file that is not in a class subfolder.
DECODED_NAME = f"decoded-{IMAGE_SIZE}x{IMAGE_SIZE}.pt"
DECODED_VERSION = 1  # raise it when open_image or shrink changes what an image becomes


def folder_fingerprint(folder, samples, classes):
    """A short hash of everything that decides what read_image_folder returns: every file's
    path within `folder`, size, times of last change and class; the class names; and how files
    are decoded (the settings above, Pillow's version)."""
    digest = hashlib.sha256(f"{DECODED_VERSION} {IMAGE_SIZE} {DECODE_SIZE} {MAX_ASPECT_RATIO} "
                            f"Pillow {PIL.__version__} {classes}".encode())
    for path, label in samples:
        info = os.stat(path)
        relative = os.path.relpath(path, folder)
        # st_mtime: when the content last changed, as the file says (copies may keep it);
        # st_ctime: when the file itself last changed here, which nothing can set back.
        digest.update(f"\n{relative}\t{info.st_size}\t{info.st_mtime_ns}\t{info.st_ctime_ns}"
                      f"\t{label}".encode())
    return digest.hexdigest()


def read_decoded(path, fingerprint):
    """The (images, labels) saved in `path` if it was made from a folder of this fingerprint;
    None if it is stale or unreadable (then the folder is decoded again), saying so."""
    try:
        saved = torch.load(path, weights_only=True)  # a dict of two tensors and a string
        if saved["fingerprint"] == fingerprint:
            return saved["images"], saved["labels"]
        why = ("no longer matches the folder (an image was added, removed or changed, or "
               "Pillow or the decoding settings were)")
    except Exception as error:  # cut short, or not ours: decoding again is always right
        why = f"could not be read ({type(error).__name__})"
    print(f"Decoding the images again: {path} {why}.")
    return None


def read_image_folder(folder):
    """Every image of an ImageFolder tree (one subfolder per class) as (images, labels, classes),
    each image shrunk to 32x32 as it is read, so memory grows with the number of images, not their
    pixels. open_image reads any format (08_predict.py reads your photos with it). What it
    decodes is kept in `folder`/DECODED_NAME for the next run (see above)."""
    try:
        # ImageFolder lists the files and names the classes (the subfolders, sorted).
        dataset = datasets.ImageFolder(folder)
        fingerprint = folder_fingerprint(folder, dataset.samples, dataset.classes)
    except (FileNotFoundError, OSError) as error:
        raise UserError(f"could not read images from {folder}: {error}") from None
    decoded_path = Path(folder) / DECODED_NAME
    decoded = read_decoded(decoded_path, fingerprint) if decoded_path.exists() else None
    if decoded is not None:
        return *decoded, tuple(dataset.classes)
    images, labels = [], []
    for path, label in dataset.samples:
        try:
            image, _ = open_image(path)
        except UserError as error:  # one sentence naming the file; say what to do
            raise UserError(f"{error} Remove or replace it, and run again.") from None
        images.append(shrink(image))
        labels.append(label)
    images, labels = torch.stack(images), torch.tensor(labels)
    saved = {"fingerprint": fingerprint, "images": images, "labels": labels}
    try:
        write_atomically(decoded_path, lambda file: torch.save(saved, file))
        print(f"Kept the {len(labels):,} decoded images in {decoded_path} "
              f"({images.numel() / 1e6:.0f} MB) for the next run.")
    except UserError as error:  # a read-only folder, a full disk: this run goes on regardless
        # write_atomically's UserError: "could not write PATH (why); what was kept. Advice."
        print(f"Note: {str(error).rsplit('; ', 1)[0]}, so the next run decodes the images "
              "again.")
    return images, labels, tuple(dataset.classes)


def read_fake_data(split):
    """FakeData's random images with random labels: 1,000 for "train", 200 for "test"."""
    size = 1000 if split == "train" else 200
    # FakeData makes image i from the random seed i + random_offset: another offset for the test
    # split gives other images than the training split.
    fake = datasets.FakeData(size=size, image_size=(3, IMAGE_SIZE, IMAGE_SIZE),
                             num_classes=len(CIFAR10_CLASSES),
                             random_offset=0 if split == "train" else 10**6)
    samples = [fake[i] for i in range(size)]  # (PIL image, label) pairs
    images = np.stack([np.asarray(image) for image, _ in samples])  # (N, 32, 32, 3)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # channels first
    return images, torch.tensor([int(label) for _, label in samples]), CIFAR10_CLASSES


def keep_classes(images, labels, classes, wanted):
    """Only the images of the classes named in `wanted` (--classes), relabelled 0, 1, 2, ... in
    the order the data lists them, so the same names always get the same numbers. Returns
    (images, labels, classes); a name the data does not have is a UserError."""
    unknown = [name for name in wanted if name not in classes]
    if unknown or len(set(wanted)) < 2:
        raise UserError(f"--classes needs two or more of the data's classes ({', '.join(classes)})"
                        + (f"; it has no {unknown[0]!r}." if unknown else "."))
    kept = [index for index, name in enumerate(classes) if name in wanted]
    new_label = torch.full((len(classes),), -1, dtype=torch.long)
    new_label[kept] = torch.arange(len(kept))
    labels = new_label[labels]
    chosen = labels >= 0
    return images[chosen], labels[chosen], tuple(classes[index] for index in kept)


# %% Checks of 03_data.py's in-memory pipeline ---------------------------------------------------
def check_batch(images, mean, std):
    """Refuse, for 03's normalize, what would be normalised wrongly: images that are not uint8 (a
    float batch was already scaled: dividing by 255 again leaves numbers near 0 that still train,
    badly and silently), and statistics for another number of channels (which would quietly
    broadcast one grey channel into three). Cheap: it reads shapes only, never values on a GPU."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}; images "
                        "that are already floats were scaled before and must not be again")
    mean_count, std_count = (torch.as_tensor(value).numel() for value in (mean, std))
    if mean_count != images.shape[1] or std_count != images.shape[1]:
        # (N, H, W, C), as image files and NumPy store pixels, is the usual cause.
        layout = (" (if they are (N, H, W, C), put the channels first: "
                  "images.permute(0, 3, 1, 2))" if images.shape[-1] == mean_count else "")
        raise ValueError(f"the images have {images.shape[1]} channels but mean and std have "
                         f"{mean_count} and {std_count} values{layout}")


def check_loader_arguments(images, labels, mean, std, padding=0):
    """Refuse, for 03's InMemoryLoader, what would train on wrong numbers or fail only at the
    first batch: images that are not uint8 (N, C, H, W) with one label each; statistics that are
    not C numbers each of pixels scaled to [0, 1] (a mean outside [0, 1] or a std above 1 was
    computed on the 0..255 scale, and would squash every input to nearly one value); and a crop
    `padding` (0 when not augmenting) not below the image's height and width. Returns (mean,
    std) as float32 tensors."""
    if images.dim() != 4 or len(labels) != len(images):
        raise ValueError("InMemoryLoader takes uint8 images (N, C, H, W) and one label per "
                         f"image; got {images.dtype} {tuple(images.shape)} and {len(labels)} "
                         "labels")
    check_batch(images, mean, std)  # uint8 (not already scaled), one mean and std per channel
    channels, height, width = images.shape[1:]
    mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std = torch.as_tensor(std, dtype=torch.float32).flatten()
    if not (len(mean) == len(std) == channels and (mean >= 0).all() and (mean <= 1).all()
            and (std > 0).all() and (std <= 1).all()):
        raise ValueError(f"the images have {channels} channel(s), so mean and std need "
                         f"{channels} value(s) each, of pixels scaled to [0, 1] (mean 0 to "
                         f"1, std above 0 and at most 1); got {mean.tolist()} and "
                         f"{std.tolist()}")
    if not 0 <= padding < min(height, width):
        raise ValueError(f"padding must be from 0 to {min(height, width) - 1} for "
                         f"{height}x{width} images, got {padding}")
    return mean, std
