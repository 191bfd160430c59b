"""04 - The model: a convolutional network for CIFAR-10, as an nn.Module.

What you will learn
    - how a network is a Python class: layers made in __init__, data flow written in forward
    - what each layer does (Conv2d, BatchNorm2d, GELU, MaxPool2d, Linear) and why it is there
    - the same network written with nn.Sequential, and when to prefer which
    - how the shape of a batch changes layer by layer, and where the parameters are

Run it
    python 04_model.py                      # the default, CPU-friendly size
    python 04_model.py --model-size large   # the size meant for a GPU

Reads nothing. Writes outputs/model_architecture.png (a diagram of the network).

The class defined here, CifarNet, is the one that 05_train.py trains and 06-08 load: they get it
through common.model_module(), so there is exactly one definition of the network.
"""

# %% Imports
import torch
from torch import nn

# %% The building block ---------------------------------------------------------------------------
# The network's sizes, by name. Each tuple gives the channels after the stem and after each of the
# three blocks. "small" trains 10 epochs on a laptop CPU in about a quarter of an hour; "large" has
# about 30 times more parameters and is meant for a GPU (10 epochs in seconds on an H100).
MODEL_SIZES = {
    "small": (24, 32, 64, 128),
    "large": (64, 192, 768, 768),
}


class ConvBlock(nn.Module):
    """conv -> max-pool -> batch-norm -> GELU -> conv -> batch-norm -> GELU.

    The block halves the height and width of its input (the max-pool) and changes the number of
    channels from `in_channels` to `out_channels`.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        # A 3x3 convolution slides 3x3 filters over the image; padding=1 keeps height and width.
        # bias=False because the batch-norm right after it adds its own bias.
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        # Max-pooling keeps the largest value of each 2x2 patch: half the height and width, so the
        # next layers see a wider part of the image for the same cost.
        self.pool = nn.MaxPool2d(kernel_size=2)
        # Batch-norm rescales each channel to mean 0 and variance 1 over the batch (then learns a
        # scale and a shift). It keeps activations in a good range, so a high learning rate works.
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        # GELU is a smooth ReLU: it lets positive values through and squashes negative ones
        # towards 0. Without a non-linearity, stacked layers would collapse into one linear map.
        self.activation = nn.GELU()

    def forward(self, x):
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        x = self.activation(self.norm2(self.conv2(x)))
        return x


# %% The network -----------------------------------------------------------------------------------
class CifarNet(nn.Module):
    """A CNN for 32x32 colour images: a stem, three ConvBlocks, global max-pool, a linear layer.

    Args:
        size: a key of MODEL_SIZES ("small" or "large").
        num_classes: how many classes to score (10 for CIFAR-10).

    Input: a float tensor (N, 3, 32, 32), normalised. Output: (N, num_classes) scores (logits).
    """

    def __init__(self, size="small", num_classes=10):
        super().__init__()
        stem_width, *block_widths = MODEL_SIZES[size]
        self.size = size
        self.num_classes = num_classes
        # The stem turns 3 colour channels into `stem_width` feature maps, still 32x32.
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.GELU(),
        )
        # Three blocks: 32x32 -> 16x16 -> 8x8 -> 4x4, with more channels each time.
        self.blocks = nn.Sequential(
            ConvBlock(stem_width, block_widths[0]),
            ConvBlock(block_widths[0], block_widths[1]),
            ConvBlock(block_widths[1], block_widths[2]),
        )
        # Global max-pool: the largest value of each channel over the 4x4 map, whatever the
        # position, so (N, C, 4, 4) becomes (N, C, 1, 1).
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()  # (N, C, 1, 1) -> (N, C)
        # One score per class. No softmax here: nn.CrossEntropyLoss wants the raw scores.
        self.classifier = nn.Linear(block_widths[2], num_classes, bias=False)
        # The scores are multiplied by 1/8. At the start of training this keeps them small, so the
        # network is not confidently wrong, and it lets the last layer learn more gently than the
        # rest at the same learning rate. It is a constant, not a parameter.
        self.logit_scale = 1 / 8

    def forward(self, x):
        x = self.stem(x)
        x = self.blocks(x)
        x = self.flatten(self.pool(x))
        return self.classifier(x) * self.logit_scale


def build_model(size="small", num_classes=10):
    """Make a CifarNet; 05-08 call this (through common) so that they all build the same network.

    Args:
        size: a key of MODEL_SIZES.
        num_classes: how many classes to score.

    Returns:
        A new CifarNet with freshly initialised weights.
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    return CifarNet(size=size, num_classes=num_classes)


def main():
    model = build_model()
    print(model)
    images = torch.randn(8, 3, 32, 32)
    print("output shape:", tuple(model(images).shape))
    print("parameters:", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
