"""04 The model: a convolutional network for CIFAR-10, written as an nn.Module.

What you will learn
    - How a network is a Python class: its layers are made in __init__, and forward says how the
      data flows through them. Why subclassing nn.Module pays: parameters are registered for you,
      and .to(device), train()/eval() and state_dict() then work on the whole network at once.
    - What each layer does (Conv2d, MaxPool2d, BatchNorm2d, GELU, Linear) and why it is there.
    - The same idea with nn.Sequential, and when to prefer which.
    - How the shape of a batch changes layer by layer, and the formula behind it.
    - Where the parameters are, counted layer by layer.
    - How train() and eval() change what batch-norm does.
    - Why the network outputs raw scores (logits) and no softmax, and what softmax makes of them.

How to run it
    python 04_model.py                      # the default size, made for a CPU
    python 04_model.py --model-size large   # the size made for a GPU (a forward pass runs anywhere)
    python 04_model.py --help               # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter. It takes a few seconds on a CPU.

Reads nothing: the network is fed random numbers, because an untrained network is all there is
to look at yet. Writes outputs/model_architecture.png, a diagram of the network.

The class defined here, CifarNet, is the one that 05_train.py trains and 06-08 load: they call
common.import_script("04_model").build_model(...), so the network is defined once, in this file.
That is why each cell below first defines what it teaches and then shows it in use under
`if __name__ == "__main__":`. That condition is true only when you run this file yourself (or in
Jupyter); when another script imports it, only the definitions run: nothing is printed, computed
or drawn.
"""

# %% Setup ---------------------------------------------------------------------------------------
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import common

# The network's sizes, by name. Each tuple gives the number of channels after the stem and after
# each of the three blocks (both are defined below). "small" (0.29 million parameters) trains
# 10 epochs on a laptop CPU in about a quarter of an hour; "large" has about 60 times as many
# (17.7 million) and is meant for a GPU (10 epochs in seconds on an H100).
MODEL_SIZES = {
    "small": (16, 32, 64, 128),
    "large": (64, 192, 768, 768),
}

# Plumbing, down to the building block, which you can skip: errors, flags, device and seed.
if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (no GPU for --device cuda): one sentence
    parser = common.make_parser(
        "Lesson 4: the CifarNet model, its shapes and parameters, and a diagram.",
        device_purpose="where the network and the example images live",
        seed_help="random seed (the starting weights and the example images)")
    parser.add_argument("--model-size", default="small", choices=sorted(MODEL_SIZES),
                        help="small: made for a CPU; large: about 60 times the parameters, "
                             "made for a GPU")
    args = common.parse_args(parser)
    device = common.get_device(args.device)
    common.seed_everything(args.seed)  # the same seed, the same weights and images, same output


# %% The building block: convolution, max-pool, batch-norm, GELU --------------------------------
class ConvBlock(nn.Module):
    """conv -> max-pool -> batch-norm -> GELU -> conv -> batch-norm -> GELU.

    The block halves the height and width of its input (the max-pool) and changes the number of
    channels from `in_channels` to `out_channels`.
    """

    def __init__(self, in_channels, out_channels):
        # nn.Module's own __init__ sets up the bookkeeping that records the layers assigned
        # below; it must run before the first `self.something = layer`.
        super().__init__()
        # A 3x3 convolution: each of its out_channels filters is a small 3x3 window of weights
        # (one per input channel) slid over every position of the image; each filter gives one
        # output channel, a "feature map" of how strongly its pattern appears where.
        # padding=1 adds a border of zeros so that the height and width stay the same.
        # bias=False: norm1 below subtracts each channel's mean, which would cancel any constant
        # that a bias added, and then adds a learned shift of its own.
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        # Max-pooling keeps the largest value of each 2x2 patch: half the height and width, so the
        # next layers see a wider part of the image for the same cost. Pooling straight after the
        # first convolution also means that the batch-norm and GELU below work on a quarter of
        # the pixels.
        self.pool = nn.MaxPool2d(kernel_size=2)
        # Batch normalisation ("batch-norm"). For each channel, it takes the mean and standard
        # deviation of that channel over the whole batch (every image, every position), rescales
        # the channel to mean 0 and standard deviation 1, then multiplies by a learned scale (its
        # `weight`, starting at 1) and adds a learned shift (its `bias`, starting at 0). Why:
        # whatever the earlier layers' weights do during training, the next layer gets inputs of
        # a steady size, so training tolerates a high learning rate and needs fewer epochs. A
        # catch, shown in section 5: an image's output then depends on the rest of its batch, so
        # for evaluation batch-norm switches to averages it keeps during training.
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        # GELU is a smooth ReLU: it lets positive values through (almost unchanged) and squashes
        # negative ones to near 0 (never below -0.17). Without a non-linearity between them, two
        # convolutions in a row would be no more than one (a linear map of a linear map is
        # linear). GELU has no parameters, so one module can serve both places in forward.
        self.activation = nn.GELU()

    def forward(self, x):
        # x: a batch of feature maps, shape (N, in_channels, height, width).
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        x = self.activation(self.norm2(self.conv2(x)))
        return x  # (N, out_channels, height // 2, width // 2): max-pool rounds down


# %% The network ---------------------------------------------------------------------------------
class CifarNet(nn.Module):
    """A CNN for small images: a stem, three ConvBlocks, global max-pool, a linear layer.

    Args:
        size: a key of MODEL_SIZES ("small" or "large").
        num_classes: how many classes to score (10 for CIFAR-10).
        in_channels: how many channels each image has (3 for colour, 1 for grayscale).

    Input: a float tensor (N, in_channels, height, width), normalised, with height and width of
    at least 8 (CIFAR-10's are 32x32). Output: (N, num_classes) scores (logits).
    """

    def __init__(self, size="small", num_classes=10, in_channels=3):
        super().__init__()
        stem_width, *block_widths = MODEL_SIZES[size]
        self.size = size
        self.num_classes = num_classes
        self.in_channels = in_channels
        # The stem turns the image's channels (3 for colour) into `stem_width` feature maps,
        # keeping the height and width. nn.Sequential holds layers and runs them one after the
        # other (section 2 says more).
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.GELU(),
        )
        # Three blocks: 32x32 -> 16x16 -> 8x8 -> 4x4, with more channels each time.
        self.blocks = nn.Sequential(
            ConvBlock(stem_width, block_widths[0]),
            ConvBlock(block_widths[0], block_widths[1]),
            ConvBlock(block_widths[1], block_widths[2]),
        )
        # Global max-pool: the largest value of each channel over the last map (4x4 for 32x32
        # images), so (N, C, 4, 4) becomes (N, C, 1, 1): "is this feature anywhere in the image?".
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()  # (N, C, 1, 1) -> (N, C), the shape Linear takes
        # The classifier gives one score per class, a "logit": section 6 shows how softmax turns
        # logits into probabilities, and why the model leaves that to the loss function.
        # bias=False: a bias would add a fixed score per class whatever the image, a built-in
        # preference for some classes. CIFAR-10 has equally many images of every class, so it
        # would have little to learn; the recipe this network follows (next comment) has none.
        self.classifier = nn.Linear(block_widths[2], num_classes, bias=False)
        # The scores are multiplied by 1/8, a constant (not a parameter), so that an untrained
        # network starts with small scores, close to "no opinion" (section 6 shows the scores
        # and the loss with and without it). The value is tuned, like a learning rate: this
        # layout (conv, pool, batch-norm, GELU blocks; a global max-pool; a Linear without bias,
        # scaled down) follows the fast CIFAR-10 training scripts of the "speed-run" community,
        # e.g. Keller Jordan's airbench (github.com/KellerJordan/cifar10-airbench), which uses 1/9.
        self.logit_scale = 1 / 8

    def forward(self, x):
        # x: a batch of normalised images, shape (N, in_channels, height, width).
        x = self.stem(x)
        x = self.blocks(x)
        x = self.flatten(self.pool(x))
        return self.classifier(x) * self.logit_scale  # (N, num_classes)


def build_model(size="small", num_classes=10, in_channels=3):
    """Make a CifarNet; 05-08 call this, so that they all build the same network.

    Args:
        size: a key of MODEL_SIZES.
        num_classes: how many classes to score.
        in_channels: how many channels each image has (3 for colour, 1 for grayscale).

    Returns:
        A new CifarNet with freshly initialised weights.
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    return CifarNet(size=size, num_classes=num_classes, in_channels=in_channels)


def shape_of(tensor):
    """A tensor's shape as a plain tuple, which prints as (8, 3, 32, 32)."""
    return tuple(tensor.shape)


def max_difference(a, b):
    """The largest absolute difference between two tensors of the same shape, as a float."""
    return (a - b).abs().max().item()


if __name__ == "__main__":
    model = build_model(args.model_size).to(device)
    # Stand-ins for a batch of normalised CIFAR-10 images: random numbers with mean 0 and
    # standard deviation 1 per channel, which is what normalisation (03_data.py) makes of real
    # pixels. A few images are enough for batch-norm's statistics, and two keep the large
    # network's forward passes (60 times the work) quick on a CPU too.
    data = common.import_script("03_data")  # the CIFAR-10 image size and class names
    batch_size = {"small": 8, "large": 2}[args.model_size]
    images = torch.randn(batch_size, 3, data.IMAGE_SIZE, data.IMAGE_SIZE, device=device)
    print(f"model size {args.model_size!r} on {device}; a batch of {batch_size} random images "
          f"{shape_of(images)}")


# %% 1. A network is a class ----------------------------------------------------------------------
if __name__ == "__main__":
    common.section("1. A network is a class: __init__ makes the layers, forward wires them")
    # Printing a module lists the layers that __init__ created, nested the way they were
    # assigned: `stem` and `blocks` are nn.Sequential containers, each block is a ConvBlock.
    # forward() is not shown: the printout lists the parts, not how the data flows (section 3).
    print(model)

    # Calling the model runs its forward(). Call model(images), not model.forward(images): the
    # call goes through nn.Module.__call__, which also runs any hooks (see "Going further").
    outputs = model(images)
    print(f"\nmodel(images): {shape_of(images)} -> {shape_of(outputs)}, one score per class "
          "for each image")
    # As in 02_autograd.py, the output remembers how it was computed, ready for backward():
    print("the output's grad_fn:", type(outputs.grad_fn).__name__,
          "(the last operation of forward: the multiplication by logit_scale)")

    # Why subclass nn.Module rather than write a plain class? Because assigning a layer (or an
    # nn.Parameter) to `self.something` in __init__ registers it: nn.Module keeps a list of its
    # submodules and their parameters. Everything below relies on that list.
    parameters = list(model.parameters())
    print(f"\nmodel.parameters(): {len(parameters)} tensors, found in every nested layer, e.g.")
    for name, parameter in list(model.named_parameters())[:3]:
        print(f"    {name:20s} {str(shape_of(parameter)):16s} "
              f"requires_grad={parameter.requires_grad}")
    # That list is what you hand to an optimizer: torch.optim.SGD(model.parameters(), lr=0.1).
    # logit_scale is a plain float, not an nn.Parameter, so it is not in the list: it is a
    # constant the optimizer must not change.

    # The classic mistake: layers kept in a plain Python list are invisible to nn.Module. They
    # compute, but they are not trained, not moved by .to() and not saved. nn.ModuleList (or
    # nn.Sequential) registers them.
    class TwoLists(nn.Module):
        def __init__(self):
            super().__init__()
            self.plain = [nn.Linear(4, 4), nn.Linear(4, 4)]  # wrong: a plain list
            self.registered = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])  # right

    print("two Linear(4, 4) in a plain list, two in an nn.ModuleList; the parameters registered:",
          [name for name, _ in TwoLists().named_parameters()])

    # .to(device) moves every registered parameter and buffer (a buffer is a tensor the module
    # keeps but does not train, such as batch-norm's running averages). The setup above called
    # it; it changes the module in place (and returns it, hence `build_model(...).to(device)`).
    places = {str(tensor.device) for tensor in [*model.parameters(), *model.buffers()]}
    print(f"\nafter model.to({str(device)!r}), the parameters and buffers are on: "
          f"{', '.join(sorted(places))}")

    # state_dict() maps names to tensors: every parameter and every buffer. It is what a
    # checkpoint saves (05_train.py) and what load_state_dict() puts back (06-08). The names are
    # the attribute paths, "blocks.0.conv1.weight" for self.blocks[0].conv1.weight, which is why
    # renaming an attribute breaks loading of old checkpoints.
    state = model.state_dict()
    buffers = [name for name, _ in model.named_buffers()]
    print(f"\nmodel.state_dict(): {len(state)} entries = {len(parameters)} parameters "
          f"+ {len(buffers)} buffers, e.g.")
    for name in ["stem.0.weight", "blocks.0.norm1.weight", "blocks.0.norm1.running_mean",
                 "blocks.0.norm1.num_batches_tracked", "classifier.weight"]:
        print(f"    {name:36s} {shape_of(state[name])}")


# %% 2. The same idea with nn.Sequential ----------------------------------------------------------
# nn.Sequential is a module whose forward() calls its layers one after the other, each on the
# output of the one before. When a network, or a part of one, is such a straight pipe, that is
# all forward() would say, and you need no class of your own. CifarNet uses it for its stem and
# to chain its blocks; a ConvBlock is a straight pipe too, so it can be one as well:
def sequential_conv_block(in_channels, out_channels):
    """ConvBlock as an nn.Sequential: the same layers, in the order ConvBlock.forward runs them."""
    # Passing an OrderedDict names the layers (passed one by one, they are numbered 0, 1, ...).
    # ConvBlock's one GELU, called twice in its forward, becomes two layers here.
    return nn.Sequential(OrderedDict({
        "conv1": nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        "pool": nn.MaxPool2d(kernel_size=2),
        "norm1": nn.BatchNorm2d(out_channels),
        "activation1": nn.GELU(),
        "conv2": nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        "norm2": nn.BatchNorm2d(out_channels),
        "activation2": nn.GELU(),
    }))


if __name__ == "__main__":
    common.section("2. The same idea with nn.Sequential")
    block = model.blocks[0]  # CifarNet's first ConvBlock
    sequential = sequential_conv_block(block.conv1.in_channels, block.conv1.out_channels).to(device)
    print(sequential)
    model.eval()  # batch-norm uses its running averages, the same every call (section 5)
    sequential.eval()
    with torch.no_grad():  # no training here, so no need to record a graph for backward()
        features = model.stem(images)  # what the first block receives
        # Different random weights, so different outputs: not a bug, the point of what follows.
        print(f"max |difference| of the outputs, each with its own random weights: "
              f"{max_difference(sequential(features), block(features)):.4g}")
        # The layers that hold tensors have ConvBlock's names (conv1, norm1, conv2, norm2), so the
        # block's state_dict (parameters and buffers) loads without renaming a single key;
        # load_state_dict is strict by default: a missing or unexpected key is an error.
        sequential.load_state_dict(block.state_dict())
        print(f"after loading the ConvBlock's state_dict into it: "
              f"{max_difference(sequential(features), block(features)):.4g} "
              "(the same numbers: the same block)")

    # When to use which:
    #   - nn.Sequential for a straight pipe: each layer takes one tensor, returns one tensor, and
    #     feeds the next. It is shorter, and every layer is reachable by name or index
    #     (sequential.conv1, model.stem[0]).
    #   - A subclass of nn.Module as soon as forward() needs real code: a skip connection
    #     (x + block(x), as in ResNet), branches that merge, several inputs or outputs, an `if`,
    #     or a small computation such as CifarNet's `* logit_scale` (in a Sequential it would
    #     have to become a module of its own). Most networks mix both: CifarNet is a class that
    #     holds Sequentials.


# %% 3. How the shape changes, layer by layer -----------------------------------------------------
# forward() only calls the layers in order, so we can do its work by hand, one layer at a time,
# and look at the shape after each.
def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    """Height (or width) after a Conv2d or MaxPool2d, by the formula in PyTorch's documentation."""
    return math.floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1


def layer_by_layer(model, images):
    """Run `images` through a CifarNet one layer at a time, in the order its forward() does.

    Returns (records, output): records lists (name, layer, output shape) for every step, from
    ("(input)", None, ...) to ("* logit_scale", None, ...); output is what model(images) gives.
    """
    steps = [(f"stem.{index}", layer) for index, layer in enumerate(model.stem)]
    for index, block in enumerate(model.blocks):
        # The order of ConvBlock.forward; its one GELU module is called twice.
        steps += [(f"blocks.{index}.{name}", getattr(block, name)) for name in
                  ["conv1", "pool", "norm1", "activation", "conv2", "norm2", "activation"]]
    steps += [("pool", model.pool), ("flatten", model.flatten), ("classifier", model.classifier)]
    x = images
    records = [("(input)", None, shape_of(x))]
    for name, layer in steps:
        x = layer(x)
        records.append((name, layer, shape_of(x)))
    x = x * model.logit_scale  # not a layer, but a step of forward() all the same
    records.append(("* logit_scale", None, shape_of(x)))
    return records, x


if __name__ == "__main__":
    common.section("3. How the shape changes, layer by layer")
    model.eval()
    with torch.no_grad():
        records, output = layer_by_layer(model, images)
        same_as_forward = torch.equal(output, model(images))
    print(f"{'layer':22s} {'type':18s} output shape")
    for name, layer, shape in records:
        kind = type(layer).__name__ if layer is not None else ""
        print(f"{name:22s} {kind:18s} {shape}")
    print("the same scores as model(images):", same_as_forward)
    # Things to notice: the batch dimension N, first, never changes; the stem and every conv
    # keep the height and width and change the channels; each MaxPool2d halves height and width;
    # the GELU of a block appears twice, because forward() calls that one module twice; Flatten
    # turns (N, C, 1, 1) into (N, C), what Linear wants; Linear maps C features to 10 scores.

    # Conv2d and MaxPool2d work out the output height (and width) the same way:
    #     out = floor((in + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1
    # A 3x3 conv with padding=1 and stride 1 gives (32 + 2 - 2 - 1) / 1 + 1 = 32: "same" size.
    # MaxPool2d(2) has stride = kernel_size = 2 by default: floor((32 - 1 - 1) / 2) + 1 = 16.
    # An odd size rounds down: a 2x2 max-pool makes 7 out of 15, and the last row is dropped.
    # A convolution's channels are simply its out_channels; pooling keeps the channels.
    print("\nout = floor((in + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1")
    print("  Conv2d(kernel_size=3, padding=1) on 32:", conv_output_size(32, 3, padding=1),
          "| MaxPool2d(2) on 32:", conv_output_size(32, 2, stride=2),
          "| MaxPool2d(2) on 15:", conv_output_size(15, 2, stride=2),
          "| Conv2d(kernel_size=3) without padding on 32:", conv_output_size(32, 3))


# %% 4. Where the parameters are ------------------------------------------------------------------
def parameter_formula(module):
    """How a layer's parameter count is made up, from the shapes of the parameters it holds
    itself: '32×16×3×3' for a conv's weight, '32 + 32' for a batch-norm's scale and shift."""
    shapes = [parameter.shape for parameter in module.parameters(recurse=False)]
    return " + ".join("×".join(str(size) for size in shape) for shape in shapes)


if __name__ == "__main__":
    common.section("4. Where the parameters are")
    # A parameter is one learned number. parameters(recurse=False) gives the ones a layer holds
    # itself, so each number is counted once, in the layer that owns it.
    by_type = {}
    print(f"{'layer':22s} {'type':12s} {'formula':12s} {'parameters':>10s}")
    for name, module in model.named_modules():
        count = sum(p.numel() for p in module.parameters(recurse=False))
        if count:
            kind = type(module).__name__
            by_type[kind] = by_type.get(kind, 0) + count
            print(f"{name:22s} {kind:12s} {parameter_formula(module):12s} {count:10,d}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"total parameters: {total:,d}")
    print(f"trainable parameters: {trainable:,d}  (all of them: nothing is frozen)")
    print("by type: " + ", ".join(f"{kind} {count:,d} ({count / total:.1%})"
                                  for kind, count in by_type.items()))
    # What to look at:
    #   - A conv has out × in × 3 × 3 weights, so doubling the channels on both sides makes it
    #     4 times bigger: the last block's convs hold most of the network.
    #   - Batch-norm has 2 parameters per channel (its scale and shift): next to nothing. Its
    #     running mean and variance are buffers: saved in the state_dict, but not trained.
    #   - The last layer, Linear, has one weight per (feature, class) pair, C × 10, and no bias.
    #   - Pooling, GELU and Flatten have none. The convs have no bias (batch-norm adds one).
    # Memory: 4 bytes per float32 parameter. Training needs several times that (gradients,
    # optimizer state and the activations of the batch), and activations usually dominate.


# %% 5. train() and eval() ------------------------------------------------------------------------
# In training mode, batch-norm normalises each channel with the mean and variance of the current
# batch, and it updates running averages of them (its buffers). In evaluation mode it uses those
# running averages instead. So:
#   - in train() the output for one image depends on the other images of its batch;
#   - in eval() every image is processed on its own: the same image gives the same output,
#     whatever batch it is in, every time.
# Forget model.eval() before evaluating or predicting, and the answer for an image changes with
# the images it happens to be batched with. (Dropout, which randomly zeroes some activations
# during training and which this network does not use, is the other common layer that eval()
# switches off.) eval() does not stop the recording of a graph for gradients; that is
# torch.no_grad()'s job, so evaluation code uses both.
if __name__ == "__main__":
    common.section("5. train() and eval(): batch-norm behaves differently")
    norm = model.stem[1]  # the first batch-norm, whose counter of batches seen we watch
    with torch.no_grad():
        model.train()
        tracked_before = norm.num_batches_tracked.item()
        train_output = model(images)
        other_companions = torch.cat([images[:1], torch.randn_like(images[1:])])
        train_output_other_batch = model(other_companions)  # image 0, among new images
        tracked_after = norm.num_batches_tracked.item()

        model.eval()
        eval_output = model(images)
        eval_output_again = model(images)
        eval_output_alone = model(images[:1])  # image 0 on its own, a batch of one
    print(f"train() vs eval(), same images: max |difference| of the outputs "
          f"{max_difference(train_output, eval_output):.4g}")
    # The two modes differ this much because the network is untrained: its running averages are
    # still close to where they start (mean 0, variance 1). During training they follow the
    # batches, and train() and eval() then give close, though not equal, answers.
    print(f"train(): image 0 with other companions in its batch: max |difference| "
          f"{max_difference(train_output[0], train_output_other_batch[0]):.4g}")
    print(f"train(): batch-norm counted {tracked_after - tracked_before} more batches "
          "into its running averages (its buffers changed)")
    print("eval(): the same images twice give identical outputs:",
          torch.equal(eval_output, eval_output_again))
    print(f"eval(): image 0 alone vs in its batch: max |difference| "
          f"{max_difference(eval_output[0], eval_output_alone[0]):.2g} (rounding only)")
    # train() and eval() set a `training` flag on the module and on every submodule; only a few
    # kinds of layer read it (batch-norm and dropout are the common ones).
    print("after model.eval(): model.training =", model.training,
          "| model.blocks[0].norm1.training =", model.blocks[0].norm1.training)


# %% 6. Logits, not probabilities -----------------------------------------------------------------
# The network ends with a Linear layer, so it outputs 10 unbounded scores per image: logits. A
# larger logit means "more likely", but they are not probabilities: they can be negative and do
# not add up to 1. softmax turns them into probabilities:
#     p_i = exp(z_i) / sum_j exp(z_j)
# The model does not end with one because training does not want it: nn.CrossEntropyLoss takes
# the logits, applies log-softmax itself and picks the log-probability of the right class, in one
# step that stays accurate where exp() would overflow or round to 0. A softmax in the model would
# be applied twice, and learning would crawl. So: logits out of the model, softmax only when a
# person wants to read probabilities (08_predict.py), and argmax for the predicted class, which is
# the same with or without softmax (it never changes the order).
if __name__ == "__main__":
    common.section("6. The output: logits, not probabilities")
    # The logits in training mode, as the loss sees them at the first training step. (In eval
    # mode, an untrained network's running averages do not fit it yet: section 5.)
    model.train()
    with torch.no_grad():
        logits = model(images)
    probabilities = logits.softmax(dim=1)
    torch.set_printoptions(precision=3, sci_mode=False)
    print("logits of image 0: ", logits[0].cpu())
    print("softmax of image 0:", probabilities[0].cpu())
    print("each row of probabilities sums to:",
          [round(value, 4) for value in probabilities.sum(dim=1).tolist()])
    print(f"the probabilities range from {probabilities.min().item():.3f} to "
          f"{probabilities.max().item():.3f} (uniform: {1 / model.num_classes:.3f}): untrained, "
          "the model has no opinion yet")
    labels = torch.arange(len(images), device=device) % model.num_classes  # any labels will do
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, labels)
    rows = torch.arange(len(labels), device=device)
    by_hand = -F.log_softmax(logits, dim=1)[rows, labels].mean()
    print(f"CrossEntropyLoss()(logits, labels) = {loss.item():.4f}; the mean of -log(softmax) "
          f"of each image's label, by hand: {by_hand.item():.4f}; a uniform guess: "
          f"ln({model.num_classes}) = {math.log(model.num_classes):.4f}")
    # What logit_scale (CifarNet.__init__) buys: undo it, and the same scores are 8 times larger.
    # The probabilities move away from uniform, towards confident guesses about classes the
    # network knows nothing of yet, and the loss is usually higher. Measured on 64 random images,
    # seeds 0-9, both sizes: scores with a standard deviation of 0.08 to 0.18, and a loss of 2.30
    # to 2.33 with the scale, 2.5 to 3.6 without. On the few images here the loss varies more
    # (the large model, seed 0: 2.27 with the scale, 2.31 without).
    unscaled = logits / model.logit_scale
    print(f"without the * {model.logit_scale}: probabilities up to "
          f"{unscaled.softmax(dim=1).max().item():.3f}, "
          f"loss {loss_fn(unscaled, labels).item():.4f}")
    # The argmax still picks one class per image, and an untrained network tends to pick the
    # same few for everything: its tiny random preferences, not anything it has learned.
    predicted = logits.argmax(dim=1)
    print("predicted classes (argmax of the logits):",
          [data.CIFAR10_CLASSES[index] for index in predicted.tolist()])


# %% 7. A diagram of the network ------------------------------------------------------------------
# Section 3's shapes, drawn: one column per stage, one box per layer with the shape it outputs.
# The drawing code teaches matplotlib, not PyTorch, so it lives in figures.py.
if __name__ == "__main__":
    import figures

    common.section("7. A diagram of the network")
    diagram_path = figures.draw_architecture(model, records,
                                             common.OUTPUT_DIR / "model_architecture.png")
    print("saved the architecture diagram to", diagram_path)


# %% Going further (a first read can skip this) ---------------------------------------------------
#   - Forward hooks: layer.register_forward_hook(function) makes every call of the layer also call
#     function(layer, inputs, output): a way to record the shapes of any network, without
#     knowing its forward() as section 3 did. Call .remove() on the handle it returns after.
#   - The "meta" device: under `with torch.device("meta"):` tensors get a shape but no memory,
#     so even a huge network is built at once, to count its parameters (as tests/ do).
#   - logit_scale during training: the classifier's gradient is 8 times smaller and each change
#     moves the scores 8 times less, so with plain SGD it learns as if at 1/64 of the rate.


# %% Summary ---------------------------------------------------------------------------------------
if __name__ == "__main__":
    common.section("Summary: what you just did")
    print("""\
- wrote a network as a class: its layers made in __init__, the data flow in forward
- wrote a part of it, a ConvBlock, as an nn.Sequential, and loaded the block's weights into it
- followed a batch's shape layer by layer, and counted the parameters of every layer
- saw that train() and eval() change what batch-norm does
- read the output as logits, turned them into probabilities with softmax, and into a loss""")
    print("\nNext, 05_train.py: the training loop that teaches this network to classify images.")
