"""09 Transfer learning: start from a network trained on other images, and teach it new classes.

What you will learn
    - How to load a network that someone else trained, with torchvision's current API:
      `resnet18(weights=ResNet18_Weights.DEFAULT)`, a ResNet-18 trained on ImageNet's 1.3 million
      photos of 1,000 classes; and how to do the same with a network you trained in 05_train.py.
    - Why a pretrained network must be fed images prepared exactly as in its own training, with
      `weights.transforms()`, and which input size to give it for 32x32 images.
    - Backbone and head: the layers that turn an image into features are kept, the last layer
      (which scores the old classes) is replaced by a new `nn.Linear` for your classes.
    - Freezing: `requires_grad_(False)` on the backbone, so only the head learns, and why the
      optimizer is then given only the head's parameters (and batch-norm is kept as it was).
    - Fine-tuning (--fine-tune): the last stage of the backbone learns too, with a learning rate
      ten times smaller, through the optimizer's parameter groups.
    - What it is worth, measured (--compare): the same network trained from scratch, with a
      frozen backbone, and fine-tuned, on the same few images for the same number of epochs.

How to run it
    python 09_transfer_learning.py               # ResNet-18 (ImageNet), 100 images per class
    python 09_transfer_learning.py --fine-tune   # then train its last stage as well
    python 09_transfer_learning.py --data-dir my_images  # my_images/{train,test}/<class>/...
    python 09_transfer_learning.py --weights-file resnet18-f37072fd.pth  # ImageNet, offline
    python 09_transfer_learning.py --backbone checkpoints/best.pt --compare  # your 05 network
    python 09_transfer_learning.py --fake-data --dry-run --no-pretrained  # offline, in seconds
Or run it one `# %%` cell at a time in VS Code or Jupyter; --help lists every flag.

Reads the images (as 03_data.py does: CIFAR-10, --data-dir, or --fake-data) and the network to
start from: ResNet-18's ImageNet weights (downloaded once, or a --weights-file) or a 05_train.py
checkpoint (--backbone). Writes nothing. ResNet-18 is slow on a CPU: the default run passes
about 20,000 images through it (half of them the 10,000 test images), minutes there; on a GPU,
seconds. With --backbone, the small CifarNet is fast everywhere.
"""

# %% Setup ----------------------------------------------------------------------------------------
import copy
import math
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms
from torchvision.models import ResNet, ResNet18_Weights, resnet18

import checkpointing
import common

data = common.import_script("03_data")  # the images, as every lesson loads them
models = common.import_script("04_model")  # CifarNet, for --backbone
training = common.import_script("05_train")  # train_one_epoch, evaluate, make_scheduler

IMAGE_SIZE = 112  # the side of the square ResNet-18 is fed (section 2 says why)
MAX_IMAGE_SIZE = 224  # ResNet-18's own training size: larger only costs more
FINE_TUNE_LR_FACTOR = 0.1  # the unfrozen last stage learns 10x slower than the new head
WEIGHT_DECAY = 0.01  # the default of AdamW (the optimizer used here, see make_optimizer)

# Plumbing until section 1, which a first read can skip: the flags, and checks that turn each
# mistake into one sentence. (The `if __name__` blocks run only when you run this file.)
if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (no internet, say): one sentence
    parser = common.make_data_parser(
        "Lesson 9: transfer learning. Train a new head on a pretrained backbone (ResNet-18 "
        "from ImageNet, or your own 05_train.py network), optionally fine-tune its last stage, "
        "and compare with training from scratch.", batch_size=64)
    start_from = parser.add_argument_group("the network to start from")
    one_of = start_from.add_mutually_exclusive_group()  # argparse refuses two of these together
    one_of.add_argument("--weights-file", type=Path, metavar="PATH",
                        help="ResNet-18's ImageNet weights as a downloaded .pth file, for a "
                             f"machine without internet ({ResNet18_Weights.DEFAULT.url})")
    one_of.add_argument("--no-pretrained", action="store_true",
                        help="start ResNet-18 from random weights: the same code, offline, "
                             "but with nothing to transfer")
    one_of.add_argument("--backbone", type=Path, metavar="CHECKPOINT",
                        help="start from a network trained by 05_train.py (e.g. "
                             "checkpoints/best.pt) instead of ResNet-18")
    start_from.add_argument("--image-size", type=common.positive_int, default=IMAGE_SIZE,
                            help="the side in pixels that the 32x32 images are enlarged to for "
                                 f"ResNet-18, from 32 to {MAX_IMAGE_SIZE} (section 2); ignored "
                                 "with --backbone")
    learning = parser.add_argument_group("training")
    learning.add_argument("--epochs", type=common.positive_int, default=10,
                          help="epochs that train the new head")
    learning.add_argument("--lr", type=common.positive_float, default=3e-3,
                          help="the new head's peak learning rate (AdamW)")
    learning.add_argument("--fine-tune", action="store_true",
                          help="after the head, train the backbone's last stage too")
    learning.add_argument("--fine-tune-epochs", type=common.positive_int, default=10,
                          help="epochs of fine-tuning, after those of the head")
    learning.add_argument("--images-per-class", type=common.non_negative_int, default=100,
                          help="training images kept per class, a tenth of them for validation "
                               "(0 keeps them all)")
    learning.add_argument("--compare", action="store_true",
                          help="train from scratch, with a frozen backbone and fine-tuned, each "
                               "for --epochs + --fine-tune-epochs, and print a table")
    args = common.parse_args(parser)
    if not 32 <= args.image_size <= MAX_IMAGE_SIZE:  # 100,000 would ask for hundreds of GB
        parser.error(f"--image-size must be from 32 (the images' own size) to {MAX_IMAGE_SIZE} "
                     f"(the size ResNet-18 was trained at), not {args.image_size}")
    device = common.get_device(args.device)
    common.seed_everything(args.seed)
    lesson_start = time.perf_counter()


def read_weights_file(path, network):
    """Load ResNet-18 weights from a downloaded .pth file into `network`, safely."""
    path, url = Path(path), ResNet18_Weights.DEFAULT.url
    if not path.is_file():
        problem = f"{path} is a folder, not a file" if path.is_dir() else f"there is no file {path}"
        raise common.UserError(f"{problem}; download {url} and pass its path with --weights-file.")
    try:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # torch.load refuses, or the tensors do not fit: many kinds
        raise common.UserError(f"{path} is not ResNet-18's weights file, or not one torch.load "
                               f"can read safely ({type(error).__name__}); download {url} and "
                               "pass its path with --weights-file.") from None


# %% 1. A network trained on other images ---------------------------------------------------------
# Training a network from scratch needs many images: CIFAR-10 has 5,000 per class. With 50 photos
# of each of your classes, a network starting from random weights learns little. But the early
# layers of any image network learn much the same things (edges, colours, textures, then parts of
# objects), whatever the classes were. Transfer learning keeps those layers from a network trained
# on a large dataset and only learns what is new: how to tell *your* classes apart.
#
# torchvision.models holds well-known networks, each with weights trained on ImageNet. The current
# API names the weights with an enum (a class whose values are a fixed list of named choices):
# ResNet18_Weights.DEFAULT is the best set torchvision has for ResNet-18 (today IMAGENET1K_V1;
# `weights=` replaced the old `pretrained=True`). The enum also carries what came with the
# weights: the file's address, the class names, the accuracy, and the preprocessing (section 2).
# The first call downloads the weights (45 MB) into torch's cache folder; later calls read them
# from there. Without internet, pass the downloaded file with --weights-file.
def load_resnet18(weights_file=None, pretrained=True, image_size=IMAGE_SIZE):
    """ResNet-18 with ImageNet weights (downloaded, or from `weights_file`), or random ones.

    Returns:
        (network, preprocess, description): the whole network, its old classifier included;
        the weights' own preprocessing, at `image_size`, for images with values in [0, 1]; and
        a line saying what it is.

    Raises:
        common.UserError: the weights could not be downloaded or read; it says how to get them.
    """
    weights = ResNet18_Weights.DEFAULT
    # Resized straight to image_size, not to 256 and then cropped (section 2 says why), and
    # without antialiasing, which smooths when shrinking; enlarging has nothing to smooth.
    preprocess = weights.transforms(crop_size=image_size, resize_size=image_size,
                                    antialias=False)
    if weights_file is not None:
        network = resnet18(weights=None)  # the architecture, with random weights
        read_weights_file(weights_file, network)  # then every weight replaced from the file
        description = f"ResNet-18 with ImageNet weights from {weights_file}"
    elif pretrained:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            network = resnet18(weights=weights)  # downloads into `cache` the first time
        except (OSError, RuntimeError):  # no network, a broken download, a full disk
            raise common.UserError(
                f"could not download ResNet-18's ImageNet weights into {cache} (no internet?); "
                f"connect and run again, or download {weights.url} elsewhere and pass it with "
                "--weights-file PATH, or transfer offline from your own network with --backbone "
                "checkpoints/best.pt, or run the code from random weights with --no-pretrained."
                ) from None
        description = f"ResNet-18 with ImageNet weights ({weights.name}, from {cache})"
    else:
        network = resnet18(weights=None)
        description = "ResNet-18 with random weights (--no-pretrained: nothing to transfer)"
    return network, preprocess, description


def load_own_network(checkpoint_path, pretrained=True):
    """A CifarNet from a 05_train.py checkpoint (or, without `pretrained`, the same network with
    random weights, for training from scratch), as (network, preprocess, description) like
    load_resnet18. Its inputs are normalised with the mean and std it was trained with, which
    the checkpoint holds."""
    try:  # a missing or wrong file is one sentence; its advice names 06-08's flag, not ours
        checkpoint = checkpointing.load_checkpoint(checkpoint_path, device="cpu")
    except common.UserError as error:
        raise common.UserError(str(error).replace("--checkpoint", "--backbone")) from None
    config = checkpoint["config"]
    if pretrained:
        network = checkpointing.model_from_checkpoint(checkpoint)
        description = (f"CifarNet {config['model']['size']} from {checkpoint_path}, trained on "
                       f"{', '.join(config['classes'])}")
    else:
        network = models.build_model(**config["model"])
        description = f"CifarNet {config['model']['size']} with random weights"
    return network, transforms.Normalize(config["mean"], config["std"]), description


def load_network(args, pretrained=True):
    """The network the flags ask for: --backbone, else ResNet-18 (--weights-file, or downloaded,
    or with --no-pretrained random). `pretrained=False` gives the same network, random."""
    if args.backbone:
        return load_own_network(args.backbone, pretrained)
    return load_resnet18(args.weights_file if pretrained else None,
                         pretrained and not args.no_pretrained, args.image_size)


if __name__ == "__main__":
    common.section("1. A network trained on other images")
    start = time.perf_counter()
    network, preprocess, description = load_network(args)
    print(f"{description}, loaded in {time.perf_counter() - start:.1f} s")
    old_head = network.fc if isinstance(network, ResNet) else network.classifier
    print(f"{sum(p.numel() for p in network.parameters()):,} parameters; its last layer, "
          f"which scores the classes it was trained on: {old_head}")


# %% 2. Images prepared as the network was trained on them ---------------------------------------
# A network only knows the kind of inputs it was trained on. ResNet-18's ImageNet weights expect
# images normalised with ImageNet's mean and std (not CIFAR-10's), at about 224x224 pixels;
# weights.transforms() is that recipe, written down with the weights: resize, centre crop,
# scale to [0, 1], normalise. It is an nn.Module that works on a whole batch at once, on any
# device, so section 3 makes it the first layer of the new network: every batch, in training,
# evaluation or prediction, is then prepared the same way, and nobody can forget to. (Your own
# 05_train.py network wants 32x32 images normalised with the mean and std in its checkpoint:
# load_own_network uses them.)
#
# The input size. CIFAR-10's images are 32x32, and ResNet-18 halves the size five times: a 32x32
# input leaves a single 1x1 position after its last stage, and its filters, which learned
# ImageNet's objects at 100 to 200 pixels across, would see a whole cat in a few pixels. So the
# images are enlarged: that adds no detail, but lets the objects appear at a scale the filters
# know. The cost grows with the number of pixels: IMAGE_SIZE = 112 leaves a 4x4 map after the
# last stage, at about a quarter of the cost of 224 (GUIDE.md has the speeds measured at each
# size; on a GPU, try --image-size 224). The ImageNet recipe resizes to 256 and then crops the
# centre 224x224, dropping the border; CIFAR-10's objects fill the frame, so we resize straight to
# the final size and crop nothing.
#
# 03_data.InMemoryLoader subtracts a mean and divides by a std; with 0 and 1 it only scales the
# bytes to [0, 1], what weights.transforms() and Normalize start from.
TO_0_1 = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def first_per_class(images, labels, per_class):
    """The first `per_class` images of every class (all of them if per_class is 0)."""
    if per_class == 0:
        return images, labels
    keep = torch.cat([(labels == label).nonzero().flatten()[:per_class]
                      for label in labels.unique()]).sort().values
    return images[keep], labels[keep]


if __name__ == "__main__":
    common.section("2. Images prepared as the network was trained on them")
    start = time.perf_counter()
    # Few images per class, as with photos of your own: that is what transfer learning is for.
    # The limit applies before 03_data's validation split, which then holds out a tenth.
    images, labels, classes = data.load_split(args.data_dir, "train", args.fake_data, args.classes)
    images, labels = first_per_class(images, labels, args.images_per_class)
    if len(labels) < 2:
        raise common.UserError(f"found {len(labels)} training image(s) in {args.data_dir}; at "
                               "least 2 are needed, one to train on and one to validate with.")
    train_indices, val_indices = data.split_train_val(len(labels))
    train = data.Split(images[train_indices], labels[train_indices])
    val = data.Split(images[val_indices], labels[val_indices])
    test_images, test_labels, test_classes = data.load_split(args.data_dir, "test",
                                                             args.fake_data, args.classes)
    if test_classes != classes:  # a label means its class's index: both must list the same
        raise common.UserError(f"{args.data_dir}/train and test/ hold different classes "
                               f"({', '.join(classes)} vs {', '.join(test_classes)}); give "
                               "both the same subfolders.")
    test = data.Split(test_images, test_labels)
    if args.dry_run:  # one batch of each: enough to check that everything runs
        train, val, test = (data.Split(*(part[:args.batch_size] for part in split))
                            for split in (train, val, test))
    print(f"{len(classes)} classes: {', '.join(classes)}")
    print(f"{len(train.labels):,} training, {len(val.labels):,} validation and "
          f"{len(test.labels):,} test images, loaded in {time.perf_counter() - start:.1f} s")
    # Batches of 32x32 images in [0, 1]: training batches are shuffled, randomly cropped and
    # flipped (03's augmentation, at 32x32), the last, smaller one dropped (section 5 says why);
    # the new network's preprocessing does the rest.
    train_loader = data.InMemoryLoader(*train, args.batch_size, device, **TO_0_1, shuffle=True,
                                       augment=True, drop_last=True)
    val_loader = data.InMemoryLoader(*val, 2 * args.batch_size, device, **TO_0_1)
    test_loader = data.InMemoryLoader(*test, 2 * args.batch_size, device, **TO_0_1)
    print("preprocessing:", " ".join(str(preprocess).split()))
    batch = preprocess(next(iter(val_loader))[0])
    print(f"a batch as the backbone gets it: {tuple(batch.shape)}, mean {batch.mean():.2f}, "
          f"std {batch.std():.2f}")


# %% 3. Backbone and head -------------------------------------------------------------------------
# An image network is a backbone, which turns an image into a vector of features (512 numbers for
# ResNet-18, 128 for the small CifarNet), and a head, one Linear layer that scores each class from
# those features. The old head scores the old classes (ImageNet's 1,000, or those your 05 network
# learned); it is dropped, and a new nn.Linear(features, your number of classes) starts from
# random weights. split_network takes a network apart into the backbone (every layer but the last,
# in order, in an nn.Sequential) and the name of its last stage, which --fine-tune unfreezes:
#   - ResNet-18: conv1, bn1, relu, maxpool, layer1 to layer4 (the four stages, each two residual
#     blocks), avgpool; then fc, the head. Its forward flattens avgpool's (N, 512, 1, 1) output
#     to (N, 512), so we add an nn.Flatten.
#   - CifarNet (04_model.py): stem, blocks (three ConvBlocks), pool, flatten; then classifier,
#     whose scores forward multiplies by logit_scale. The new head replaces both.
def split_network(network):
    """Split a ResNet or a CifarNet into (backbone, last stage's name, number of features).

    The backbone is an nn.Sequential of the network's own layers (the same modules, so the same
    weights), named as in the network; the name of the last stage is for get_submodule.
    """
    if isinstance(network, ResNet):
        layers = OrderedDict((name, layer) for name, layer in network.named_children()
                             if name != "fc")
        layers["flatten"] = nn.Flatten()
        return nn.Sequential(layers), "layer4", network.fc.in_features
    if isinstance(network, models.CifarNet):
        layers = OrderedDict(stem=network.stem, blocks=network.blocks, pool=network.pool,
                             flatten=network.flatten)
        return nn.Sequential(layers), "blocks.2", network.classifier.in_features
    raise TypeError(f"split_network knows ResNet and CifarNet, not {type(network).__name__}")


class TransferNet(nn.Module):
    """A pretrained network's preprocessing and backbone, and a new Linear head for
    `num_classes` classes; it takes images with values in [0, 1]. train() keeps the batch-norm
    layers of the frozen part of the backbone in eval mode (section 4)."""

    def __init__(self, network, preprocess, num_classes):
        super().__init__()
        # A copy: training this model never changes `network`, so every model made from it
        # starts from the same weights.
        network = copy.deepcopy(network)
        self.preprocess = preprocess  # weights.transforms() or Normalize: no parameters
        self.backbone, self.last_stage_name, num_features = split_network(network)
        self.head = nn.Linear(num_features, num_classes)

    @property
    def last_stage(self):
        """The backbone's last stage (ResNet's layer4): what --fine-tune trains."""
        return self.backbone.get_submodule(self.last_stage_name)

    def forward(self, images):
        return self.head(self.backbone(self.preprocess(images)))  # (N, num_classes) scores

    def train(self, mode=True):
        super().train(mode)  # every layer in training mode (or, with mode=False, eval mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d) and not any(
                    parameter.requires_grad for parameter in module.parameters()):
                module.eval()  # frozen: keep the running mean and variance it learned
        return self


if __name__ == "__main__":
    common.section("3. Backbone and head")
    model = TransferNet(network, preprocess, len(classes))
    with torch.no_grad():
        features = model.backbone.eval()(batch[:2].cpu())
    print(f"the backbone turns images {tuple(batch[:2].shape)} into features "
          f"{tuple(features.shape)}")
    print(f"the new head: {model.head}, for {', '.join(classes)}")


# %% 4. Freezing the backbone ---------------------------------------------------------------------
# requires_grad_(False) on a module sets requires_grad = False on each of its parameters
# (02_autograd.py): autograd then computes no gradient for them, so backward() stops at the head,
# and an epoch costs about one forward pass of the backbone. Each frozen parameter's .grad stays
# None.
#
# The optimizer gets only the parameters that train. Optimizers skip a parameter whose .grad is
# None, so handing it all of them would work, today. But the list then hides what is trained, and
# the moment a frozen parameter has a gradient of zeros instead of None (one left from an earlier
# phase in which it trained, then zeroed by zero_grad(set_to_none=False)), weight decay and
# momentum move "frozen" weights. Give the optimizer exactly the parameters you mean to train.
#
# Batch-norm needs one more step. Its running mean and variance (04_model.py) are buffers, not
# parameters: requires_grad does not touch them, and in training mode each batch still updates
# them, and normalises with each batch's own statistics rather than the learned ones. A frozen
# backbone would drift towards the statistics of your few images, and the head would train on
# features unlike those it is tested on. So TransferNet.train() puts the batch-norm layers of
# the frozen part in eval mode.
def freeze_backbone(model):
    """Freeze every parameter of the backbone; the head stays trainable."""
    model.backbone.requires_grad_(False)


def trainable_parameters(model):
    """How many numbers the optimizer changes: the parameters with requires_grad."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def make_optimizer(model, lr, backbone_lr=None, weight_decay=WEIGHT_DECAY):
    """AdamW over the parameters that train, in two parameter groups: the head at `lr`, and
    the backbone's trainable parameters (if any) at `backbone_lr`.

    A parameter group is a dict with its own "params" and settings: the optimizer applies each
    group's learning rate to its parameters, and the scheduler scales every group's rate by the
    same factor. Adam scales each parameter's step by the recent size of its gradients, so one
    learning rate suits a new head and a whole network alike (GUIDE.md says why this is not
    05's SGD).
    """
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": lr}]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


if __name__ == "__main__":
    common.section("4. Freezing the backbone")
    print(f"before freezing: {trainable_parameters(model):,} trainable parameters")
    freeze_backbone(model)
    print(f"after freezing:  {trainable_parameters(model):,} (the head's "
          f"{model.head.weight.shape[1]} x {model.head.weight.shape[0]} weights and "
          f"{model.head.bias.numel()} biases)")
    model.last_stage.requires_grad_(True)  # what --fine-tune does, after training the head
    print(f"with {model.last_stage_name} unfrozen too: {trainable_parameters(model):,} trainable")


# %% 5. Training the head, then (--fine-tune) the last stage -------------------------------------
# 05_train.py's train_one_epoch and evaluate take any model and any loader of (float images,
# labels): they train this one unchanged. First the head alone, on the frozen backbone: a random
# head sends large, random gradients back, which would wreck the pretrained features if they were
# trainable from the start. Then, with --fine-tune, the last stage learns too: its features were
# the most specific to the old task, so they gain the most from adapting. It gets a learning rate
# ten times smaller than the head's (a second parameter group), to adjust the pretrained weights
# rather than overwrite them. The earlier stages (edges, colours, textures) stay frozen: they
# suit almost any images, and few images are not enough to improve them.
def train_epochs(model, train_loader, val_loader, optimizer, epochs, device, label):
    """Train `model` for `epochs` epochs with 05_train.py's functions, the learning rate on
    05's schedule (warm-up, then decay); print a line per epoch. A run that diverges ends in a
    common.UserError."""
    loss_fn = nn.CrossEntropyLoss()
    scheduler = training.make_scheduler(optimizer, total_steps=epochs * len(train_loader))
    guessing = math.log(model.head.out_features)  # the loss of equal scores for every class
    for epoch in range(1, epochs + 1):
        try:
            train_loss, train_accuracy = training.train_one_epoch(
                model, train_loader, loss_fn, optimizer, device, scheduler,
                description=f"{label} {epoch}/{epochs}")
            val_loss, val_accuracy = training.evaluate(model, val_loader, loss_fn, device)
        except FloatingPointError as error:  # a loss became nan or infinite
            raise common.UserError(f"{error}: training diverged; try a lower --lr.") from None
        # Steps far too large can also leave the weights scoring far worse than guessing.
        if val_loss > 10 * guessing:
            raise common.UserError(f"the validation loss became {val_loss:.3g}, against "
                                   f"{guessing:.2f} for a guess: training diverged; try a "
                                   "lower --lr.")
        print(f"  {label} {epoch:>2}/{epochs}  train loss {train_loss:.3f} acc "
              f"{100 * train_accuracy:5.1f}%  |  val loss {val_loss:.3f} acc "
              f"{100 * val_accuracy:5.1f}%", flush=True)


METHODS = ("from scratch", "frozen backbone", "fine-tuned")


def train_method(method, network, preprocess, num_classes, train_loader, val_loader, device,
                 lr, head_epochs, fine_tune_epochs=0, seed=0):
    """Train a TransferNet made from `network` and `preprocess`, one of three ways.

    Args:
        method: "from scratch" (`network` should have random weights: everything trains, for
            head_epochs + fine_tune_epochs), "frozen backbone" (the head alone, as long), or
            "fine-tuned" (the head for head_epochs, then the head and the last stage, at
            FINE_TUNE_LR_FACTOR x lr, for fine_tune_epochs).
        seed: the same seed gives every method the same head and the same batches.

    Returns:
        (model, seconds of training, trainable parameters at the end).
    """
    common.seed_everything(seed)
    model = TransferNet(network, preprocess, num_classes)  # a copy: network stays as it is
    model = model.to(device, memory_format=torch.channels_last)  # the layout of the batches
    total_epochs = head_epochs + fine_tune_epochs
    common.synchronize(device)
    start = time.perf_counter()
    if method == "from scratch":
        optimizer = make_optimizer(model, lr, backbone_lr=lr)
        train_epochs(model, train_loader, val_loader, optimizer, total_epochs, device,
                     "all layers")
    else:
        freeze_backbone(model)
        epochs = head_epochs if method == "fine-tuned" else total_epochs
        optimizer = make_optimizer(model, lr)  # the backbone is frozen: only the head's group
        train_epochs(model, train_loader, val_loader, optimizer, epochs, device, "head")
        if method == "fine-tuned":
            model.last_stage.requires_grad_(True)
            # A new optimizer: its groups are the head and the now trainable last stage.
            optimizer = make_optimizer(model, lr, backbone_lr=FINE_TUNE_LR_FACTOR * lr)
            train_epochs(model, train_loader, val_loader, optimizer, fine_tune_epochs, device,
                         f"head + {model.last_stage_name}")
    common.synchronize(device)
    return model, time.perf_counter() - start, trainable_parameters(model)


if __name__ == "__main__":
    common.section("5. Training the head, then (--fine-tune) the last stage")
    head_epochs = 1 if args.dry_run else args.epochs
    fine_tune_epochs = (1 if args.dry_run else args.fine_tune_epochs) if (
        args.fine_tune or args.compare) else 0
    # Batch-norm layers that train (all of them from scratch, the last stage's when fine-tuning)
    # normalise each batch by its own mean and variance, which one image does not have. Without
    # drop_last, 9 images in batches of 8 would end each epoch with a batch of one.
    if fine_tune_epochs and min(args.batch_size, len(train.labels)) < 2:
        raise common.UserError("batch-norm layers cannot train on batches of one image; use "
                               "--batch-size 2 or more, and at least 3 training images (one is "
                               "held out for validation).")
    # --compare trains the network all three ways (section 6 compares them); otherwise, the way
    # you asked for. From scratch starts from the same architecture with random weights.
    methods = METHODS if args.compare else ["fine-tuned" if args.fine_tune else "frozen backbone"]
    results = []
    for method in methods:
        start_network = load_network(args, pretrained=False)[0] if (
            method == "from scratch") else network
        model, seconds, trainable = train_method(
            method, start_network, preprocess, len(classes), train_loader, val_loader, device,
            args.lr, head_epochs, fine_tune_epochs, args.seed)
        _, test_accuracy = training.evaluate(model, test_loader, nn.CrossEntropyLoss(), device)
        print(f"{method}: test accuracy {100 * test_accuracy:.1f}% on {len(test.labels):,} "
              f"images, {trainable:,} trainable parameters, {seconds:.1f} s of training")
        results.append((method, test_accuracy, seconds, trainable))
    if args.fake_data or args.no_pretrained:
        print(f"(Random {'images' if args.fake_data else 'starting weights'}: these numbers "
              f"only show that the code runs; chance is {100 / len(classes):.0f}%.)")


# %% 6. Is it worth it? Scratch vs frozen vs fine-tuned (--compare) ------------------------------
# The claim of this lesson, measured: the same architecture trained three ways, on the same
# images (same batches, same augmentation) and for the same number of epochs, then tested on the
# same test images. From scratch starts from random weights and trains everything; the other two
# start from the pretrained weights. Time is the training time (validation included, the test
# excluded): the frozen and fine-tuned networks train faster, because backward() stops at the
# head, or at the last stage. Try it with a network you trained on some classes (--backbone) and
# a --data-dir of *other* classes: what transfers is what it learned about images in general.
# README.md ("Next steps, measured") has such a run, and what it found.
if __name__ == "__main__":
    common.section("6. Scratch vs frozen vs fine-tuned (--compare)")
    if not args.compare:
        print("Run with --compare to train all three on the same images and compare them.")
    else:
        print(description)
        print(f"{len(train.labels):,} training images of {len(classes)} classes, "
              f"{head_epochs + fine_tune_epochs} epochs each, tested on {len(test.labels):,}:")
        print(f"  {'method':<16} {'test accuracy':>13} {'training time':>14} "
              f"{'trainable parameters':>21}")
        for method, test_accuracy, seconds, trainable in results:
            print(f"  {method:<16} {100 * test_accuracy:12.1f}% {seconds:13.1f}s "
                  f"{trainable:>21,}")


# %% What you did, and what comes next ------------------------------------------------------------
# You took a network trained on other images, kept its backbone, and gave it a new head for your
# classes; froze the backbone so that only the head learned (batch-norm included); with
# --fine-tune let its last stage adapt too, at a tenth of the learning rate; and with --compare
# measured what that is worth against the same network trained from scratch on the same few
# images. Next, 10_sequences.py leaves images for text: an LSTM that reads one character at a
# time and learns to predict the next.
if __name__ == "__main__":
    print(f"\nFinished in {time.perf_counter() - lesson_start:.0f} s. Next, 10_sequences.py: "
          "an LSTM that learns to write text.")
