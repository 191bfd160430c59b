"""03 Data: from image files to batches of tensors that a network can learn from.

What you will learn
    - How `torchvision.datasets.CIFAR10` gets the 60,000 CIFAR-10 images, and how the same code
      reads a folder of your own images (ImageFolder) or random stand-ins (FakeData).
    - Why images are normalised with the per-channel mean and standard deviation of the training
      images, computed here from the images themselves.
    - `transforms`: ToTensor and Normalize, plus random crops and flips for training only.
    - `Dataset`: the two methods every dataset has, in a small Dataset class of our own.
    - `DataLoader`: batches, shuffling, worker processes, pinned memory, drop_last.
    - The validation split: images held out of the training set to choose models with, so that
      the test set is used once, at the very end.
    - Why 05_train.py keeps the images in memory and augments whole batches at once, with a
      timing of both pipelines on your machine.
    - What the images look like: a grid of examples with their class names.

How to run it
    python 03_data.py                          # CIFAR-10, downloaded into data/ the first time
    python 03_data.py --fake-data              # random images, offline, in seconds
    python 03_data.py --data-dir my_images     # your own images: my_images/train/<class>/*.jpg
                                               # and my_images/test/<class>/*.jpg
    python 03_data.py --workers 2              # load the per-image pipeline in 2 processes
    python 03_data.py --help                   # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter: each cell defines one section as a
function, and the last cell runs them all in order.

Reads CIFAR-10 (about 170 MB, downloaded into --data-dir the first time) or your images.
Writes outputs/data_samples.png (examples of every class) and outputs/data_augmentation.png
(images before and after random crops and flips), or into --output-dir. After the download it
takes under a minute on a laptop CPU; --fake-data takes seconds.
"""

# %% Setup ---------------------------------------------------------------------------------------
# This file only imports and defines things until the very last line. That matters for the
# DataLoader's worker processes (section 7): on some systems each worker imports this file again.
import sys
import time

import matplotlib

matplotlib.use("Agg")  # draw into files, not windows: works on machines without a screen
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms
from torchvision.utils import make_grid

import common

AUGMENT_PADDING = 4  # random crops shift an image by up to 4 pixels, as in 05_train.py


def parse_args():
    """The shared data flags (common.make_parser) plus this lesson's own."""
    parser = common.make_parser("Lesson 3: datasets, transforms and DataLoaders for CIFAR-10.",
                                batch_size=512)
    parser.add_argument("--speed-batches", type=common.positive_int, default=3,
                        help="batches each pipeline loads in the speed comparison (section 9)")
    # In Jupyter or VS Code's interactive window, sys.argv holds the kernel's own arguments rather
    # than ours, so there we simply take the defaults.
    return parser.parse_args([] if "ipykernel" in sys.modules else None)


def numbers(values, digits=4):
    """Format floats as "0.1235, 0.5000, ..." (rounded, and never "-0.0000")."""
    return ", ".join(f"{round(value, digits) + 0.0:.{digits}f}" for value in values)


def to_pil(image):
    """A uint8 tensor (3, H, W) as a PIL image, the format torchvision's transforms start from."""
    # PIL stores height x width x channels; PyTorch stores channels first (see 01_tensors.py).
    return Image.fromarray(image.permute(1, 2, 0).numpy())


# %% 1. Loading the images ------------------------------------------------------------------------
def load_images(args):
    """Load the training and test images into memory and describe them."""
    common.section("1. Loading the images")
    # torchvision.datasets.CIFAR10(root, train=True, download=True) downloads CIFAR-10 once (a
    # 170 MB archive, unpacked next to it) and hands out its 50,000 training images, or with
    # train=False its 10,000 test images. It keeps them in memory as one NumPy array of shape
    # (N, 32, 32, 3): height, width, channels, as image files store them.
    # common.load_split makes that call for us and returns the images as one uint8 tensor of
    # shape (N, 3, 32, 32): channels first, PyTorch's convention for images, (N, C, H, W).
    # The same call reads two other sources, so every script works with all three:
    #   --data-dir with train/ and test/ folders, one subfolder per class: your own images, read
    #     with torchvision.datasets.ImageFolder (the class names are the subfolder names) and
    #     resized to 32x32;
    #   --fake-data: torchvision.datasets.FakeData, random images with random labels, for trying
    #     the code offline (1,000 training and 200 test images).
    source = common.data_source(args.data_dir, args.fake_data)
    print("source:", {"cifar10": f"CIFAR-10 in {args.data_dir}",
                      "folder": f"your image folders in {args.data_dir}",
                      "fake": "FakeData (random images, random labels)"}[source])
    start = time.perf_counter()
    images, labels, classes = common.load_split(args.data_dir, "train", args.fake_data)
    test_images, _, _ = common.load_split(args.data_dir, "test", args.fake_data)
    print(f"loaded in {time.perf_counter() - start:.1f} s")
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
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    print("training images per class:", counts)
    return images, labels, classes, source


# %% 2. Per-channel mean and standard deviation ----------------------------------------------------
def compute_statistics(images, source):
    """Compute the training images' per-channel statistics and compare them with common's."""
    common.section("2. Per-channel mean and standard deviation")
    # A network learns fastest when its inputs are centred on 0 with a spread of about 1 in every
    # channel: then no channel dominates the first layer just because its numbers are larger, and
    # the starting weights (chosen for such inputs) give outputs of a sensible size. So each
    # channel is shifted by its mean and divided by its standard deviation ("normalised").
    # The statistics come from the training images only. The validation and test images stand
    # for new images the model has never seen, so nothing about them may shape the training,
    # not even an average; and every image, now or after deployment, is then normalised with
    # these same fixed numbers.
    # common.channel_statistics goes through the images a chunk at a time (all 50,000 as float
    # would take 600 MB), adding up per channel the values and the squared values; then
    # mean = E[x] and std = sqrt(E[x^2] - E[x]^2). 05_train.py uses it for your own images.
    mean, std = common.channel_statistics(images)
    print(f"{len(images):,} training images, per channel (red, green, blue), pixels in [0, 1]:")
    print("  mean computed here: ", numbers(mean))
    print("  common.CIFAR10_MEAN:", numbers(common.CIFAR10_MEAN))
    print("  std computed here:  ", numbers(std))
    print("  common.CIFAR10_STD: ", numbers(common.CIFAR10_STD))
    # Many tutorials use std (0.2023, 0.1994, 0.2010) for CIFAR-10. That is the average of each
    # image's own standard deviation, a smaller number that ignores how much images differ from
    # each other; the spread of the pixels that the network sees is the std over all pixels.
    per_image = torch.cat([(images[start:start + 5000].double() / 255).std(dim=(2, 3))
                           for start in range(0, len(images), 5000)]).mean(dim=0)
    print("  average of each image's own std:", numbers(per_image.tolist()),
          "(a different quantity)")
    if source == "cifar10":
        print("These are CIFAR-10's own statistics, the numbers stored in common.py.")
    else:
        # The JPEG copy of CIFAR-10 lands within about 0.002 of the constants; random or other
        # images give their own numbers, which is the point: use the statistics of your data.
        print("These images are not the original CIFAR-10 files, so their statistics can differ "
              "from common.py's;\nfor your own data, normalise with the numbers computed here.")
    return mean, std


# %% 3. Transforms -------------------------------------------------------------------------------
def make_transforms(mean, std):
    """The training and evaluation transforms, torchvision's standard way."""
    # A transform is a function applied to one image each time the image is loaded, and Compose
    # chains several into one. Training adds randomness, evaluation must not:
    train_transform = transforms.Compose([
        # Pad the image by 4 pixels on every side (mirroring the border pixels: "reflect"), then
        # cut a random 32x32 window out of the 40x40 result: the image shifts by up to 4 pixels.
        transforms.RandomCrop(32, padding=AUGMENT_PADDING, padding_mode="reflect"),
        # Mirror the image left-right with probability 0.5: a car facing left is still a car.
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


def show_transforms(images, train_transform, eval_transform):
    """Apply the transforms to one image and show what each step does."""
    common.section("3. Transforms: ToTensor, Normalize, and augmentation for training only")
    # Why random crops and flips? They make many slightly different versions of every training
    # image, so the network has to learn what a cat looks like rather than memorise 45,000 exact
    # pictures ("overfitting"). Evaluation sees the images unchanged.
    image = to_pil(images[0])
    print(f"a PIL image: size {image.size}, mode {image.mode}")
    tensor = transforms.ToTensor()(image)
    print(f"after ToTensor: shape {tuple(tensor.shape)}, dtype {tensor.dtype}, "
          f"values {tensor.min().item():.3f} to {tensor.max().item():.3f}")
    normalised = eval_transform(image)
    print(f"after Normalize: dtype {normalised.dtype}, values {normalised.min().item():.3f} to "
          f"{normalised.max().item():.3f}, around 0 instead of 0.5")
    print("eval_transform twice gives the same tensor:",
          torch.equal(eval_transform(image), eval_transform(image)))
    draws = [train_transform(image) for _ in range(5)]
    distinct = len({tuple(draw.flatten().tolist()) for draw in draws})
    print(f"train_transform 5 times gives {distinct} different tensors "
          "(a random shift of up to 4 pixels, flipped half the time)")


# %% 4. torchvision's datasets, with a transform ---------------------------------------------------
def torchvision_dataset(args, source, transform):
    """The training set of the chosen source as a torchvision dataset that applies `transform`."""
    if source == "cifar10":
        # load_split already downloaded it, so download=True would only check the files again.
        return datasets.CIFAR10(root=args.data_dir, train=True, download=False,
                                transform=transform)
    if source == "folder":
        # Your images can have any size, so they are first scaled (shorter side to 32 pixels)
        # and cut to the 32x32 square in their centre.
        resize = [transforms.Resize(common.IMAGE_SIZE), transforms.CenterCrop(common.IMAGE_SIZE)]
        return datasets.ImageFolder(args.data_dir / "train",
                                    transform=transforms.Compose([*resize, transform]))
    return datasets.FakeData(size=1000, image_size=(3, common.IMAGE_SIZE, common.IMAGE_SIZE),
                             num_classes=len(common.CIFAR10_CLASSES), transform=transform)


def show_torchvision_dataset(args, source, train_transform):
    """Index a torchvision dataset that applies the training transform to every image."""
    common.section("4. torchvision's datasets, with transform=")
    # Every torchvision dataset takes a `transform` and applies it in dataset[i], to the one
    # image asked for. The images themselves stay as they are on disk or in memory.
    dataset = torchvision_dataset(args, source, train_transform)
    print(f"{type(dataset).__name__}(..., transform=train_transform): {len(dataset):,} images")
    image, label = dataset[0]  # a dataset is indexed like a list: one (image, label) pair
    print(f"dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; "
          f"label {label} ({type(label).__name__})")


# %% 5. A Dataset of our own ----------------------------------------------------------------------
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
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def show_custom_dataset(images, labels, train_transform):
    """Use the Dataset class above, and say when you would write one."""
    common.section("5. A Dataset of our own: __len__ and __getitem__")
    # A Dataset is any object with __len__ (how many samples) and __getitem__ (sample number i).
    # You write one when your data does not come in a shape torchvision knows: say, all images in
    # one folder with their labels in a CSV file. Then __init__ reads the CSV into a list of
    # (file name, label) pairs, and __getitem__ opens file number i with
    # Image.open(path).convert("RGB") and applies the transform. Reading each file only when it
    # is asked for means the dataset can be far larger than your memory.
    # Ours keeps images in memory, which lets us give the training and validation parts of one
    # set different transforms (section 6).
    dataset = ImageDataset(images, labels, train_transform)
    print("len(dataset):", len(dataset))
    image, label = dataset[0]  # Python turns dataset[0] into dataset.__getitem__(0)
    print(f"dataset[0]: image shape {tuple(image.shape)}, dtype {image.dtype}; label {label}")


# %% 6. The validation split ----------------------------------------------------------------------
def make_validation_split(images, labels, train_transform, eval_transform):
    """Hold out validation images from the training set, with common.split_train_val."""
    common.section("6. The validation split")
    # Training runs many choices: how many epochs, which learning rate, which checkpoint to keep.
    # Each choice is made by looking at accuracy on images the model has not trained on. If that
    # were the test set, the test set would slowly be tuned to, and its accuracy would no longer
    # tell you how the model does on new images. So we hold out part of the training set for
    # these choices (the validation set) and use the test set once, at the very end (06_evaluate).
    train_indices, val_indices = common.split_train_val(len(labels))
    print(f"{len(labels):,} training images -> {len(train_indices):,} for training + "
          f"{len(val_indices):,} for validation")
    # The split is made with a fixed seed (common.SPLIT_SEED), not --seed: every run and every
    # script holds out the same images, so validation accuracies can be compared across runs and
    # a resumed run never trains on images it used to validate on.
    overlap = torch.isin(train_indices, val_indices).sum().item()
    print("images in both parts:", overlap)
    again_train, again_val = common.split_train_val(len(labels))
    print("the same split on a second call:",
          torch.equal(train_indices, again_train) and torch.equal(val_indices, again_val))
    # The split is random, not per class, so the classes are about equally represented:
    counts = torch.bincount(labels[val_indices], minlength=int(labels.max()) + 1).tolist()
    print("validation images per class:", counts)
    # Each part gets its own transform: random crops and flips for training, none for validation.
    # (torch.utils.data.Subset(dataset, indices) would cut one torchvision dataset in two, but
    # both parts would share that dataset's one transform: the validation images would be
    # augmented too, a common mistake.)
    train_dataset = ImageDataset(images[train_indices], labels[train_indices], train_transform)
    val_dataset = ImageDataset(images[val_indices], labels[val_indices], eval_transform)
    print(f"train_dataset: {len(train_dataset):,} images | val_dataset: {len(val_dataset):,}")
    return train_indices, val_indices, train_dataset, val_dataset


# %% 7. DataLoader --------------------------------------------------------------------------------
def make_dataloaders(args, device, train_dataset, val_dataset):
    """Batch the datasets with torch.utils.data.DataLoader."""
    common.section("7. DataLoader: batches, shuffling, workers, pinned memory")
    # A network learns from a batch of images at a time: one image gives a noisy gradient, all
    # 45,000 at once would not fit and would give one update per epoch. The DataLoader asks the
    # dataset for batch_size samples and stacks them into one tensor ("collate").
    # - shuffle=True draws the samples in a new random order every epoch, so every batch is a
    #   mix of classes and the model cannot learn anything from the order. (Files sorted by class
    #   would otherwise give batches of only airplanes, then only cars...) Evaluation only
    #   measures, so the order does not matter there: shuffle=False keeps it the same every time.
    # - num_workers: how many extra processes load batches while the main one trains. With 0,
    #   the main process loads each batch itself and training waits for it. Workers pay off when
    #   loading is slow (decoding files, per-image transforms). On Windows and macOS, and on
    #   Linux from Python 3.14, each worker starts a fresh Python that imports this file first
    #   (the "spawn" and "forkserver" start methods; older Pythons on Linux copy the running
    #   program instead, "fork"). That is why everything here runs inside main(), called under
    #   `if __name__ == "__main__":` (the last line): otherwise each worker would run the whole
    #   lesson again and start workers of its own, and Python stops with "An attempt has been
    #   made to start a new process before the current process has finished its bootstrapping
    #   phase". Write the guard even where "fork" lets you forget it: others run your code too.
    #   persistent_workers=True keeps the workers alive from one epoch to the next, instead of
    #   starting them again at every epoch (it needs at least one worker).
    # - pin_memory=True puts each batch in "page-locked" memory, which the GPU can copy from
    #   directly and in the background (with .to(device, non_blocking=True)). Only CUDA uses it.
    # - drop_last=True drops the last, smaller batch of each epoch, so every training step sees a
    #   full batch: a last batch of a few images gives a noisy step, and batch-norm (04_model.py)
    #   gets poor statistics from it (from a single image, an error). We keep it off when the
    #   whole set is smaller than one batch: it would drop everything.
    #   Evaluation must see every image, so there drop_last stays False.
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
    images, labels = next(iter(train_loader))  # one batch, the way a for loop gets it
    print(f"one training batch: images {tuple(images.shape)} {images.dtype}, "
          f"labels {tuple(labels.shape)} {labels.dtype}")
    images = images.to(device, non_blocking=pin_memory)  # what 05_train.py does next, step 2
    print(f"moved to {device}: images on {images.device}")
    return train_loader


# %% 8. The in-memory pipeline that 05_train.py uses ----------------------------------------------
def crop_candidates(image, padding=AUGMENT_PADDING):
    """Every image a random crop and flip can make from `image`: (2 * (2*padding+1)**2, C, H, W).

    With padding 4 that is 9 x 9 shifts, each flipped or not: 162 possible results.
    """
    _, height, width = image.shape
    padded = F.pad(image[None].float(), (padding,) * 4, mode="reflect")[0]
    crops = [padded[:, top:top + height, left:left + width]
             for top in range(2 * padding + 1) for left in range(2 * padding + 1)]
    crops += [crop.flip(2) for crop in crops]
    return torch.stack(crops)


def is_a_crop_of(output, image):
    """True if `output` equals one of the crop_candidates of `image`."""
    candidates = crop_candidates(image)
    return bool((candidates == output.float()).flatten(1).all(dim=1).any())


def show_in_memory_pipeline(args, device, images, labels, train_indices, mean, std,
                            train_transform, eval_transform):
    """The batch-at-a-time pipeline of 05_train.py, and proof that it does the same as above."""
    common.section("8. The in-memory pipeline that 05_train.py uses")
    # The pipeline of sections 3-7 does about ten small steps per image (make a PIL image, pad,
    # crop, flip, convert, normalise, then stack 512 of them). For images of 32x32 pixels the
    # time goes into that bookkeeping, not into the pixels, and on a GPU the network waits for
    # the CPU. CIFAR-10 fits in memory easily (150 MB as bytes), so 05_train.py does each step
    # once per batch, as one tensor operation on the whole batch, on the device:
    #   common.InMemoryDataset keeps the images as one uint8 tensor; indexed with a list of 512
    #     indices it returns the whole batch in one operation;
    #   common.make_loader asks for whole batches (a BatchSampler) instead of images one by one;
    #   common.normalize and common.augment then work on the batch on the GPU (or CPU).
    # For datasets that do not fit in memory (ImageNet is 140 GB), you would use the pipeline of
    # sections 3-7 with workers: it reads each file only when it is needed.
    train_set = common.InMemoryDataset(images[train_indices], labels[train_indices])
    # No worker processes (workers=0), whatever --workers says: taking a batch out of memory is
    # one indexing operation, quicker than a worker could hand the batch over to this process.
    train_loader = common.make_loader(train_set, args.batch_size, shuffle=True, device=device,
                                      workers=0)
    batch, batch_labels = next(iter(train_loader))
    print(f"common.make_loader batch: images {tuple(batch.shape)} {batch.dtype}, labels "
          f"{tuple(batch_labels.shape)} {batch_labels.dtype} (still bytes; 4x less to copy)")
    batch = batch.to(device, non_blocking=True)
    inputs = common.normalize(batch, mean, std)
    print(f"common.normalize: {inputs.dtype}, per-channel mean "
          f"{numbers(inputs.mean(dim=(0, 2, 3)).tolist(), 2)}, std "
          f"{numbers(inputs.std(dim=(0, 2, 3)).tolist(), 2)}")
    augmented = common.augment(inputs, padding=AUGMENT_PADDING)
    changed = (augmented != inputs).flatten(1).any(dim=1).sum().item()
    print(f"common.augment: shape {tuple(augmented.shape)}, {changed} of {len(augmented)} images "
          "changed (a crop at the centre, unflipped, leaves one as it was)")

    # Does it do the same as the torchvision transforms? Evaluation first: common.normalize and
    # eval_transform give the same numbers (up to float rounding), every time.
    sample = images[train_indices[:8]]
    by_torchvision = torch.stack([eval_transform(to_pil(image)) for image in sample])
    by_common = common.normalize(sample, mean, std)
    print(f"normalize vs eval_transform, 8 images: largest difference "
          f"{(by_common - by_torchvision).abs().max().item():.1e}; normalize twice is identical: "
          f"{torch.equal(by_common, common.normalize(sample, mean, std))}")
    # Training: every output of either must be one of the 162 shifted and flipped copies of its
    # image (crop_candidates). Both draw the shift and the flip uniformly at random.
    geometric = transforms.Compose(train_transform.transforms[:2])  # RandomCrop + flip only
    from_common = common.augment(sample.float(), padding=AUGMENT_PADDING)
    # PILToTensor: PIL image -> uint8 tensor (C, H, W), like ToTensor but without scaling.
    from_torchvision = [transforms.PILToTensor()(geometric(to_pil(image))) for image in sample]
    print("each of 8 images from common.augment is a shifted/flipped copy of its original:",
          all(is_a_crop_of(output, image) for output, image in zip(from_common, sample)))
    print("the same holds for RandomCrop(32, padding=4, padding_mode='reflect') + "
          "RandomHorizontalFlip:",
          all(is_a_crop_of(output, image) for output, image in zip(from_torchvision, sample)))
    return train_loader


# %% 9. Which is faster? --------------------------------------------------------------------------
def images_per_second(loader, num_batches, prepare, device):
    """Time how fast `loader` delivers batches that are ready for the network.

    Args:
        loader: a DataLoader; it is started again whenever an epoch ends before num_batches.
        num_batches: how many batches to time. One batch more is loaded first, untimed: it
            includes one-off costs (starting worker processes, the GPU's first calls).
        prepare: a function that takes a batch of images and makes it ready for the network.
        device: where prepare puts the images (to wait for the GPU before stopping the clock).

    Returns:
        Images per second.
    """
    def endless_batches():
        while True:
            yield from loader

    batches = endless_batches()
    prepare(next(batches)[0])  # the untimed warm-up batch
    common.synchronize(device)
    start = time.perf_counter()
    count = 0
    for _ in range(num_batches):
        images, _ = next(batches)
        prepare(images)
        count += len(images)
    common.synchronize(device)
    return count / (time.perf_counter() - start)


def compare_speed(args, device, per_image_loader, in_memory_loader, mean, std, train_size):
    """Time both pipelines, from the images in memory to a batch ready for the network."""
    common.section("9. Which is faster? Images per second of both pipelines")
    num_batches = 1 if args.dry_run else args.speed_batches

    def ready_per_image(images):
        # The per-image pipeline has already cropped, flipped and normalised: only the copy is left.
        return images.to(device, non_blocking=True)

    def ready_in_memory(images):
        images = common.normalize(images.to(device, non_blocking=True), mean, std)
        return common.augment(images, padding=AUGMENT_PADDING)

    print(f"{num_batches} batch{'es' if num_batches > 1 else ''} of {args.batch_size} images "
          f"from each (after one untimed batch), on {device}; the per-image loader has "
          f"{args.workers} workers, the in-memory one none:")
    per_image = images_per_second(per_image_loader, num_batches, ready_per_image, device)
    print(f"  per image (ImageDataset + transforms + DataLoader): {per_image:9,.0f} images/s, "
          f"one epoch of {train_size:,} images in {train_size / per_image:.1f} s")
    in_memory = images_per_second(in_memory_loader, num_batches, ready_in_memory, device)
    print(f"  whole batches (make_loader + normalize + augment):  {in_memory:9,.0f} images/s, "
          f"one epoch in {train_size / in_memory:.1f} s")
    print(f"  the in-memory pipeline is {in_memory / per_image:.1f} times as fast here")
    # What to look at: on a CPU the batch pipeline is several times faster (4 to 6 times on the
    # 2-core machine this was written on). With a GPU the gap grows, because normalize and
    # augment run there and the CPU only picks out batches. More --workers speed up the per-image
    # pipeline, up to about one worker per CPU core, but they take those cores from everything
    # else. Timings vary from run to run: other programs share the machine.


# %% 10. A look at the images ---------------------------------------------------------------------
def draw_grid(tiles, row_names, title, path):
    """Draw a table of images as one picture, a name left of each row, and save it as a PNG.

    Args:
        tiles: a tensor (rows, columns, 3, H, W) of images, uint8 (0..255) or float (0..1).
        row_names: one name per row.
        title: the title above the picture.
        path: the PNG file to write.
    """
    rows, columns, _, height, width = tiles.shape
    # torchvision.utils.make_grid pastes a batch of images into one image, `nrow` per line, with a
    # border of `padding` pixels between them: one picture to show instead of 80 small ones.
    grid = make_grid(tiles.flatten(0, 1), nrow=columns, padding=2, pad_value=tiles.max().item())
    figure, axis = plt.subplots(figsize=(columns * 0.9 + 1.5, rows * 0.9 + 0.6))
    # imshow wants (H, W, 3); "nearest" shows the 32x32 pixels as they are, not smoothed.
    axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    for row, name in enumerate(row_names):
        axis.text(-4, 2 + row * (height + 2) + height / 2, name, ha="right", va="center")
    axis.set_title(title)
    axis.axis("off")  # no ticks or frame: this is a picture, not a plot
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)  # free the figure's memory


def save_sample_grid(images, labels, classes, path, per_class=8, max_classes=10):
    """Save a grid of training images: one row per class, the class name on the left.

    Args:
        images, labels: uint8 images (N, 3, H, W), not normalised, and their class indices.
        classes: the class names.
        path: the PNG file to write.
        per_class: images shown per class (the first ones of that class).
        max_classes: rows at most; a dataset with more classes shows its first ones.
    """
    shown = range(min(len(classes), max_classes))
    # White tiles stay white where a class has fewer than per_class images.
    tiles = torch.full((len(shown), per_class, *images.shape[1:]), 255, dtype=torch.uint8)
    for row, class_index in enumerate(shown):
        indices = (labels == class_index).nonzero().flatten()[:per_class]
        tiles[row, :len(indices)] = images[indices]
    draw_grid(tiles, [classes[index] for index in shown], "Training images, by class", path)


def save_augmentation_grid(images, path, versions=3):
    """Save original images (top row) and random crops and flips of them (the rows below).

    Args:
        images: uint8 images (N, 3, H, W), not normalised; each becomes one column.
        path: the PNG file to write.
        versions: how many augmented rows to draw, each a new random draw.
    """
    pixels = images.float() / 255  # floats in [0, 1], what augment is given in 05_train.py
    rows = [pixels] + [common.augment(pixels, padding=AUGMENT_PADDING) for _ in range(versions)]
    names = ["original"] + [f"augmented {number}" for number in range(1, versions + 1)]
    draw_grid(torch.stack(rows), names,
              "Random crops (reflect padding 4) and flips, as in 05_train.py", path)


def look_at_images(args, images, labels, classes):
    """Save the two grids and print where they are."""
    common.section("10. A look at the images")
    # Always look at your data before training on it: wrong labels, rotated photos, or images
    # that are mostly border show up at a glance, and no accuracy figure will tell you.
    args.output_dir.mkdir(parents=True, exist_ok=True)
    samples_path = args.output_dir / "data_samples.png"
    save_sample_grid(images, labels, classes, samples_path)
    print("training images by class:", samples_path)
    augmentation_path = args.output_dir / "data_augmentation.png"
    save_augmentation_grid(images[:8], augmentation_path)
    print("originals and augmented versions:", augmentation_path)
    # The grids show the images as they are (bytes 0..255), not normalised: normalised values
    # go below 0 and above 1, and imshow would clip them.


# %% Run every section in order -----------------------------------------------------------------
def main():
    args = parse_args()
    device = common.get_device(args.device)
    common.seed_everything(args.seed)  # the same seed gives the same crops, flips and batches
    start = time.perf_counter()

    images, labels, classes, source = load_images(args)
    mean, std = compute_statistics(images, source)
    train_transform, eval_transform = make_transforms(mean, std)
    show_transforms(images, train_transform, eval_transform)
    show_torchvision_dataset(args, source, train_transform)
    show_custom_dataset(images, labels, train_transform)
    train_indices, _, train_dataset, val_dataset = make_validation_split(
        images, labels, train_transform, eval_transform)
    per_image_loader = make_dataloaders(args, device, train_dataset, val_dataset)
    in_memory_loader = show_in_memory_pipeline(args, device, images, labels, train_indices,
                                               mean, std, train_transform, eval_transform)
    compare_speed(args, device, per_image_loader, in_memory_loader, mean, std,
                  len(train_indices))
    look_at_images(args, images[train_indices], labels[train_indices], classes)

    print(f"\nFinished in {time.perf_counter() - start:.0f} s.")
    print("Next, 04_model.py: the network that these batches are fed to.")


# The guard: main() runs when you run this file, not when a DataLoader worker imports it (see
# section 7). common.run_main turns a mistake you can fix, such as no internet for the download,
# into one sentence and exit code 1 instead of a traceback.
if __name__ == "__main__":
    common.run_main(main)
