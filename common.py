"""Helpers shared by the numbered scripts.

Only what two or more scripts need lives here, so that each lesson stays in its own file:
the model is defined in 04_model.py and the training loop in 05_train.py. You can follow every
lesson without opening this file; read it when you want to know how a helper works.

Sections: paths and classes, errors, command-line flags, device and seed, data, checkpoints.
"""

import argparse
import functools
import importlib
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

# %% Paths and classes ---------------------------------------------------------------------------
# Default paths are built from this file's folder, not from the current directory, so that
# `python path/to/05_train.py` finds the same files as `python 05_train.py`.
REPO_DIR = Path(__file__).resolve().parent
DATA_DIR = REPO_DIR / "data"  # CIFAR-10 is downloaded here
CHECKPOINT_DIR = REPO_DIR / "checkpoints"  # 05_train.py writes last.pt and best.pt here
OUTPUT_DIR = REPO_DIR / "outputs"  # figures (PNG) and the training history (JSON)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images, pixels scaled
# to [0, 1]. 03_data.py computes them from the images and prints them beside these constants.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGE_SIZE = 32  # every image is fed to the network as 3 x 32 x 32


# %% Errors --------------------------------------------------------------------------------------
class UserError(Exception):
    """A mistake the user can fix (a missing file, a wrong flag); the message says how."""


def exit_with_error(message):
    """Print one plain sentence to stderr and end the program with exit code 1.

    Args:
        message: what went wrong and what to do about it, as a sentence.
    """
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def run_main(main):
    """Call `main()`, turning a UserError into one sentence and Ctrl-C into a short notice.

    Args:
        main: the script's main function, called with no arguments.
    """
    try:
        main()
    except UserError as error:
        exit_with_error(str(error))
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the output went to a program that stopped reading, e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(1)


def section(title):
    """Print a banner line, so the output is as easy to find your way in as the code."""
    print(f"\n=== {title} " + "=" * max(3, 72 - len(title)), flush=True)


# %% Command-line flags --------------------------------------------------------------------------
def positive_int(text):
    """argparse type: an integer greater than zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def non_negative_int(text):
    """argparse type: an integer that is zero or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text):
    """argparse type: a finite number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def existing_dir(text):
    """argparse type: a folder that exists."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return path


def existing_file(text):
    """argparse type: a file that exists."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return path


def make_parser(description, batch_size=512):
    """An argument parser with the flags every data script shares; `--help` shows the defaults.

    Args:
        description: one line shown at the top of `--help`.
        batch_size: this script's default for `--batch-size`; None if the script picks one later.

    Returns:
        An argparse.ArgumentParser; the script adds its own flags and calls parse_args().
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data and hardware (shared by every script)")
    data.add_argument("--data-dir", type=existing_dir, default=DATA_DIR,
                      help="where CIFAR-10 is downloaded; a folder with train/ and test/ holding "
                           "one subfolder per class is read as your own images instead")
    data.add_argument("--fake-data", action="store_true",
                      help="use small random images (torchvision FakeData): the whole pipeline "
                           "in seconds, offline; accuracy means nothing")
    data.add_argument("--dry-run", action="store_true",
                      help="run one batch per phase, to check that everything works")
    data.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                      help="where to compute; auto picks CUDA, then Apple MPS, then the CPU")
    data.add_argument("--seed", type=int, default=0, help="random seed, for repeatable runs")
    data.add_argument("--workers", type=non_negative_int, default=0,
                      help="DataLoader worker processes (0 loads batches in the main process)")
    data.add_argument("--batch-size", type=positive_int, default=batch_size,
                      help="images per batch" + ("" if batch_size else " (default: %(default)s, "
                                                 "so the script chooses; see above)"))
    data.add_argument("--output-dir", type=Path, default=OUTPUT_DIR,
                      help="where figures and other outputs are written")
    return parser


# %% Device and seed -----------------------------------------------------------------------------
def get_device(name="auto"):
    """Choose where tensors and the model live.

    Args:
        name: "auto" (CUDA if there is an NVIDIA GPU, else Apple's MPS, else the CPU),
            or "cpu", "cuda" or "mps" to insist on one.

    Returns:
        A torch.device.

    Raises:
        UserError: the requested device is not available on this machine.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU; "
                        "use --device auto or --device cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but Apple's MPS is not available here; "
                        "use --device auto or --device cpu.")
    return torch.device(name)


def synchronize(device):
    """Wait until everything queued on `device` has finished, so that a timing includes it.

    CUDA and MPS run asynchronously: a call returns once the work is queued, not when it is done,
    so a clock read without waiting would time the queueing, not the computation.

    Args:
        device: a torch.device; on the CPU there is nothing to wait for.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed):
    """Seed Python's, NumPy's and PyTorch's random generators (on every device).

    Args:
        seed: any integer; the same seed gives the same random numbers.
    """
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


# %% Data ----------------------------------------------------------------------------------------
# The scripts keep each split in memory as one uint8 tensor of shape (N, 3, 32, 32): CIFAR-10 is
# 150 MB that way. 03_data.py explains why this is faster than decoding images batch by batch.
VALIDATION_SIZE = 5000  # images held out of CIFAR-10's 50,000 training images
SPLIT_SEED = 0  # fixed, so the validation images are the same in every run, whatever --seed is


def data_source(data_dir, fake_data=False):
    """Which source the flags pick: "fake", "folder" (train/ and test/ inside --data-dir) or
    "cifar10" (downloaded into --data-dir)."""
    if fake_data:
        return "fake"
    if (Path(data_dir) / "train").is_dir() and (Path(data_dir) / "test").is_dir():
        return "folder"
    return "cifar10"


def _hwc_to_tensor(array):
    """uint8 images (N, H, W, 3), as PIL and NumPy store them, to a tensor (N, 3, H, W)."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _download_cifar10(data_dir, train):
    """CIFAR-10 through torchvision, downloading it (170 MB) the first time."""
    from torchvision import datasets

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
    """Resize an RGB PIL image so its shorter side is `size`, crop the centre, make it a tensor.

    Args:
        image: an RGB PIL image of any size.
        size: the side of the square the network takes.

    Returns:
        A uint8 tensor (3, size, size): channels first, values from 0 to 255.
    """
    # The shorter side becomes `size`; the longer one keeps the proportions, rounded down with
    # int() as torchvision does.
    if image.width <= image.height:
        width, height = size, int(size * image.height / image.width)
    else:
        width, height = int(size * image.width / image.height), size
    # Bilinear resampling averages neighbouring pixels, and when Pillow shrinks an image it
    # looks at all the pixels each new one covers, so fine detail blurs rather than flickers.
    image = image.resize((width, height), PIL.Image.Resampling.BILINEAR)
    left = round((width - size) / 2)
    top = round((height - size) / 2)
    image = image.crop((left, top, left + size, top + size))
    # PIL and NumPy store pixels as (height, width, channels); PyTorch wants channels first.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def _read_image_folder(folder):
    """Decode every image of an ImageFolder tree (one subfolder per class), shrunk to 32x32."""
    from torchvision import datasets

    try:
        dataset = datasets.ImageFolder(folder)
    except (FileNotFoundError, OSError) as error:
        raise UserError(f"could not read images from {folder}: {error}") from None
    images, labels = [], []
    for path, label in dataset.samples:
        try:
            image = dataset.loader(path)
        except OSError:
            raise UserError(f"{path} is not an image that PIL can read; remove it.") from None
        images.append(shrink(image))  # the loader already converted it to RGB
        labels.append(label)
    return torch.stack(images), torch.tensor(labels), tuple(dataset.classes)


def load_split(data_dir, split, fake_data=False):
    """Load one split of the data into memory.

    Three sources, chosen by the flags: `--fake-data` (random images, offline); a `--data-dir`
    holding `train/` and `test/` folders with one subfolder per class (your own images, or the
    JPEG copy of CIFAR-10); otherwise CIFAR-10 itself, downloaded into `--data-dir`.

    Args:
        data_dir: the `--data-dir` folder.
        split: "train" (all 50,000 training images; see split_train_val) or "test".
        fake_data: use torchvision's FakeData instead of real images.

    Returns:
        (images, labels, classes): a uint8 tensor (N, 3, 32, 32), an int64 tensor (N,) of class
        indices, and the tuple of class names.

    Raises:
        UserError: the data cannot be downloaded or read.
    """
    data_dir = Path(data_dir)
    if fake_data:
        from torchvision import datasets

        size = 1000 if split == "train" else 200
        fake = datasets.FakeData(size=size, image_size=(3, IMAGE_SIZE, IMAGE_SIZE),
                                 num_classes=len(CIFAR10_CLASSES),
                                 random_offset=0 if split == "train" else 10**6)
        samples = [fake[i] for i in range(size)]  # (PIL image, label) pairs
        images = _hwc_to_tensor(np.stack([np.asarray(image) for image, _ in samples]))
        labels = torch.tensor([int(label) for _, label in samples])
        return images, labels, CIFAR10_CLASSES
    if data_source(data_dir) == "folder":
        return _read_image_folder(data_dir / split)
    dataset = _download_cifar10(data_dir, train=(split == "train"))
    return _hwc_to_tensor(dataset.data), torch.tensor(dataset.targets), CIFAR10_CLASSES


def split_train_val(num_images, val_size=VALIDATION_SIZE):
    """Shuffle the training indices once (with SPLIT_SEED) and hold out a validation set.

    Args:
        num_images: how many training images there are.
        val_size: how many to hold out; a tenth of the images if there are fewer than 5x that.

    Returns:
        (train_indices, val_indices), two int64 tensors that do not overlap.
    """
    if num_images < 5 * val_size:
        val_size = max(1, num_images // 10)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[val_size:], order[:val_size]


def channel_statistics(images, chunk_size=5000):
    """The mean and standard deviation of each colour channel over all pixels of all images.

    Args:
        images: a uint8 tensor (N, 3, H, W).
        chunk_size: how many images are converted to float at a time, to keep memory small.

    Returns:
        (mean, std), two tuples of 3 floats, for pixel values scaled to [0, 1].
    """
    # A chunk at a time, add up per channel the values and the squared values; then
    # mean = E[x] and std = sqrt(E[x^2] - E[x]^2). float64 keeps sums of 51 million pixels exact.
    total = torch.zeros(3, dtype=torch.float64)
    total_of_squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk_size):
        pixels = images[start:start + chunk_size].double() / 255  # [0, 1], as ToTensor makes them
        total += pixels.sum(dim=(0, 2, 3))  # sum over images, rows and columns: one per channel
        total_of_squares += (pixels ** 2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]  # pixels per channel
    mean = total / count
    std = (total_of_squares / count - mean ** 2).clamp(min=0).sqrt()  # clamp: rounding below 0
    return tuple(mean.tolist()), tuple(std.tolist())


class InMemoryDataset(Dataset):
    """A Dataset over images already in memory as one uint8 tensor.

    Indexing with a list of indices returns a whole batch in one tensor operation, which is what
    make_loader asks for. 03_data.py explains it.
    """

    def __init__(self, images, labels):
        self.images = images
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


def load_datasets(data_dir, fake_data=False):
    """The train, validation and test sets, each an InMemoryDataset.

    Args:
        data_dir: the `--data-dir` folder (see load_split).
        fake_data: use torchvision's FakeData instead of real images.

    Returns:
        (train_set, val_set, test_set, classes).
    """
    images, labels, classes = load_split(data_dir, "train", fake_data)
    train_indices, val_indices = split_train_val(len(labels))
    test_images, test_labels, _ = load_split(data_dir, "test", fake_data)
    return (InMemoryDataset(images[train_indices], labels[train_indices]),
            InMemoryDataset(images[val_indices], labels[val_indices]),
            InMemoryDataset(test_images, test_labels),
            classes)


def make_loader(dataset, batch_size, shuffle, device, workers=0):
    """A DataLoader that hands out whole batches of an InMemoryDataset.

    Args:
        dataset: an InMemoryDataset.
        batch_size: images per batch.
        shuffle: draw the images in a new random order each epoch (training) and drop the last,
            smaller batch; or keep the order and every image (evaluation).
        device: where the batches will go; on CUDA, batches are put in pinned memory.
        workers: DataLoader worker processes; 0 is fastest for data already in memory.

    Returns:
        A DataLoader yielding (uint8 images (B, 3, 32, 32), int64 labels (B,)).
    """
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    batches = BatchSampler(order, batch_size=batch_size,
                           drop_last=shuffle and len(dataset) > batch_size)
    # batch_size=None: the sampler already yields lists of indices, one list per batch.
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def normalize(images, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """uint8 images (B, 3, H, W) to float32, scaled to [0, 1], minus the mean, over the std.

    Args:
        images: a uint8 tensor, on any device.
        mean, std: per-channel statistics of the training images.

    Returns:
        A float32 tensor of the same shape, on the same device.
    """
    mean, std = _channel_tensors(images.device, tuple(mean), tuple(std))
    return (images.float() / 255 - mean) / std


@functools.lru_cache
def _channel_tensors(device, mean, std):
    """mean and std as (1, C, 1, 1) tensors on `device`, made once per device and not per batch:
    copying Python numbers to a GPU makes the CPU wait until the GPU has caught up."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
            torch.tensor(std, device=device).view(1, -1, 1, 1))


def augment(images, padding=4):
    """Random crop (after reflect padding) and random horizontal flip, a different one per image.

    This is torchvision's RandomCrop(32, padding, padding_mode="reflect") + RandomHorizontalFlip()
    done on a whole batch at once, on whatever device the batch is on. 03_data.py shows both.

    Args:
        images: a float tensor (B, C, H, W).
        padding: how many pixels an image may shift in each direction.

    Returns:
        A tensor of the same shape with the augmented images.
    """
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect")
    # Each image gets its own top-left corner for the crop, in [0, 2 * padding], and a coin flip.
    top = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1, 1), device=device)
    flip = torch.rand(batch, 1, 1, device=device) < 0.5
    # For every output pixel (row, column), the pixel of the padded image it is copied from.
    # A flipped image reads its columns right to left.
    rows = top + torch.arange(height, device=device).view(1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, width)
    columns = left + torch.where(flip, width - 1 - columns, columns)
    # One gather copies them all: positions are counted along each flattened padded image, and
    # every channel of an image uses the same positions (expand makes no copy).
    source = (rows * (width + 2 * padding) + columns).view(batch, 1, height * width)
    cropped = padded.flatten(2).gather(2, source.expand(batch, channels, height * width))
    return cropped.view(batch, channels, height, width)


# %% Model and checkpoints -----------------------------------------------------------------------
def model_module():
    """The module 04_model.py, where the network class is defined.

    A file name that starts with a digit cannot be imported with `import 04_model`, so it is
    loaded by name. Every script gets the one class defined there, never a copy.
    """
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    return importlib.import_module("04_model")


def save_checkpoint(checkpoint, path):
    """Save a checkpoint dict atomically: a crash mid-write never leaves a broken file at `path`.

    It is written to a temporary file in the same folder, then renamed over `path`; a rename
    within one folder is atomic, so `path` holds either the old checkpoint or the new one.

    Args:
        checkpoint: a dict of tensors, numbers, strings, lists and dicts.
        path: where to save it (a .pt file); its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, a folder without write permission, ...
        raise UserError(f"could not write {path} ({error.strerror or error}); free some disk "
                        "space or choose another folder. The previous file is unchanged.") from None
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path, device="cpu"):
    """Load a checkpoint safely, with `weights_only=True`.

    `torch.load` unpickles the file, and a pickle can run any code while it loads; weights_only
    only accepts tensors and plain Python values, so a crafted file is refused, not run.

    Args:
        path: a .pt file written by save_checkpoint.
        device: where to put its tensors.

    Returns:
        The checkpoint dict.

    Raises:
        UserError: the file is missing, truncated, corrupt, or holds something other than data.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"there is no checkpoint at {path}; train a model first with "
                        "`python 05_train.py`, or pass --checkpoint with the right file.")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds of errors for a damaged file
        if isinstance(error, pickle.UnpicklingError) and _is_pickle_or_torch_file(path):
            # A whole pickle that weights_only refused to run: it asks for more than tensors and
            # plain values (an object to import and call, say). Refused, not run.
            raise UserError(f"{path} holds more than weights and data (Python objects that "
                            "could run code when loaded), so it was refused; only load "
                            "checkpoints you trust and that this project wrote.") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                        f"{type(error).__name__}); train again with `python 05_train.py`."
                        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{path} is not a checkpoint written by 05_train.py.")
    return checkpoint


def _is_pickle_or_torch_file(path):
    """Whether a file starts like a torch.save archive (a zip) or a pickle (0x80, protocol 2-5)."""
    with open(path, "rb") as file:
        start = file.read(2)
    return zipfile.is_zipfile(path) or (len(start) == 2 and start[0] == 0x80 and 2 <= start[1] <= 5)


def model_from_checkpoint(checkpoint, device="cpu"):
    """Rebuild the network that a checkpoint was trained with and load its weights.

    Args:
        checkpoint: a dict from load_checkpoint; its "config" holds the model's settings.
        device: where to put the model.

    Returns:
        The model in eval mode, on `device`.

    Raises:
        UserError: the weights do not fit the model the config describes.
    """
    config = checkpoint["config"]
    model = model_module().build_model(**config["model"])
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError:
        raise UserError(f"the checkpoint's weights do not match the model it names "
                        f"({config['model']}); was it written by another version of "
                        "05_train.py? Train again.") from None
    return model.to(device).eval()
