"""The code that only draws: each function here makes one of the lessons' figures as a PNG file.

A lesson computes what a figure shows and calls one function from here in one line, so that the
lesson itself holds PyTorch and not matplotlib layout. Nothing here is needed to follow a lesson;
read it when you want to know how a figure is drawn. Every function writes a PNG file (headless
machines have no window to show it in) and returns its path.
"""

from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw into files, never a window: works on servers and over SSH
import matplotlib.pyplot as plt  # noqa: E402  (must come after matplotlib.use)
from matplotlib.patches import FancyBboxPatch, Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402


# %% 04_model.py: the architecture of CifarNet ---------------------------------------------------
ARCHITECTURE_COLOURS = {  # one colour per kind of layer, for the boxes and the legend
    "Conv2d": "#8ecae6",
    "MaxPool2d": "#ffb703",
    "AdaptiveMaxPool2d": "#ffb703",
    "BatchNorm2d": "#b7e4c7",
    "GELU": "#cdb4db",
    "Flatten": "#e9ecef",
    "Linear": "#f4a261",
    "scale": "#e9ecef",
}


def _layer_label(module):
    """A short label for a layer's box: 'Conv 3×3, 16→32', 'BatchNorm (32)', ..."""
    if isinstance(module, nn.Conv2d):
        height, width = module.kernel_size
        return f"Conv {height}×{width}, {module.in_channels}→{module.out_channels}"
    if isinstance(module, nn.MaxPool2d):
        return f"MaxPool {module.kernel_size}×{module.kernel_size}"
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return "global MaxPool"
    if isinstance(module, nn.BatchNorm2d):
        return f"BatchNorm ({module.num_features})"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}→{module.out_features}"
    return type(module).__name__


def _per_image_shape(shape):
    """(8, 24, 32, 32) -> '24×32×32': the shape of one image, without the batch dimension."""
    return "×".join(str(size) for size in shape[1:])


def draw_architecture(model, records, path):
    """Draw 04_model.py's CifarNet as boxes, one column per stage, and save it as a PNG.

    Args:
        model: the CifarNet that `records` describe (its size, num_classes and logit_scale are
            shown).
        records: what 04_model.layer_by_layer returned first: (name, layer, output shape) for
            every step of forward() in order, the first the input ("(input)", None, shape) and
            the last the multiplication by logit_scale (layer None).
        path: where to save the PNG (its folder is created if needed).

    Returns:
        `path`.
    """
    # Group the layers into stages by the first part of their name: "stem.0" belongs to the
    # stem, "blocks.1.conv2" to blocks.1 (named as the code names it), "pool", "flatten",
    # "classifier" and the scale to the head.
    scale = Fraction(model.logit_scale).limit_denominator(1000)  # 0.125 -> 1/8
    stages = {}
    for name, module, output_shape in records[1:]:
        parts = name.split(".")
        stage = ("Stem" if parts[0] == "stem" else
                 f"blocks.{parts[1]}" if parts[0] == "blocks" else "Head")
        label, kind = ((_layer_label(module), type(module).__name__) if module is not None
                       else (f"× logit_scale ({scale})", "scale"))
        stages.setdefault(stage, []).append((label, kind, _per_image_shape(output_shape)))

    # Sizes in "data units"; the figure is scaled so that one unit is about 0.8 inch.
    box_width, box_height, gap = 2.6, 0.78, 0.3
    frame_pad = 0.15  # the dashed frame around a stage sits this far outside its boxes
    column_step = box_width + 1.7  # room between stages for the arrows and their shape labels
    most_layers = max(len(layers) for layers in stages.values())
    top = most_layers * (box_height + gap)
    width = (len(stages) + 2) * column_step - 1.7
    figure, axes = plt.subplots(figsize=(width * 0.8, (top + 2.2) * 0.8))
    axes.set_xlim(-0.1, width + 0.1)
    axes.set_ylim(-0.9, top + 1.3)
    axes.axis("off")

    def box(x, y, text, shape, colour, bold=False):
        """A layer: a rounded box with its name and, below it in grey, the shape it outputs."""
        axes.add_patch(FancyBboxPatch((x, y), box_width, box_height,
                                      boxstyle="round,pad=0,rounding_size=0.08",
                                      facecolor=colour, edgecolor="#343a40", linewidth=1))
        axes.text(x + box_width / 2, y + box_height * 0.63, text, ha="center", va="center",
                  fontsize=10.5, fontweight="bold" if bold else "normal")
        axes.text(x + box_width / 2, y + box_height * 0.27, shape, ha="center", va="center",
                  fontsize=9, color="#495057")

    def arrow(start, end, label=None):
        axes.annotate("", xy=end, xytext=start,
                      arrowprops=dict(arrowstyle="-|>", color="#343a40", linewidth=1.3,
                                      shrinkA=0, shrinkB=0))
        if label:  # the shape that travels along the arrow, written above it
            axes.text((start[0] + end[0]) / 2, start[1] + 0.1, label, ha="center", va="bottom",
                      fontsize=10, color="#1d3557", fontweight="bold")

    middle = top / 2  # the stages are joined by horizontal arrows at mid-height
    input_text = _per_image_shape(records[0][2])  # the first record is the input images
    box(0, middle - box_height / 2, "input image", input_text, "#ffffff", bold=True)
    # Where the next arrow between stages starts, and the shape it carries.
    previous_right, previous_shape = box_width, input_text
    for index, (stage, layers) in enumerate(stages.items(), start=1):
        x = index * column_step
        stage_height = len(layers) * (box_height + gap) - gap
        stage_bottom = middle - stage_height / 2
        # A light dashed frame around the stage, with the stage's name above it.
        axes.add_patch(FancyBboxPatch((x - frame_pad, stage_bottom - frame_pad),
                                      box_width + 2 * frame_pad, stage_height + 2 * frame_pad,
                                      boxstyle="round,pad=0,rounding_size=0.15",
                                      facecolor="#f8f9fa", edgecolor="#adb5bd", linestyle="--",
                                      zorder=0))
        axes.text(x + box_width / 2, stage_bottom + stage_height + frame_pad + 0.08, stage,
                  ha="center", va="bottom", fontsize=12.5, fontweight="bold")
        arrow((previous_right, middle), (x - frame_pad, middle), label=previous_shape)
        # The layers, top to bottom in the order they run, each with the shape it outputs.
        for row, (label, kind, shape) in enumerate(layers):
            y = stage_bottom + stage_height - box_height - row * (box_height + gap)
            box(x, y, label, shape, ARCHITECTURE_COLOURS.get(kind, "#ffffff"))
            if row < len(layers) - 1:
                arrow((x + box_width / 2, y), (x + box_width / 2, y - gap))
        previous_right, previous_shape = x + box_width + frame_pad, layers[-1][2]
    x = (len(stages) + 1) * column_step
    arrow((previous_right, middle), (x, middle), label=previous_shape)
    box(x, middle - box_height / 2, f"{model.num_classes} logits", "one score per class",
        "#ffffff", bold=True)

    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    axes.set_title(f"CifarNet, size \"{model.size}\": {num_parameters:,d} parameters\n"
                   "Under each layer, the shape it outputs for one image: channels×height×width "
                   "(the batch dimension is left out)", fontsize=12.5, linespacing=1.6)
    legend = [Patch(facecolor=ARCHITECTURE_COLOURS[kind], edgecolor="#333333", label=label)
              for kind, label in [("Conv2d", "convolution"), ("MaxPool2d", "max-pool"),
                                  ("BatchNorm2d", "batch-norm"), ("GELU", "activation"),
                                  ("Linear", "linear")]]
    axes.legend(handles=legend, loc="lower center", ncol=len(legend), frameon=False,
                bbox_to_anchor=(0.5, -0.02), fontsize=10)
    return save(figure, path, dpi=120, bbox_inches="tight")


# %% Shared by the figures below --------------------------------------------------------------
def save(figure, path, **savefig_options):
    """Write `figure` to the PNG file `path`, atomically (a failure leaves no half-written or
    empty file, and is one sentence: see common.write_atomically), close it, and return `path`."""
    try:
        common.write_atomically(path, lambda file: figure.savefig(file, format="png",
                                                                  **savefig_options))
    finally:
        plt.close(figure)  # free its memory
    return Path(path)


def save_image_grid(tiles, row_names, title, path):
    """Draw a table of images as one picture, a name left of each row, and save it as a PNG.

    Args:
        tiles: a tensor (rows, columns, 3, H, W) of images, uint8 (0..255) or float (0..1).
        row_names: one name per row.
        title: the title above the picture.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    from torchvision.utils import make_grid

    rows, columns, _, height, width = tiles.shape
    # make_grid pastes a batch of images into one image, `nrow` per line, with a border of
    # `padding` pixels between them: one picture to show instead of many small ones.
    grid = make_grid(tiles.flatten(0, 1), nrow=columns, padding=2, pad_value=tiles.max().item())
    figure, axes = plt.subplots(figsize=(columns * 0.9 + 1.5, rows * 0.9 + 0.6))
    # imshow wants (H, W, 3); "nearest" shows the 32x32 pixels as they are, not smoothed.
    axes.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    for row, name in enumerate(row_names):
        axes.text(-4, 2 + row * (height + 2) + height / 2, name, ha="right", va="center")
    axes.set_title(title)
    axes.axis("off")  # a picture, not a plot: no ticks or frame
    return save(figure, path, dpi=100, bbox_inches="tight")


def save_images_by_class(images, labels, classes, path, per_class=8, max_classes=10):
    """save_image_grid with one row per class (the first `max_classes` classes), each showing
    the first `per_class` of its images (white where a class has fewer). `images` are uint8
    (N, C, H, W), `labels` int64 class indices (N,), `classes` the class names. Returns `path`."""
    shown = range(min(len(classes), max_classes))
    tiles = torch.full((len(shown), per_class, *images.shape[1:]), 255, dtype=torch.uint8)
    for row, class_index in enumerate(shown):
        of_class = (labels == class_index).nonzero().flatten()[:per_class]
        tiles[row, :len(of_class)] = images[of_class]
    return save_image_grid(tiles, [classes[index] for index in shown], "Training images, by class",
                           path)


def plot_history(history, path):
    """Save loss and accuracy per epoch, training against validation, as a PNG.

    Args:
        history: 05_train.py's dict of lists: epoch, train_loss, val_loss, train_accuracy,
            val_accuracy.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"]
    loss_axes.plot(epochs, history["train_loss"], "o-", label="training")
    loss_axes.plot(epochs, history["val_loss"], "o-", label="validation")
    # With label smoothing the loss cannot reach 0: its floor (about 0.87 for 0.2 over ten
    # classes) is the entropy of the smoothed target.
    loss_axes.set(title="Loss (lower is better)", xlabel="epoch",
                  ylabel="cross-entropy (label-smoothed by default)")
    accuracy_axes.plot(epochs, [100 * a for a in history["train_accuracy"]], "o-", label="training")
    accuracy_axes.plot(epochs, [100 * a for a in history["val_accuracy"]], "o-", label="validation")
    accuracy_axes.set(title="Accuracy (higher is better)", xlabel="epoch", ylabel="%")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return save(figure, path, dpi=120)


def plot_confusion_matrix(matrix, classes, path):
    """Save a confusion matrix as a PNG: counts in each cell; the diagonal is correct.

    Args:
        matrix: an int tensor (classes, classes): row = true class, column = predicted class.
        classes: the class names.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (test set)")
    threshold = matrix.max().item() / 2  # white numbers on dark cells, black on light ones
    for row in range(len(classes)):
        for column in range(len(classes)):
            count = matrix[row, column].item()
            axes.text(column, row, count, ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return save(figure, path, dpi=120)


def plot_mistakes(images, titles, path, columns=4):
    """Save images in a grid, each with a title (06_evaluate.py: the most confident mistakes).

    Args:
        images: uint8 images (N, 3, H, W), not normalised.
        titles: one title per image.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    rows = max(1, -(-len(images) // columns))  # ceiling division
    figure, axes_grid = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows),
                                     squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, image, title in zip(axes_grid.flat, images, titles):
        axes.imshow(image.permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3) for imshow
        axes.set_title(title, fontsize=9)
    figure.suptitle("The most confident mistakes")
    figure.tight_layout()
    return save(figure, path, dpi=120)


def plot_predictions(results, classes, top, path):
    """Save one row per image: the image, the input the network saw, and its top classes.

    Args:
        results: a list of (title, RGB PIL image, uint8 tensor (3, H, W), probabilities).
        classes: the class names.
        top: how many classes to draw.
        path: the PNG file to write.

    Returns:
        `path`.
    """
    figure, axes = plt.subplots(len(results), 3, figsize=(10, 2.6 * len(results)), squeeze=False)
    for row, (title, image, tensor, probabilities) in zip(axes, results):
        row[0].imshow(image)
        row[0].set_title(title, fontsize=9)
        # "nearest" draws each of the input's pixels as a square, so you see them.
        row[1].imshow(tensor.permute(1, 2, 0).numpy(), interpolation="nearest")
        row[1].set_title(f"what the network sees ({tensor.shape[-1]}x{tensor.shape[-2]})",
                         fontsize=9)
        for axes_of_image in row[:2]:
            axes_of_image.axis("off")
        values, indices = probabilities.topk(top)
        row[2].barh(range(top), values.tolist(), color="tab:blue")
        row[2].set_yticks(range(top), [classes[index] for index in indices.tolist()])
        row[2].invert_yaxis()  # the most likely class on top
        row[2].set_xlim(0, 1)
        row[2].set_xlabel("probability")
    figure.tight_layout()
    return save(figure, path, dpi=100)
