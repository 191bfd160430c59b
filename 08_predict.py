"""08 Predict: classify your own image files with the trained model.

What you will learn
    - How to load a trained model for inference: the checkpoint gives the weights and also what
      they were trained with (the class names, the normalisation mean and std, the model size).
    - How to turn any image file (PNG, JPEG, ...; any size; colour, grayscale, with transparency)
      into what the network expects: an RGB 32x32 tensor, normalised exactly as in training.
    - What shrinking a large photo to 32x32 pixels does to it, and what the network then sees.
    - Inference: eval mode, no gradients, several images in one forward pass, softmax to turn
      scores into probabilities, and the top classes of each image.

How to run it
    python 05_train.py                                    # first: writes checkpoints/best.pt
    python 08_predict.py samples/*.png samples/*.jpg      # the sample images of this repository
    python 08_predict.py my_photo.jpg --top 5             # your own image, five best guesses
    python 08_predict.py --help                           # every flag and its default
The samples/ folder holds four pictures from the CIFAR-10 test set, which training never sees:
horse.png, frog.png and ship.jpg at CIFAR's own 32x32, and truck_256x256.jpg, enlarged to show
that any size works.

Reads the checkpoint (checkpoints/best.pt unless you pass --checkpoint) and the images.
Writes outputs/predictions.png (or into --output-dir): each image, the 32x32 version that the
network sees, and its top classes. A file that is missing or not an image is reported in one
sentence and skipped; the others are still classified, and the exit code is then 1.
"""

# %% Setup ----------------------------------------------------------------------------------------
import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import common

data = common.import_script("03_data")  # the data pipeline: the same inputs as in training

SAMPLES_DIR = common.REPO_DIR / "samples"
MAX_BATCH = 256  # images per forward pass; more at once would only use more memory
MAX_FIGURE_ROWS = 8  # the figure shows the first 8 images; the printout shows them all


# %% 1. Reading an image file, whatever its format ------------------------------------------------
# The network was trained on RGB images: 3 channels, red, green and blue. Files come in other
# modes too, and Pillow (PIL) converts them:
#   - grayscale ("L"): the gray value is copied into all three channels;
#   - palette ("P", common in GIF and small PNG files): each pixel's colour is looked up;
#   - with transparency ("RGBA", "LA", or a palette with a transparent colour): see below.
def to_rgb(image):
    """Convert a PIL image of any mode to RGB, putting transparent parts on a white background.

    A transparent pixel still stores some colour, usually black, that no viewer shows. A plain
    image.convert("RGB") drops the transparency and shows that colour: a logo on a transparent
    background would reach the network on black. Compositing on white instead gives the picture
    you see on a white web page. CIFAR-10 has no transparent images, so white is a choice, not a
    rule.
    """
    has_transparency = (image.mode in ("RGBA", "LA", "PA")
                        or (image.mode == "P" and "transparency" in image.info))
    if has_transparency:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")  # returns a copy even when the image is already RGB


def load_image(path):
    """Open an image file and return it as an RGB PIL image, with a line describing the file.

    Args:
        path: the image file.

    Returns:
        (image, description), e.g. (<RGB image>, "JPEG, 4032x3024 RGB").

    Raises:
        UserError: the file is missing, is a folder, or is not an image that Pillow can read.
    """
    path = Path(path)
    if not path.exists():
        raise common.UserError(f"cannot classify {path}: there is no such file.")
    if path.is_dir():
        raise common.UserError(f"cannot classify {path}: it is a folder, not an image file.")
    try:
        with Image.open(path) as image:
            # Image.open only reads the header; load() decodes the pixels, so a damaged file
            # fails here, where we can say which file it is.
            image.load()
            description = f"{image.format}, {image.width}x{image.height} {image.mode}"
            # Photos from phones are often stored sideways, with a tag that says how to turn
            # them. Viewers obey it, and so must we, or the network sees the photo lying down.
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright), description
    except PermissionError:
        raise common.UserError(f"cannot classify {path}: you do not have permission to read "
                               "it.") from None
    except Image.DecompressionBombError:
        raise common.UserError(f"cannot classify {path}: it has more pixels than Pillow agrees to "
                               "open (a protection against malicious files).") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # UnidentifiedImageError: not an image format Pillow knows; OSError and the others: a
        # truncated or corrupt file.
        raise common.UserError(f"cannot classify {path}: it is not an image that Pillow can "
                               "read (PNG, JPEG, BMP, GIF, WebP, ...), or the file is "
                               "damaged.") from None


# %% 2. Shrinking it to 32x32, as in training -----------------------------------------------------
# The network only takes 3x32x32 inputs. We scale the image so that its shorter side is 32 pixels,
# keeping its proportions, then cut the middle 32x32 square out of it. That is torchvision's
# Resize(32) followed by CenterCrop(32), written with Pillow in 03_data.shrink, the function that
# also shrinks the images of a --data-dir folder for training: a photo gets the same treatment.
# For a large photo that means two things:
#   - detail is lost: 4032x3024 pixels become 32x32, about 12,000 times fewer, so the whole scene
#     becomes a thumbnail, and small objects shrink to a few pixels;
#   - the sides of a wide photo (or the top and bottom of a tall one) are cut off.
# CIFAR-10's pictures show one object, centred, filling most of the frame. A photo framed
# differently (a cat in a corner of a room, a close-up of a face) may be misread, not because the
# code is wrong but because the network has never seen anything like it. The saved figure shows
# the 32x32 image next to the original: judge a prediction by what the network saw.


# %% 3. Predicting: eval mode, no gradients, softmax ----------------------------------------------
def predict(model, images, mean, std, device):
    """Class probabilities for a batch of images.

    Args:
        model: the network, in eval mode, on `device`.
        images: a uint8 tensor (N, 3, 32, 32).
        mean, std: the per-channel statistics the model was trained with (from the checkpoint).
        device: where the model is.

    Returns:
        A float tensor (N, num_classes) on the CPU; each row holds probabilities that add up to 1.
    """
    # inference_mode is no_grad and a little more: no graph is recorded for backward and tensors
    # skip autograd's bookkeeping, which saves memory and time. It is for code that never trains.
    with torch.inference_mode():
        logits = []
        for chunk in images.split(MAX_BATCH):  # a few images make one batch, thousands several
            # 03_data.prepare_batch, the one every script uses: to the device, normalised with
            # the training data's own numbers, in the memory layout the model was trained in.
            # A network fed differently scaled inputs would see different images.
            logits.append(model(data.prepare_batch(chunk, device, mean, std)))
        logits = torch.cat(logits)
    # The network outputs one score (logit) per class. Softmax turns them into probabilities:
    # exp(score) / sum of exp(all scores), positive and adding up to 1 in each row.
    return logits.softmax(dim=1).cpu()


# %% 4. Showing the results -----------------------------------------------------------------------
def print_predictions(path, description, probabilities, classes, top):
    """Print the `top` most likely classes of one image, with a bar for each probability."""
    values, indices = probabilities.topk(top)  # the largest first
    print(f"\n{path}  ({description} -> {data.IMAGE_SIZE}x{data.IMAGE_SIZE})")
    width = max(len(name) for name in classes)
    for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
        bar = "#" * round(value * 40)  # 40 characters would be 100%
        print(f"  {rank}. {classes[index]:{width}}  {value:6.1%}  {bar}")


# %% 5. Putting it together -----------------------------------------------------------------------
def parse_args():
    """The command-line flags; in Jupyter, the sample images with the defaults."""
    parser = argparse.ArgumentParser(
        description="Lesson 8: classify image files with the trained model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files to classify (PNG, JPEG, ...; any size)")
    parser.add_argument("--checkpoint", type=Path, default=common.CHECKPOINT_DIR / "best.pt",
                        help="the checkpoint written by 05_train.py")
    common.add_device_flag(parser)
    parser.add_argument("--top", type=common.positive_int, default=3,
                        help="how many of the most likely classes to show per image")
    parser.add_argument("--output-dir", type=Path, default=common.OUTPUT_DIR,
                        help="where the figure is written")
    # In Jupyter, the sample images.
    return common.parse_args(parser, in_jupyter=sorted(str(path) for path in SAMPLES_DIR.iterdir()))


def main():
    args = parse_args()
    device = common.get_device(args.device)

    # The model, and what it was trained with. model_from_checkpoint rebuilds the network from
    # the config, loads the weights and puts it in eval mode (07_save_load.py shows each step).
    # Eval mode matters: batch-norm then uses the statistics learned in training rather than
    # those of this batch, so an image gets the same answer whatever else is in the batch.
    checkpoint = common.load_checkpoint(args.checkpoint, device="cpu")
    config = checkpoint["config"]
    model = common.model_from_checkpoint(checkpoint, device)
    classes, mean, std = config["classes"], config["mean"], config["std"]
    top = min(args.top, len(classes))
    print(f"model: {args.checkpoint} ({config['model']['size']} CifarNet, {len(classes)} "
          f"classes, saved after epoch {checkpoint['epoch']}), on {device.type}")

    # Read every image; a bad file is reported and skipped, the others go on.
    loaded, failed = [], 0
    for path in args.images:
        try:
            image, description = load_image(path)
        except common.UserError as error:
            print(f"Error: {error}", file=sys.stderr)
            failed += 1
            continue
        loaded.append((path, image, description, data.shrink(image)))

    if loaded:
        # All the images in one batch (N, 3, 32, 32): one forward pass instead of N.
        images = torch.stack([tensor for _, _, _, tensor in loaded])
        probabilities = predict(model, images, mean, std, device)
        for (path, _, description, _), row in zip(loaded, probabilities):
            print_predictions(path, description, row, classes, top)
        import figures  # drawing only; see figures.py

        # One row per image: the image, the 32x32 input the network saw, and its top classes.
        figure_path = figures.plot_predictions(
            [(path, image, tensor, row) for (path, image, _, tensor), row
             in zip(loaded, probabilities)][:MAX_FIGURE_ROWS],
            classes, top, args.output_dir / "predictions.png")
        shown = "" if len(loaded) <= MAX_FIGURE_ROWS else f" (the first {MAX_FIGURE_ROWS} images)"
        print(f"\nsaved the figure{shown}: {figure_path}")
    if failed:
        sys.exit(1)  # each failure was already explained above, one sentence per file


if __name__ == "__main__":
    common.run_main(main)
