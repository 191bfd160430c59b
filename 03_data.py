"""03 Data: from image files to batches of tensors that a network can learn from.

What you will learn
    - How `torchvision.datasets.CIFAR10` gets the 60,000 CIFAR-10 images, and how the same code
      reads a folder of your own images (ImageFolder) or random stand-ins (FakeData).
    - The validation split: images held out of the training set to choose models with, so that
      the test set is used once, at the very end.
    - Why images are normalised with the per-channel mean and standard deviation of the training
      images, computed here from the images themselves.
    - `transforms`: ToTensor and Normalize, plus random crops and flips for training only.
    - `Dataset`: the two methods every dataset has, in a small Dataset class of our own.
    - `DataLoader`: batches, shuffling, worker processes, pinned memory, drop_last.
    - The fast pipeline that 05_train.py uses: the images kept in memory, and each batch
      normalised and augmented at once, on the GPU if there is one.
    - What the images look like: a grid of examples with their class names.

How to run it (or one `# %%` cell at a time, in VS Code or Jupyter)
    python 03_data.py                          # CIFAR-10, downloaded into data/ the first time
    python 03_data.py --fake-data              # random images, offline, in seconds
    python 03_data.py --data-dir my_images     # your images: my_images/{train,test}/<class>/*.jpg
    python 03_data.py --workers 2              # load the per-image pipeline in 2 processes

Reads CIFAR-10 (170 MB, downloaded into --data-dir the first time) or your images. Writes
outputs/data_samples.png (examples of every class) and outputs/data_augmentation.png (random
crops and flips), or into --output-dir. After the download it takes under a minute on a laptop.

05_train.py, 06_evaluate.py and 08_predict.py import this file's data pipeline, so each cell
first defines what it teaches, then shows it in use under `if __name__ == "__main__":`, which is
true only when you run this file yourself (section 7 says why that matters).
"""

# %% Setup ---------------------------------------------------------------------------------------
import time
from pathlib import Path
from typing import NamedTuple

import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

import common
from common import numbers  # "0.1235, 0.5000, ...": floats printed alike
# Plumbing, in image_files.py: where the images come from (CIFAR-10's download, a folder of image
# files of any format and size, FakeData's random images), used by load_split in section 1; and
# the checks that make section 8's pipeline refuse wrong inputs in one sentence.
from image_files import (CIFAR10_CLASSES, IMAGE_SIZE, check_batch, check_loader_arguments,
                         data_source, download_cifar10, keep_classes, open_image,
                         read_fake_data, read_image_folder)

# Plumbing, safe to skip: plain error messages, the command-line flags, the device and the seed.
if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (no internet, say): one sentence
    parser = common.make_data_parser(
        "Lesson 3: datasets, transforms and DataLoaders for CIFAR-10.",
        batch_size=256)  # 05_train.py's batch size for the small network
    parser.add_argument("--workers", type=common.worker_count, default=0,
                        help="DataLoader worker processes for the per-image pipeline (section 7); "
                             "0 loads batches in the main process")
    args = common.parse_args(parser)
    device = common.get_device(args.device)
    common.seed_everything(args.seed)  # the same seed gives the same crops, flips and batches
    lesson_start = time.perf_counter()


# %% 1. Loading the images ------------------------------------------------------------------------
# torchvision.datasets.CIFAR10(root, train=True, download=True) downloads CIFAR-10 once (a 170 MB
# archive) and hands out its 50,000 training images (train=False: its 10,000 test images) as one
# NumPy array (N, 32, 32, 3): height, width, channels, as image files store them. load_split makes
# that call and returns one uint8 tensor (N, 3, 32, 32): channels first, PyTorch's convention for
# images, (N, C, H, W). It also reads --data-dir folders of your own images (train/ and test/, one
# subfolder per class, read with torchvision.datasets.ImageFolder and shrunk to 32x32) and
# --fake-data (FakeData: 1,000 training and 200 test images of random pixels and labels).
def load_split(data_dir, split, fake_data=False, classes=None):
    """The "train" or "test" split, as (images, labels, class names): uint8 (N, 3, 32, 32) and
    int64 class indices (N,), of only `classes` if given (--classes). Raises common.UserError if
    the data cannot be read, or if the training split has fewer than 2 images."""
    source = data_source(data_dir, fake_data)
    if source == "fake":
        images, labels, found = read_fake_data(split)
    elif source == "folder":
        images, labels, found = read_image_folder(Path(data_dir) / split)
    else:
        dataset = download_cifar10(data_dir, train=(split == "train"))
        # A NumPy array (N, 32, 32, 3), as image files store pixels: to a tensor (N, 3, 32, 32).
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels, found = torch.tensor(dataset.targets), CIFAR10_CLASSES
    if classes:
        images, labels, found = keep_classes(images, labels, found, classes)
    if split == "train" and len(images) < 2:
        raise common.UserError(f"found {len(images)} training image(s) in {data_dir}; at least "
                               "2 are needed, one to train on and one to validate with.")
    return images, labels, found


if __name__ == "__main__":
    common.section("1. Loading the images")
    source = data_source(args.data_dir, args.fake_data)
    print("source:", {"cifar10": f"CIFAR-10 in {args.data_dir}",
                      "folder": f"your image folders in {args.data_dir}",
                      "fake": "FakeData (random images, random labels)"}[source])
    start = time.perf_counter()
    images, labels, classes = load_split(args.data_dir, "train", args.fake_data, args.classes)
    test_images, _, _ = load_split(args.data_dir, "test", args.fake_data, args.classes)
    print(f"loaded in {time.perf_counter() - start:.1f} s")
    if args.dry_run:  # a quick pass: the lesson goes on with the first 1,000 training images
        images, labels = images[:1000], labels[:1000]
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


# %% 2. The validation split ----------------------------------------------------------------------
# Training runs many choices: how many epochs, which learning rate, which checkpoint to keep, each
# made by looking at accuracy on images the model has not trained on. If those were the test
# images, the test set would slowly be tuned to, and its accuracy would no longer tell you how the
# model does on new images. So we hold out part of the training set for these choices (the
# validation set) and use the test set once, at the very end (06_evaluate.py). The split comes
# first: the held-out images stand for new ones, so nothing about them may shape the training,
# not even the averages of section 3 (which says why CIFAR-10's published ones are the exception).
VALIDATION_SIZE = 5000  # images held out of CIFAR-10's 50,000 training images
# The split uses its own fixed seed, not --seed: every run and every script holds out the same
# images, so validation accuracies can be compared across runs and a resumed run never trains on
# images it used to validate on.
SPLIT_SEED = 0


def split_train_val(num_images, val_size=VALIDATION_SIZE):
    """Shuffle the training indices once (with SPLIT_SEED) and hold out `val_size` of them (a
    tenth if there are fewer than 5 x val_size): (train_indices, val_indices), no overlap."""
    if num_images < 5 * val_size:
        val_size = max(1, num_images // 10)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[val_size:], order[:val_size]


class Split(NamedTuple):
    """One part of the data in memory: uint8 images (N, 3, 32, 32) and int64 labels (N,). A
    NamedTuple is a tuple whose parts also have names: split.images is split[0]."""
    images: torch.Tensor
    labels: torch.Tensor


def load_train_and_val(data_dir, fake_data=False, classes=None):
    """The training images of `data_dir` (of `classes` only, if given) as (train, val, classes):
    two Splits and the class names. Raises common.UserError as load_split does."""
    images, labels, classes = load_split(data_dir, "train", fake_data, classes)
    train_indices, val_indices = split_train_val(len(labels))
    return (Split(images[train_indices], labels[train_indices]),
            Split(images[val_indices], labels[val_indices]), classes)


if __name__ == "__main__":
    common.section("2. The validation split")
    train_indices, val_indices = split_train_val(len(labels))
    train = Split(images[train_indices], labels[train_indices])
    val = Split(images[val_indices], labels[val_indices])
    print(f"{len(labels):,} training images -> {len(train.labels):,} for training + "
          f"{len(val.labels):,} for validation")
    # The split draws at random, whatever the class; each class still ends up with about its share:
    print("validation images per class:",
          torch.bincount(val.labels, minlength=len(classes)).tolist())


# %% 3. Per-channel mean and standard deviation ----------------------------------------------------
# A network learns fastest when its inputs are centred on 0 with a spread of about 1 in every
# channel: then no channel dominates the first layer just because its numbers are larger, and the
# starting weights (chosen for such inputs) give outputs of a sensible size. So each channel is
# shifted by its mean and divided by its standard deviation ("normalised"), with statistics of
# the training part only (section 2); every image, now or after deployment, is then normalised
# with these same numbers.
# The published statistics of CIFAR-10, over its 50,000 training images, pixels scaled to [0, 1]:
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def channel_statistics(images, chunk_size=5000):
    """The mean and standard deviation of each channel over all pixels of uint8 images
    (N, C, H, W), as two tuples of C floats for pixels scaled to [0, 1]. `chunk_size` images
    at a time become floats, to keep memory small (all of CIFAR-10 in float64 would be 1.2 GB).
    """
    # Per channel, add up the values and the squared values; then mean = E[x] and
    # std = sqrt(E[x^2] - E[x]^2). float64 keeps sums of 46 million pixels accurate.
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_of_squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(chunk_size):
        pixels = chunk.double() / 255  # [0, 1], as ToTensor makes them
        total += pixels.sum(dim=(0, 2, 3))  # sum over images, rows and columns: one per channel
        total_of_squares += (pixels ** 2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]  # pixels per channel
    mean = total / count
    std = (total_of_squares / count - mean ** 2).clamp(min=0).sqrt()  # clamp: rounding below 0
    return tuple(mean.tolist()), tuple(std.tolist())


def normalization_statistics(images, data_dir, fake_data=False):
    """The per-channel (mean, std) to normalise with: CIFAR-10's published constants for CIFAR-10
    itself, and for other images (your folder, FakeData) those of `images`, the training part.
    `data_dir` and `fake_data` are the flags that chose the data (see data_source)."""
    if data_source(data_dir, fake_data) == "cifar10":
        return CIFAR10_MEAN, CIFAR10_STD
    mean, std = channel_statistics(images)
    # A channel that is the same in every image (all images grey, say) has std 0, and dividing
    # by 0 would make every input NaN. It carries no information either way; dividing by one
    # pixel step (1/255) instead leaves it at 0 after the mean is taken away.
    return mean, tuple(max(value, 1 / 255) for value in std)


if __name__ == "__main__":
    common.section("3. Per-channel mean and standard deviation")
    computed_mean, computed_std = channel_statistics(train.images)
    print(f"{len(train.labels):,} training images (validation left out), per channel (red, "
          "green, blue), pixels in [0, 1]:")
    print("  mean computed here:", numbers(computed_mean))
    print("  CIFAR10_MEAN:      ", numbers(CIFAR10_MEAN))
    print("  std computed here: ", numbers(computed_std))
    print("  CIFAR10_STD:       ", numbers(CIFAR10_STD))
    # What the rest of the lesson (and 05_train.py) normalises with: the numbers computed here
    # for your own images and FakeData; for CIFAR-10, the published constants, which count the
    # 5,000 held-out images too but are within 0.002 of the 45,000's, and are everyone's.
    mean, std = normalization_statistics(train.images, args.data_dir, args.fake_data)
    print("normalising with:", "CIFAR10_MEAN and CIFAR10_STD" if source == "cifar10" else
          "the numbers computed here, as 05_train.py does")


# %% 4. Transforms ---------------------------------------------------------------------------------
# A transform is a function applied to one image each time the image is loaded, and Compose chains
# several into one. Training adds randomness, evaluation must not. Why random crops and flips?
# They make many slightly different versions of every training image, so the network has to learn
# what a cat looks like rather than memorise the exact training pictures ("overfitting").
AUGMENT_PADDING = 4  # random crops shift an image by up to 4 pixels in each direction


def make_transforms(mean, std):
    """(train_transform, eval_transform), torchvision's standard way: each takes a PIL image and
    gives a float tensor."""
    train_transform = transforms.Compose([
        # Pad the image by 4 pixels on every side (mirroring the border pixels: "reflect"), then
        # cut a random 32x32 window out of the 40x40 result: the image shifts by up to 4 pixels.
        transforms.RandomCrop(IMAGE_SIZE, padding=AUGMENT_PADDING, padding_mode="reflect"),
        # Mirror the image left-right with probability 0.5: a car facing left is still a car.
        # (Not for every dataset: a mirrored digit or letter is a different symbol.)
        transforms.RandomHorizontalFlip(),
        # PIL image (H, W, C) of bytes 0..255 -> float32 tensor (C, H, W) of values in [0, 1].
        transforms.ToTensor(),
        # (value - mean) / std per channel, with the statistics of section 3.
        transforms.Normalize(mean, std),
    ])
    # Evaluation (validation, test, prediction) sees every image exactly as it is, every time:
    # the same image must always get the same prediction, and accuracies must be comparable.
    eval_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return train_transform, eval_transform


if __name__ == "__main__":
    common.section("4. Transforms: ToTensor, Normalize, and augmentation for training only")
    train_transform, eval_transform = make_transforms(mean, std)
    # ToPILImage turns a uint8 tensor (3, H, W) into a PIL image, the format these transforms
    # start from (PIL stores height x width x channels; PyTorch stores channels first).
    image = transforms.ToPILImage()(train.images[0])
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


# %% 5. torchvision's datasets, with a transform ---------------------------------------------------
# Every torchvision dataset takes a `transform` and applies it in dataset[i], to the one image
# asked for. The images themselves stay as they are on disk or in memory.
if __name__ == "__main__":
    common.section("5. torchvision's datasets, with transform=")
    if source == "cifar10":  # load_split downloaded it already: download=False only reads it
        dataset = datasets.CIFAR10(root=args.data_dir, train=True, download=False,
                                   transform=train_transform)
    elif source == "folder":
        # Images of any size: first scaled (shorter side to 32) and cut to the centre square.
        # loader= reads one file: image_files.open_image reads any format as RGB.
        dataset = datasets.ImageFolder(
            args.data_dir / "train", loader=lambda path: open_image(path)[0],
            transform=transforms.Compose([transforms.Resize(IMAGE_SIZE),
                                          transforms.CenterCrop(IMAGE_SIZE), train_transform]))
    else:
        dataset = datasets.FakeData(size=1000, image_size=(3, IMAGE_SIZE, IMAGE_SIZE),
                                    num_classes=len(CIFAR10_CLASSES), transform=train_transform)
    print(f"{type(dataset).__name__}(..., transform=train_transform): {len(dataset):,} images")
    image, label = dataset[0]  # a dataset is indexed like a list: one (image, label) pair
    print(f"dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; "
          f"label {label} ({type(label).__name__})")


# %% 6. A Dataset of our own ----------------------------------------------------------------------
# A Dataset is any object with __len__ (how many samples) and __getitem__ (sample number i).
# You write one when your data does not come in a shape torchvision knows: say, all images in one
# folder with their labels in a CSV file. Then __init__ reads the CSV into a list of (file name,
# label) pairs, and __getitem__ opens file number i and applies the transform. Reading each file
# only when it is asked for means the dataset can be far larger than your memory. Ours is made
# from one Split at a time, so each part of section 2 gets its own transform.
class ImageDataset(Dataset):
    """uint8 images (N, 3, H, W) and int64 labels (N,) held in memory, handed out one at a time
    as (transform(PIL image), label), as torchvision.datasets.CIFAR10 does inside (transform=None
    hands out the PIL images)."""

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
    common.section("6. A Dataset of our own: __len__ and __getitem__")
    # Random crops and flips for training, none for validation. (torch.utils.data.Subset(dataset,
    # indices) would cut one torchvision dataset in two, but both parts would share its one
    # transform: the validation images would be augmented too, a common mistake.)
    train_dataset = ImageDataset(train.images, train.labels, train_transform)
    val_dataset = ImageDataset(val.images, val.labels, eval_transform)
    print(f"len(train_dataset): {len(train_dataset):,} | len(val_dataset): {len(val_dataset):,}")
    image, label = train_dataset[0]  # Python turns dataset[0] into dataset.__getitem__(0)
    print(f"train_dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; label {label}")


# %% 7. DataLoader --------------------------------------------------------------------------------
# A network learns from a batch of images at a time: one image gives a noisy gradient; all 45,000
# at once would give one update per epoch, and their activations would not fit in memory. The
# DataLoader asks the dataset for batch_size samples and stacks them into one tensor ("collate").
# Its options (GUIDE.md, "The data", says more about each):
# - shuffle=True: a new order every epoch, so batches mix the classes; evaluation keeps one.
# - num_workers: processes that load batches while the main one trains (0: it loads them
#   itself). A worker may start by importing this file: hence `if __name__ == "__main__":`.
#   persistent_workers=True keeps them from one epoch to the next.
# - pin_memory=True: page-locked batches, which a CUDA GPU copies in the background.
# - drop_last=True: every training step sees a full batch (a few images give a noisy step and
#   poor batch-norm statistics, 04_model.py); not when the set is smaller than one batch, nor in
#   evaluation.
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
# The pipeline of sections 4-7 does about ten small steps per image (make a PIL image, pad, crop,
# flip, convert, normalise, then stack a batch of them): for 32x32 images the time goes into that
# bookkeeping, not the pixels, and a GPU waits for the CPU. CIFAR-10 fits in memory (154 MB as
# bytes), so 05_train.py does each step once per batch: a batch leaves memory in one indexing
# operation, goes to the device as bytes (4 times less to copy than float32), and is normalised,
# cropped and flipped there. The same kind of images, much faster (benchmarks/benchmark.py, rows
# 1a and 1b). Data that does not fit in memory (ImageNet is 140 GB) takes sections 4-7's way,
# with workers: it reads each file only when it is needed.
def normalize(images, mean, std):
    """uint8 images (B, C, H, W) to float32, scaled to [0, 1], minus the mean, over the std:
    ToTensor and Normalize for a whole batch at once, on the images' device. `mean` and `std`
    hold one number per channel (section 3): a sequence, or a tensor on that device."""
    check_batch(images, mean, std)  # uint8, and one mean and std per channel (image_files.py)
    # view(1, C, 1, 1): one number per channel, which broadcasting applies to every pixel.
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def random_crop_and_flip(images, padding=AUGMENT_PADDING, flip=True):
    """Section 4's RandomCrop(size, padding, padding_mode="reflect") and RandomHorizontalFlip()
    for a whole batch (B, C, H, W) at once, a different crop and coin for every image, on the
    batch's device. `padding` (0: no shift) must be less than H and W; flip=False never mirrors.
    """
    batch, _, height, width = images.shape
    device = images.device
    # Pad every image by `padding` pixels on each side, mirroring the pixels inside its border
    # ("reflect"): with padding 4, a 32x32 image becomes 40x40.
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect")
    # unfold(dimension, size, step) lists every window of `size` along a dimension, `step` apart.
    # Down the rows, then across the columns, that is every height x width crop of every padded
    # image: windows[i, :, top, left] is the crop of image i whose top-left corner is at (top,
    # left), for top and left from 0 to 2 * padding. It is a view: nothing is copied.
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # (B, C, 2p+1, 2p+1, H, W)
    # Each image draws its own corner. Tensors used as indices pick element by element
    # (01_tensors.py, section 4): crop i is windows[i, :, top[i], left[i]]. (The picked
    # dimension comes first in the result, so the crops are (B, C, H, W).)
    top = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    crops = windows[torch.arange(batch, device=device), :, top, left]  # (B, C, H, W), a copy
    if flip:
        # A coin per image: `flipped` lists the images whose coin came up, and those are replaced
        # by their mirror image (flip(3) reverses the order of the columns). The coins are tossed
        # on the CPU, where picking the list out needs no wait for a GPU.
        flipped = torch.arange(batch)[torch.rand(batch) < 0.5].to(device, non_blocking=True)
        crops[flipped] = crops[flipped].flip(3)
    return crops


def prepare_batch(images, device, mean, std, augment=False, padding=AUGMENT_PADDING, flip=True):
    """A batch of uint8 images made ready for the network: on `device`, normalised, augmented
    if asked (random_crop_and_flip with `padding` and `flip`), in the channels_last layout. Every
    script that feeds the network goes through here, so all get the same kind of input."""
    images = normalize(images.to(device, non_blocking=True), mean, std)
    # Section 4 crops, then normalises; here the other order gives the same numbers, since
    # normalising changes each pixel alone and reflect padding only copies pixels.
    if augment:
        images = random_crop_and_flip(images, padding, flip)
    # channels_last stores each pixel's channels next to each other, the layout the fast
    # convolution kernels of CPUs and recent GPUs prefer. The numbers are the same; only their
    # order in memory changes.
    return images.contiguous(memory_format=torch.channels_last)


class InMemoryLoader:
    """Batches of images kept in memory, ready for the network: iterating gives (images, labels)
    like a DataLoader, but the images are already prepare_batch's (float32, normalised, augmented
    if asked, on `device`), and the labels on `device` too. Any channels, any image size.

    Args:
        images: a uint8 tensor (N, C, H, W), 0..255.
        labels: a tensor (N, ...), usually int64 class indices (N,).
        batch_size: images per batch.
        device: where the batches go ("cpu", "cuda", a torch.device, ...).
        mean, std: the training images' statistics, C numbers each (std above 0), for normalize.
        shuffle: a new random order every epoch (training), or the same order every time.
        augment: random_crop_and_flip on every batch (training only), with `padding` (0: no
            crops; less than H and W) and `flip` (False: never mirrored).
        drop_last: leave out the last batch of each epoch if it is smaller than batch_size (a
            set smaller than one batch still gives that batch). False by default, so that every
            image is used, as evaluation needs; training passes True (section 7 says why).
    """

    def __init__(self, images, labels, batch_size, device, mean, std, shuffle=False,
                 augment=False, padding=AUGMENT_PADDING, flip=True, drop_last=False):
        labels = torch.as_tensor(labels)  # a list or NumPy array of labels works too
        # Wrong inputs fail here, in one sentence, rather than train on wrong numbers or fail later.
        mean, std = check_loader_arguments(images, labels, mean, std, padding if augment else 0)
        self.images, self.labels = images, labels
        self.device = torch.device(device)
        self.augment, self.padding, self.flip = augment, padding, flip
        # The statistics as tensors on the device, made once: copying Python numbers to a GPU
        # for every batch would make the CPU wait until the GPU has caught up.
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.pin_memory = self.device.type == "cuda"
        # Section 7's DataLoader over the numbers 0 to N-1: it shuffles them (or not) and hands
        # them out batch_size at a time, as one tensor of indices. No workers: taking a batch out
        # of memory is quicker than a worker could hand it over.
        self.batches = DataLoader(range(len(images)), batch_size=batch_size, shuffle=shuffle,
                                  drop_last=drop_last and len(images) > batch_size)
        self.drop_last = self.batches.drop_last  # as a DataLoader says it (05's evaluate reads it)

    def __len__(self):
        return len(self.batches)  # batches per epoch

    def __iter__(self):
        for indices in self.batches:
            # The batch out of memory in one operation: index_select(0, indices) takes the rows
            # `indices`, as images[indices] would, several times faster.
            images = self.images.index_select(0, indices)
            labels = self.labels.index_select(0, indices)
            if self.pin_memory:  # page-locked, for a copy to the GPU in the background
                images, labels = images.pin_memory(), labels.pin_memory()
            images = prepare_batch(images, self.device, self.mean, self.std, self.augment,
                                   self.padding, self.flip)
            yield images, labels.to(self.device, non_blocking=True)


if __name__ == "__main__":
    common.section("8. The fast pipeline that 05_train.py uses")
    fast_loader = InMemoryLoader(train.images, train.labels, args.batch_size, device, mean, std,
                                 shuffle=True, augment=True, drop_last=True)
    batch, batch_labels = next(iter(fast_loader))
    print(f"InMemoryLoader: {len(fast_loader)} batch(es) per epoch; one batch: images "
          f"{tuple(batch.shape)} {batch.dtype} on {batch.device}, labels "
          f"{tuple(batch_labels.shape)} {batch_labels.dtype}")
    # Normalised: about mean 0 and std 1 per channel, as with transforms.Normalize.
    print(f"per-channel mean {numbers(batch.mean(dim=(0, 2, 3)).tolist(), 2)}, std "
          f"{numbers(batch.std(dim=(0, 2, 3)).tolist(), 2)}; channels_last: "
          f"{batch.is_contiguous(memory_format=torch.channels_last)}")


# %% 9. A look at the images ----------------------------------------------------------------------
# Always look at your data before training on it: wrong labels, rotated photos, or images that are
# mostly border show up at a glance, and no accuracy figure will tell you. The grids show the
# images as they are (bytes 0..255), not normalised values, which go below 0 and above 1.
if __name__ == "__main__":
    import figures

    common.section("9. A look at the images")
    samples_path = args.output_dir / "data_samples.png"  # a row per class: its first 8 images
    figures.save_images_by_class(train.images, train.labels, classes, samples_path)
    print("training images by class:", samples_path)

    # Eight images (top row), then three random crops and flips of each, as 05_train.py makes them.
    originals = train.images[:8]
    rows = [originals] + [random_crop_and_flip(originals) for _ in range(3)]
    augmentation_path = args.output_dir / "data_augmentation.png"
    figures.save_image_grid(torch.stack(rows), ["original"] + [f"augmented {n}" for n in (1, 2, 3)],
                            "Random crops (reflect padding 4) and flips, as in 05_train.py",
                            augmentation_path)
    print("originals and augmented versions:", augmentation_path)


# %% Summary --------------------------------------------------------------------------------------
# You loaded the images, held out a validation part, computed the statistics to normalise with,
# and turned the images into batches two ways: torchvision's transforms, Dataset and DataLoader,
# and the in-memory pipeline that 05_train.py uses.
if __name__ == "__main__":
    print(f"\nFinished in {time.perf_counter() - lesson_start:.0f} s.")
    print("Next, 04_model.py: the network that these batches are fed to.")
