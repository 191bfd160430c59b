"""03 Data: from image files to batches of tensors that a network can learn from.

What you will learn
    - How `torchvision.datasets.CIFAR10` gets the 60,000 CIFAR-10 images, and how the same code
      reads a folder of your own images (ImageFolder) or random stand-ins (FakeData).
    - Why images are normalised with the per-channel mean and standard deviation of the training
      images, computed here from the images themselves.
    - `transforms`: ToTensor and Normalize, plus random crops and flips for training only.
    - `Dataset`: the two methods every dataset has, in a small Dataset class of our own.
    - The validation split: images held out of the training set to choose models with, so that
      the test set is used once, at the very end.
    - `DataLoader`: batches, shuffling, worker processes, pinned memory, drop_last.
    - The fast pipeline that 05_train.py uses: the images kept in memory, and each batch
      normalised and augmented at once, on the GPU if there is one.
    - What the images look like: a grid of examples with their class names.

How to run it
    python 03_data.py                          # CIFAR-10, downloaded into data/ the first time
    python 03_data.py --fake-data              # random images, offline, in seconds
    python 03_data.py --data-dir my_images     # your own images: my_images/train/<class>/*.jpg
                                               # and my_images/test/<class>/*.jpg
    python 03_data.py --workers 2              # load the per-image pipeline in 2 processes
    python 03_data.py --help                   # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads CIFAR-10 (about 170 MB, downloaded into --data-dir the first time) or your images.
Writes outputs/data_samples.png (examples of every class) and outputs/data_augmentation.png
(images before and after random crops and flips), or into --output-dir. After the download it
takes under a minute on a laptop CPU; --fake-data takes seconds.

05_train.py, 06_evaluate.py and 08_predict.py import this file's data pipeline, so each cell
first defines what it teaches and then shows it in use under `if __name__ == "__main__":`.
That condition is true only when you run this file yourself: importing it (from 05_train.py, or
in a DataLoader worker process, section 7) runs the definitions and nothing else.
"""

# %% Setup ---------------------------------------------------------------------------------------
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import (BatchSampler, DataLoader, Dataset, RandomSampler,
                              SequentialSampler, TensorDataset)
from torchvision import datasets, transforms

import common
import image_files

if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (no internet, say): one sentence
    parser = common.make_data_parser(
        "Lesson 3: datasets, transforms and DataLoaders for CIFAR-10.",
        batch_size=256)  # 05_train.py's batch size for the small network
    parser.add_argument("--workers", type=common.non_negative_int, default=0,
                        help="DataLoader worker processes for the per-image pipeline (section 7); "
                             "0 loads batches in the main process")
    args = common.parse_args(parser)
    device = common.get_device(args.device)
    common.seed_everything(args.seed)  # the same seed gives the same crops, flips and batches
    lesson_start = time.perf_counter()


def numbers(values, digits=4):
    """Format floats as "0.1235, 0.5000, ..." (rounded, and never "-0.0000")."""
    return ", ".join(f"{round(value, digits) + 0.0:.{digits}f}" for value in values)


# %% 1. Loading the images ------------------------------------------------------------------------
# torchvision.datasets.CIFAR10(root, train=True, download=True) downloads CIFAR-10 once (a 170 MB
# archive, unpacked next to it) and hands out its 50,000 training images, or with train=False its
# 10,000 test images. It keeps them in memory as one NumPy array of shape (N, 32, 32, 3): height,
# width, channels, as image files store them. load_split below makes that call and returns the
# images as one uint8 tensor of shape (N, 3, 32, 32): channels first, PyTorch's convention for
# images, (N, C, H, W). The same function reads two other sources, so every script works with
# all three:
#   --data-dir with train/ and test/ folders, one subfolder per class: your own images, read with
#     torchvision.datasets.ImageFolder (the class names are the subfolder names), resized to 32x32;
#   --fake-data: torchvision.datasets.FakeData, random images with random labels, for trying the
#     code offline (1,000 training and 200 test images).
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
        raise common.UserError(f"{data_dir} has a {present}/ folder but no {missing}/ folder; "
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
        raise common.UserError(
            f"could not download CIFAR-10 into {data_dir} ({type(error).__name__}); connect to "
            "the internet and run again, or pass --data-dir with a folder of images (train/ and "
            "test/ with one subfolder per class), or try everything offline with --fake-data."
        ) from None


def shrink(image, size=IMAGE_SIZE):
    """Resize an RGB PIL image so its shorter side is `size`, crop the centre, make it a tensor.

    This is torchvision's Resize(size) followed by CenterCrop(size), written out with Pillow.

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


def channels_first(array):
    """uint8 images (N, H, W, 3), as PIL and NumPy store them, to a tensor (N, 3, H, W)."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def read_image_folder(folder):
    """Read every image of an ImageFolder tree (one subfolder per class), each shrunk to 32x32 at
    once, so memory grows with the number of images, not their pixels. image_files.open_image
    reads a file of any format (08_predict.py reads your photos with it too)."""
    try:
        # ImageFolder lists the files and names the classes (the subfolders, sorted).
        dataset = datasets.ImageFolder(folder)
    except (FileNotFoundError, OSError) as error:
        raise common.UserError(f"could not read images from {folder}: {error}") from None
    images, labels = [], []
    for path, label in dataset.samples:
        try:
            image, _ = image_files.open_image(path)
        except common.UserError as error:  # one sentence naming the file; say what to do
            raise common.UserError(f"{error} Remove or replace it, and run again.") from None
        images.append(shrink(image))
        labels.append(label)
    return torch.stack(images), torch.tensor(labels), tuple(dataset.classes)


def load_split(data_dir, split, fake_data=False):
    """Load one split of the data into memory.

    Three sources, chosen by the flags: `--fake-data` (random images, offline); a `--data-dir`
    holding `train/` and `test/` folders with one subfolder per class (your own images, or the
    JPEG copy of CIFAR-10); otherwise CIFAR-10 itself, downloaded into `--data-dir`.

    Args:
        data_dir: the `--data-dir` folder.
        split: "train" (all the training images; see section 6 for the validation part) or "test".
        fake_data: use torchvision's FakeData instead of real images.

    Returns:
        (images, labels, classes): a uint8 tensor (N, 3, 32, 32), an int64 tensor (N,) of class
        indices, and the tuple of class names.

    Raises:
        common.UserError: the data cannot be downloaded or read.
    """
    data_dir = Path(data_dir)
    source = data_source(data_dir, fake_data)
    if source == "fake":
        size = 1000 if split == "train" else 200
        # FakeData makes image i from the random seed i + random_offset: another offset for the
        # test split gives other images than the training split.
        fake = datasets.FakeData(size=size, image_size=(3, IMAGE_SIZE, IMAGE_SIZE),
                                 num_classes=len(CIFAR10_CLASSES),
                                 random_offset=0 if split == "train" else 10**6)
        samples = [fake[i] for i in range(size)]  # (PIL image, label) pairs
        images = channels_first(np.stack([np.asarray(image) for image, _ in samples]))
        labels = torch.tensor([int(label) for _, label in samples])
        return images, labels, CIFAR10_CLASSES
    if source == "folder":
        return read_image_folder(data_dir / split)
    dataset = download_cifar10(data_dir, train=(split == "train"))
    return channels_first(dataset.data), torch.tensor(dataset.targets), CIFAR10_CLASSES


if __name__ == "__main__":
    common.section("1. Loading the images")
    source = data_source(args.data_dir, args.fake_data)
    print("source:", {"cifar10": f"CIFAR-10 in {args.data_dir}",
                      "folder": f"your image folders in {args.data_dir}",
                      "fake": "FakeData (random images, random labels)"}[source])
    start = time.perf_counter()
    images, labels, classes = load_split(args.data_dir, "train", args.fake_data)
    test_images, _, _ = load_split(args.data_dir, "test", args.fake_data)
    print(f"loaded in {time.perf_counter() - start:.1f} s")
    if args.dry_run:  # a quick pass: the lesson goes on with the first 1,000 training images
        images, labels = images[:1000], labels[:1000]
    if len(images) < 2:
        raise common.UserError(f"found {len(images)} training image(s) in {args.data_dir}; at "
                               "least 2 are needed, one to train on and one to validate with.")
    print(f"training images: {len(images):,} | test images: {len(test_images):,} | "
          f"classes: {len(classes)}")
    print("classes:", ", ".join(classes))
    # Whole numbers from 0 (dark) to 255 (bright), one byte each: 3 x 32 x 32 = 3,072 bytes per
    # image. As float32, the type a network computes with, they would take four times as much.
    print(f"images: shape {tuple(images.shape)}, dtype {images.dtype}, values "
          f"{images.min().item()} to {images.max().item()}, "
          f"{images.numel() / 1e6:.0f} MB ({4 * images.numel() / 1e6:.0f} MB as float32)")
    print(f"labels: shape {tuple(labels.shape)}, dtype {labels.dtype}, first five "
          f"{labels[:5].tolist()} = {', '.join(classes[label] for label in labels[:5])}")
    # A label is the index of a class name. Classes of very different sizes would change how you
    # read accuracy; CIFAR-10 has exactly 5,000 training images of each class.
    print("training images per class:", torch.bincount(labels, minlength=len(classes)).tolist())


# %% 2. Per-channel mean and standard deviation ----------------------------------------------------
# A network learns fastest when its inputs are centred on 0 with a spread of about 1 in every
# channel: then no channel dominates the first layer just because its numbers are larger, and the
# starting weights (chosen for such inputs) give outputs of a sensible size. So each channel is
# shifted by its mean and divided by its standard deviation ("normalised").
# The statistics come from the training images only. The validation and test images stand for new
# images the model has never seen, so nothing about them may shape the training, not even an
# average; and every image, now or after deployment, is then normalised with these same numbers.

# CIFAR-10's own statistics, over the 50,000 training images with pixels scaled to [0, 1]. The
# cell below computes them from the images and prints them beside these constants.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def channel_statistics(images, chunk_size=5000):
    """The mean and standard deviation of each colour channel over all pixels of all images.

    Args:
        images: a uint8 tensor (N, C, H, W).
        chunk_size: how many images are converted to float at a time, to keep memory small
            (all 50,000 CIFAR-10 images as float64 would take 1.2 GB).

    Returns:
        (mean, std), two tuples of C floats, for pixel values scaled to [0, 1].
    """
    # A chunk at a time, add up per channel the values and the squared values; then
    # mean = E[x] and std = sqrt(E[x^2] - E[x]^2). float64 keeps sums of 51 million pixels accurate.
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_of_squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk_size):
        pixels = images[start:start + chunk_size].double() / 255  # [0, 1], as ToTensor makes them
        total += pixels.sum(dim=(0, 2, 3))  # sum over images, rows and columns: one per channel
        total_of_squares += (pixels ** 2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]  # pixels per channel
    mean = total / count
    std = (total_of_squares / count - mean ** 2).clamp(min=0).sqrt()  # clamp: rounding below 0
    return tuple(mean.tolist()), tuple(std.tolist())


def normalization_statistics(images, data_dir, fake_data=False):
    """The per-channel (mean, std) to normalise with: CIFAR-10's constants for CIFAR-10, and for
    any other images (a folder of your own, FakeData) those of the training images themselves.

    Args:
        images: the uint8 training images (N, C, H, W).
        data_dir, fake_data: the flags that chose the data (see data_source).
    """
    if data_source(data_dir, fake_data) == "cifar10":
        return CIFAR10_MEAN, CIFAR10_STD
    mean, std = channel_statistics(images)
    # A channel that is the same in every image (all images grey, say) has std 0, and dividing
    # by 0 would make every input NaN. It carries no information either way; dividing by one
    # pixel step (1/255) instead leaves it at 0 after the mean is taken away.
    return mean, tuple(max(value, 1 / 255) for value in std)


if __name__ == "__main__":
    common.section("2. Per-channel mean and standard deviation")
    mean, std = channel_statistics(images)
    print(f"{len(images):,} training images, per channel (red, green, blue), pixels in [0, 1]:")
    print("  mean computed here:", numbers(mean))
    print("  CIFAR10_MEAN:      ", numbers(CIFAR10_MEAN))
    print("  std computed here: ", numbers(std))
    print("  CIFAR10_STD:       ", numbers(CIFAR10_STD))
    # Many tutorials use std (0.2023, 0.1994, 0.2010) for CIFAR-10. That is the average of each
    # image's own standard deviation, a smaller number that ignores how much images differ from
    # each other; the spread of the pixels that the network sees is the std over all pixels.
    per_image = torch.cat([(images[start:start + 5000].double() / 255).std(dim=(2, 3))
                           for start in range(0, len(images), 5000)]).mean(dim=0)
    print("  average of each image's own std:", numbers(per_image.tolist()),
          "(a different quantity)")
    if source == "cifar10":
        print("These are CIFAR-10's own statistics, the constants above.")
    else:
        # The JPEG copy of CIFAR-10 lands within about 0.002 of the constants; random or other
        # images give their own numbers, which is the point: use the statistics of your data.
        print("These images are not the original CIFAR-10 files, so their statistics can differ "
              "from the constants;\nfor your own data, normalise with the numbers computed here "
              "(05_train.py does).")


# %% 3. Transforms ---------------------------------------------------------------------------------
# A transform is a function applied to one image each time the image is loaded, and Compose chains
# several into one. Training adds randomness, evaluation must not. Why random crops and flips?
# They make many slightly different versions of every training image, so the network has to learn
# what a cat looks like rather than memorise the exact training pictures ("overfitting").
AUGMENT_PADDING = 4  # random crops shift an image by up to 4 pixels in each direction


def make_transforms(mean, std):
    """The training and evaluation transforms, torchvision's standard way.

    Returns:
        (train_transform, eval_transform), each taking a PIL image and giving a float tensor.
    """
    train_transform = transforms.Compose([
        # Pad the image by 4 pixels on every side (mirroring the border pixels: "reflect"), then
        # cut a random 32x32 window out of the 40x40 result: the image shifts by up to 4 pixels.
        transforms.RandomCrop(IMAGE_SIZE, padding=AUGMENT_PADDING, padding_mode="reflect"),
        # Mirror the image left-right with probability 0.5: a car facing left is still a car.
        # (Not for every dataset: a mirrored digit or letter is a different symbol.)
        transforms.RandomHorizontalFlip(),
        # PIL image (H, W, C) of bytes 0..255 -> float32 tensor (C, H, W) of values in [0, 1].
        transforms.ToTensor(),
        # (value - mean) / std per channel, with the statistics of section 2.
        transforms.Normalize(mean, std),
    ])
    # Evaluation (validation, test, prediction) sees every image exactly as it is, every time:
    # the same image must always get the same prediction, and accuracies must be comparable.
    eval_transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    # (torchvision.transforms.v2 is the newer version of this module, with the same classes;
    # there, ToTensor() is written v2.ToImage() followed by v2.ToDtype(torch.float32, scale=True).)
    return train_transform, eval_transform


def to_pil(image):
    """A uint8 tensor (3, H, W) as a PIL image, the format torchvision's transforms start from."""
    # PIL stores height x width x channels; PyTorch stores channels first (see 01_tensors.py).
    return PIL.Image.fromarray(image.permute(1, 2, 0).numpy())


if __name__ == "__main__":
    common.section("3. Transforms: ToTensor, Normalize, and augmentation for training only")
    train_transform, eval_transform = make_transforms(mean, std)
    image = to_pil(images[0])
    print(f"a PIL image: size {image.size}, mode {image.mode}")
    tensor = transforms.ToTensor()(image)
    print(f"after ToTensor: shape {tuple(tensor.shape)}, dtype {tensor.dtype}, "
          f"values {tensor.min().item():.3f} to {tensor.max().item():.3f}")
    normalised = eval_transform(image)
    print(f"after Normalize: dtype {normalised.dtype}, values {normalised.min().item():.3f} to "
          f"{normalised.max().item():.3f}, mean {normalised.mean().item():.3f} (it was "
          f"{tensor.mean().item():.3f})")
    print("eval_transform twice gives the same tensor:",
          torch.equal(eval_transform(image), eval_transform(image)))
    draws = [train_transform(image) for _ in range(5)]
    distinct = len({tuple(draw.flatten().tolist()) for draw in draws})
    print(f"train_transform 5 times gives {distinct} different tensors "
          "(a random shift of up to 4 pixels, flipped half the time)")


# %% 4. torchvision's datasets, with a transform ---------------------------------------------------
# Every torchvision dataset takes a `transform` and applies it in dataset[i], to the one image
# asked for. The images themselves stay as they are on disk or in memory.
if __name__ == "__main__":
    common.section("4. torchvision's datasets, with transform=")
    if source == "cifar10":
        # load_split already downloaded it, so download=False only reads the files.
        dataset = datasets.CIFAR10(root=args.data_dir, train=True, download=False,
                                   transform=train_transform)
    elif source == "folder":
        # Your images can have any size, so they are first scaled (shorter side to 32 pixels)
        # and cut to the 32x32 square in their centre. loader= says how to read one file: here
        # image_files.open_image, which reads any format as RGB (08_predict.py explains it).
        dataset = datasets.ImageFolder(
            args.data_dir / "train", loader=lambda path: image_files.open_image(path)[0],
            transform=transforms.Compose([transforms.Resize(IMAGE_SIZE),
                                          transforms.CenterCrop(IMAGE_SIZE), train_transform]))
    else:
        dataset = datasets.FakeData(size=1000, image_size=(3, IMAGE_SIZE, IMAGE_SIZE),
                                    num_classes=len(CIFAR10_CLASSES), transform=train_transform)
    print(f"{type(dataset).__name__}(..., transform=train_transform): {len(dataset):,} images")
    image, label = dataset[0]  # a dataset is indexed like a list: one (image, label) pair
    print(f"dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; "
          f"label {label} ({type(label).__name__})")


# %% 5. A Dataset of our own ----------------------------------------------------------------------
# A Dataset is any object with __len__ (how many samples) and __getitem__ (sample number i).
# You write one when your data does not come in a shape torchvision knows: say, all images in one
# folder with their labels in a CSV file. Then __init__ reads the CSV into a list of (file name,
# label) pairs, and __getitem__ opens file number i (with image_files.open_image, say) and
# applies the transform. Reading each file only when it is asked for means the dataset can be far
# larger than your memory. Ours keeps images in memory, which lets us give the training and
# validation parts of one set different transforms (section 6).
class ImageDataset(Dataset):
    """Images held in memory, handed out one at a time as (transformed image, label).

    This is what torchvision.datasets.CIFAR10 does inside: it keeps every image as an array of
    bytes and, when asked for one, makes a PIL image of it and applies the transform.

    Args:
        images: a uint8 tensor (N, 3, H, W).
        labels: an int64 tensor (N,) of class indices.
        transform: applied to each PIL image as it is handed out (None hands out PIL images).
    """

    def __init__(self, images, labels, transform=None):
        # Convert once to what PIL wants, (N, H, W, 3) bytes, rather than in every __getitem__.
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()  # plain ints; the DataLoader turns a batch of them into int64
        self.transform = transform

    def __len__(self):
        # How many samples there are. The DataLoader uses it to know when an epoch ends.
        return len(self.labels)

    def __getitem__(self, index):
        # Sample number `index`, a fresh random version of it each time for the training set.
        image = PIL.Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


if __name__ == "__main__":
    common.section("5. A Dataset of our own: __len__ and __getitem__")
    dataset = ImageDataset(images, labels, train_transform)
    print("len(dataset):", len(dataset))
    image, label = dataset[0]  # Python turns dataset[0] into dataset.__getitem__(0)
    print(f"dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; label {label}")


# %% 6. The validation split ----------------------------------------------------------------------
# Training runs many choices: how many epochs, which learning rate, which checkpoint to keep. Each
# choice is made by looking at accuracy on images the model has not trained on. If that were the
# test set, the test set would slowly be tuned to, and its accuracy would no longer tell you how
# the model does on new images. So we hold out part of the training set for these choices (the
# validation set) and use the test set once, at the very end (06_evaluate.py).
VALIDATION_SIZE = 5000  # images held out of CIFAR-10's 50,000 training images
# The split uses its own fixed seed, not --seed: every run and every script holds out the same
# images, so validation accuracies can be compared across runs and a resumed run never trains on
# images it used to validate on.
SPLIT_SEED = 0


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


class Split(NamedTuple):
    """One part of the data in memory: uint8 images (N, 3, 32, 32) and int64 labels (N,).

    A NamedTuple is a tuple whose parts also have names: split.images is split[0]."""
    images: torch.Tensor
    labels: torch.Tensor


def load_train_and_val(data_dir, fake_data=False):
    """The training images of `data_dir`, split into a training and a validation part.

    Returns:
        (train, val, classes): two Splits and the tuple of class names.

    Raises:
        common.UserError: the data cannot be read, or there are fewer than 2 images.
    """
    images, labels, classes = load_split(data_dir, "train", fake_data)
    if len(images) < 2:
        raise common.UserError(f"found {len(images)} training image(s) in {data_dir}; at least "
                               "2 are needed, one to train on and one to validate with.")
    train_indices, val_indices = split_train_val(len(labels))
    return (Split(images[train_indices], labels[train_indices]),
            Split(images[val_indices], labels[val_indices]), classes)


if __name__ == "__main__":
    common.section("6. The validation split")
    train_indices, val_indices = split_train_val(len(labels))
    print(f"{len(labels):,} training images -> {len(train_indices):,} for training + "
          f"{len(val_indices):,} for validation")
    print("images in both parts:", torch.isin(train_indices, val_indices).sum().item())
    again_train, again_val = split_train_val(len(labels))
    print("the same split on a second call:",
          torch.equal(train_indices, again_train) and torch.equal(val_indices, again_val))
    # The split draws images at random, whatever their class; with 5,000 images drawn, each
    # class still ends up with about its share:
    counts = torch.bincount(labels[val_indices], minlength=len(classes)).tolist()
    print("validation images per class:", counts)
    # Each part gets its own transform: random crops and flips for training, none for validation.
    # (torch.utils.data.Subset(dataset, indices) would cut one torchvision dataset in two, but
    # both parts would share that dataset's one transform: the validation images would be
    # augmented too, a common mistake.)
    train_dataset = ImageDataset(images[train_indices], labels[train_indices], train_transform)
    val_dataset = ImageDataset(images[val_indices], labels[val_indices], eval_transform)
    print(f"train_dataset: {len(train_dataset):,} images | val_dataset: {len(val_dataset):,}")


# %% 7. DataLoader --------------------------------------------------------------------------------
# A network learns from a batch of images at a time: one image gives a noisy gradient, all 45,000
# at once would not fit and would give one update per epoch. The DataLoader asks the dataset for
# batch_size samples and stacks them into one tensor ("collate").
# - shuffle=True draws the samples in a new random order every epoch, so every batch is a mix of
#   classes and the model cannot learn anything from the order. (Files sorted by class would
#   otherwise give batches of only airplanes, then only cars...) Evaluation only measures, so the
#   order does not matter there: shuffle=False keeps it the same every time.
# - num_workers: how many extra processes load batches while the main one trains. With 0, the
#   main process loads each batch itself and training waits for it. Workers pay off when loading
#   is slow (decoding files, per-image transforms). On Windows and macOS, and on Linux from Python
#   3.14, each worker starts a fresh Python that imports this file first (the "spawn" and
#   "forkserver" start methods; older Pythons on Linux copy the running program instead, "fork").
#   That is why the lesson code here sits under `if __name__ == "__main__":`: otherwise each worker
#   would run the whole lesson again and start workers of its own, and Python stops with "An
#   attempt has been made to start a new process before the current process has finished its
#   bootstrapping phase". Write the guard even where "fork" lets you forget it: others run your
#   code too. persistent_workers=True keeps the workers alive from one epoch to the next, instead
#   of starting them again at every epoch (it needs at least one worker).
# - pin_memory=True puts each batch in "page-locked" memory: memory the operating system promises
#   never to move, which the GPU can copy from directly and in the background (with
#   .to(device, non_blocking=True)). Only CUDA uses it.
# - drop_last=True drops the last, smaller batch of each epoch, so every training step sees a full
#   batch: a last batch of a few images gives a noisy step, and batch-norm (04_model.py, which
#   normalises with the statistics of the batch) gets poor statistics from it. We keep it off
#   when the whole set is smaller than one batch: it would drop everything. Evaluation must see
#   every image, so there drop_last stays False.
if __name__ == "__main__":
    common.section("7. DataLoader: batches, shuffling, workers, pinned memory")
    pin_memory = device.type == "cuda"
    persistent = args.workers > 0
    train_loader = DataLoader(train_dataset, batch_size=args.batch_size, shuffle=True,
                              num_workers=args.workers, persistent_workers=persistent,
                              pin_memory=pin_memory, drop_last=len(train_dataset) > args.batch_size)
    val_loader = DataLoader(val_dataset, batch_size=args.batch_size, shuffle=False,
                            num_workers=args.workers, persistent_workers=persistent,
                            pin_memory=pin_memory)
    print(f"batch size {args.batch_size}, {args.workers} worker processes, pin_memory {pin_memory}")
    print(f"batches per epoch: train_loader {len(train_loader)} (shuffle=True, "
          f"drop_last={train_loader.drop_last}), val_loader {len(val_loader)} (shuffle=False, "
          "drop_last=False)")
    batch, batch_labels = next(iter(train_loader))  # one batch, the way a for loop gets it
    print(f"one training batch: images {tuple(batch.shape)} {batch.dtype}, "
          f"labels {tuple(batch_labels.shape)} {batch_labels.dtype}")
    batch = batch.to(device, non_blocking=pin_memory)  # what the training loop does next
    print(f"moved to {device}: images on {batch.device}")


# %% 8. The fast pipeline that 05_train.py uses ----------------------------------------------------
# The pipeline of sections 3-7 does about ten small steps per image (make a PIL image, pad, crop,
# flip, convert, normalise, then stack a batch of them). For images of 32x32 pixels the time goes
# into that bookkeeping, not into the pixels, and on a GPU the network waits for the CPU.
# CIFAR-10 fits in memory easily (150 MB as bytes), so 05_train.py does each step once per batch
# instead, as one tensor operation on the whole batch, on the device:
#   - the images stay in memory as one uint8 tensor, and a BatchSampler hands the DataLoader a
#     whole list of indices at once, so a batch is one indexing operation, not one __getitem__
#     per image. (A BatchSampler takes a "sampler", which says in which order to visit the
#     images: RandomSampler shuffled, SequentialSampler in order; shuffle=True in section 7 made
#     a RandomSampler for you. It groups that order into lists of batch_size indices.)
#   - the batch goes to the device as bytes, 4 times less to copy than float32;
#   - normalize and random_crop_and_flip then work on the whole batch there.
# The same kind of images comes out (tests/ check every crop and flip against torchvision's), and
# much faster: `python benchmarks/benchmark.py` times both pipelines (its rows 1a and 1b). For
# datasets that do not fit in memory
# (ImageNet is 140 GB), use the pipeline of sections 3-7 with workers: it reads each file only
# when it is needed.
def normalize(images, mean, std):
    """uint8 images (B, C, H, W) to float32, scaled to [0, 1], minus the mean, over the std.

    This is ToTensor's scaling and Normalize for a whole batch at once.

    Args:
        images: a uint8 tensor (values 0..255), on any device.
        mean, std: the per-channel statistics of the training images (section 2), one number per
            channel: a sequence, or a tensor on the images' device.

    Returns:
        A float32 tensor of the same shape, on the same device.
    """
    # Loud checks: a float batch was already scaled (dividing by 255 again leaves numbers near 0
    # that still train, badly and silently), and statistics for another number of channels would
    # quietly broadcast one grey channel into three.
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {images.dtype}; images "
                        "that are already floats were scaled before and must not be again")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"the images have {images.shape[1]} channels but mean and std have "
                         f"{mean.shape[1]} and {std.shape[1]} values")
    return (images.float() / 255 - mean) / std


def random_crop_and_flip(images, padding=AUGMENT_PADDING):
    """Random crop (after reflect padding) and random horizontal flip, a different one per image.

    The same as RandomCrop(size, padding, padding_mode="reflect") + RandomHorizontalFlip() of
    section 3, done for a whole batch at once, on whatever device the batch is on. (The tests
    check that every output is one of the crops and flips torchvision could have made.)

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


def prepare_batch(images, device, mean, std, augment=False):
    """A batch of uint8 images made ready for the network: on `device`, normalised, augmented
    if asked, and in the channels_last memory layout.

    Every script that feeds the network goes through here (training, validation, 06's test set,
    08's image files), so they all see exactly the same kind of input.
    """
    images = normalize(images.to(device, non_blocking=True), mean, std)
    if augment:
        images = random_crop_and_flip(images)
    # channels_last stores each pixel's channels next to each other, the layout the fast
    # convolution kernels of CPUs and recent GPUs prefer. The numbers are the same; only their
    # order in memory changes.
    return images.contiguous(memory_format=torch.channels_last)


class InMemoryLoader:
    """Batches of images kept in memory, ready for the network.

    Iterating gives (images, labels) like a DataLoader does, but the images are already float32,
    normalised, augmented (if asked), on `device` and channels_last, and the labels are on
    `device` too.

    Args:
        images: a uint8 tensor (N, C, H, W), 0..255.
        labels: an int64 tensor (N,) of class indices.
        batch_size: images per batch.
        device: where the batches go ("cpu", "cuda", a torch.device, ...).
        mean, std: per-channel statistics of the training images, for normalize.
        shuffle: a new random order every epoch, and the last, smaller batch dropped (training);
            or the same order every time and every image (evaluation).
        augment: a random crop and flip per image (training only).
    """

    def __init__(self, images, labels, batch_size, device, mean, std, shuffle=False,
                 augment=False):
        self.device = torch.device(device)
        self.augment = augment
        # The statistics as tensors on the device, made once: copying Python numbers to a GPU
        # for every batch would make the CPU wait until the GPU has caught up.
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        # TensorDataset(images, labels)[indices] indexes both tensors at once; with a list of
        # indices that is a whole batch in one operation. The BatchSampler hands out such lists
        # (shuffled or in order), so the DataLoader is given batch_size=None: the batches are
        # made already. No worker processes: taking a batch out of memory is one indexing
        # operation, quicker than a worker could hand the batch over to this process.
        dataset = TensorDataset(images, labels)
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        batches = BatchSampler(order, batch_size, drop_last=shuffle and len(dataset) > batch_size)
        self.loader = DataLoader(dataset, sampler=batches, batch_size=None,
                                 pin_memory=self.device.type == "cuda")

    def __len__(self):
        return len(self.loader)  # batches per epoch

    def __iter__(self):
        for images, labels in self.loader:
            images = prepare_batch(images, self.device, self.mean, self.std, self.augment)
            yield images, labels.to(self.device, non_blocking=True)


if __name__ == "__main__":
    common.section("8. The fast pipeline that 05_train.py uses")
    fast_loader = InMemoryLoader(images[train_indices], labels[train_indices], args.batch_size,
                                 device, mean, std, shuffle=True, augment=True)
    batch, batch_labels = next(iter(fast_loader))
    print(f"InMemoryLoader: {len(fast_loader)} batch(es) per epoch; one batch: images "
          f"{tuple(batch.shape)} {batch.dtype} on {batch.device}, labels "
          f"{tuple(batch_labels.shape)} {batch_labels.dtype}")
    # Normalised: about mean 0 and std 1 per channel, as with transforms.Normalize.
    print(f"per-channel mean {numbers(batch.mean(dim=(0, 2, 3)).tolist(), 2)}, std "
          f"{numbers(batch.std(dim=(0, 2, 3)).tolist(), 2)}; channels_last: "
          f"{batch.is_contiguous(memory_format=torch.channels_last)}")
    # Evaluation: the same numbers as eval_transform gives image by image (up to float rounding).
    sample = images[train_indices[:8]]
    by_torchvision = torch.stack([eval_transform(to_pil(image)) for image in sample])
    by_batch = prepare_batch(sample, "cpu", mean, std)
    print(f"prepare_batch vs eval_transform, 8 images: largest difference "
          f"{(by_batch - by_torchvision).abs().max().item():.1e}")
    # The loud check in normalize: a batch that is already float (e.g. from ToTensor) is refused
    # rather than scaled twice.
    try:
        normalize(sample.float() / 255, mean, std)
    except TypeError as error:
        print("normalize on float images:", error)


# %% 9. A look at the images ----------------------------------------------------------------------
# Always look at your data before training on it: wrong labels, rotated photos, or images that are
# mostly border show up at a glance, and no accuracy figure will tell you. The grids show the images
# as they are (bytes 0..255), not normalised: normalised values go below 0 and above 1, which a
# picture cannot show. (figures.py does the drawing; torchvision.utils.make_grid pastes a batch of
# images into one.)
if __name__ == "__main__":
    import figures

    common.section("9. A look at the images")
    train_images, train_labels = images[train_indices], labels[train_indices]
    per_class = 8
    shown = range(min(len(classes), 10))  # a dataset with more classes shows its first ten
    # One row per class: the first 8 training images of that class (white where there are fewer).
    tiles = torch.full((len(shown), per_class, *images.shape[1:]), 255, dtype=torch.uint8)
    for row, class_index in enumerate(shown):
        of_class = (train_labels == class_index).nonzero().flatten()[:per_class]
        tiles[row, :len(of_class)] = train_images[of_class]
    samples_path = args.output_dir / "data_samples.png"
    figures.save_image_grid(tiles, [classes[index] for index in shown],
                            "Training images, by class", samples_path)
    print("training images by class:", samples_path)

    # Eight images (top row), then three random crops and flips of each, as 05_train.py makes them.
    originals = train_images[:8].float() / 255  # floats in [0, 1], so the picture shows them as is
    rows = [originals] + [random_crop_and_flip(originals) for _ in range(3)]
    augmentation_path = args.output_dir / "data_augmentation.png"
    figures.save_image_grid(torch.stack(rows), ["original"] + [f"augmented {n}" for n in (1, 2, 3)],
                            "Random crops (reflect padding 4) and flips, as in 05_train.py",
                            augmentation_path)
    print("originals and augmented versions:", augmentation_path)

    print(f"\nFinished in {time.perf_counter() - lesson_start:.0f} s.")
    print("Next, 04_model.py: the network that these batches are fed to.")
