"""08 Predict: classify your own image files with the trained model.

What you will learn
    - How to load a trained model for inference: the checkpoint gives the weights and also what
      they were trained with (the class names, the normalisation mean and std, the model size).
    - How to turn any image file (PNG, JPEG, TIFF, ...; any size; colour, grayscale, 16-bit, with
      transparency) into what the network expects: an RGB 32x32 tensor, normalised exactly as in
      training, without ever holding a large photo in memory at full size.
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
Writes outputs/predictions.png (or into --output-dir): each image (a preview at most 256 pixels
wide), the 32x32 version that the network sees, and its top classes. A file that is missing,
damaged or not an image is reported in one sentence and skipped; the others are still
classified, and the exit code is then 1.
"""

# %% Setup ----------------------------------------------------------------------------------------
import glob
import sys
from pathlib import Path

import torch

import checkpointing
import common
import image_files

data = common.import_script("03_data")  # the data pipeline: the same inputs as in training

SAMPLES_DIR = common.REPO_DIR / "samples"
MAX_BATCH = 256  # images per forward pass; more at once would only use more memory
MAX_FIGURE_ROWS = 8  # the figure shows the first 8 images; the printout shows them all


# %% 1. Reading an image file, whatever its format ------------------------------------------------
# image_files.open_image reads every image file the scripts see, here and when 05_train.py trains
# on a folder of your own images, so that a photo reaches the network the same way in both. It
# returns
# an RGB image (3 channels, red, green and blue, as the network was trained on) and does four
# things on the way:
#   - A large photo is read at a reduced size. A 48-megapixel phone photo would take 144 MB as RGB
#     (3 bytes a pixel), and the network sees 32x32 of it. A JPEG can be decoded at 1/2, 1/4 or
#     1/8 of its size for less than the full cost; other formats are averaged down by a whole
#     factor straight after decoding. Either way a large image keeps a shorter side of 256 to 511
#     pixels (image_files.DECODE_SIZE), far more than the 32 that section 2 keeps.
#   - A photo stored sideways, with a tag saying how to turn it (phones do this), is turned
#     upright, as every viewer shows it.
#   - Other modes become RGB: grayscale ("L") is copied into the three channels, a palette ("P",
#     common in GIF and small PNG files) is looked up, and 16-bit ("I;16") or floating-point ("F")
#     images, from scientific cameras and TIFF files, are scaled to 0..255 (Pillow's own
#     convert("RGB") would clip them at 255: nearly white, or black for floats from 0 to 1).
#   - Transparent parts are put on a white background (image_files.to_rgb says why).
# A file that is missing, not an image, damaged, or of more pixels than Pillow agrees to open
# (a protection against files made to fill the memory) is a common.UserError: one sentence that
# names it. read_images, after section 2, prints it and goes on with the next file.


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
# the 32x32 image next to a preview of the original: judge a prediction by what the network saw.
PREVIEW_SIZE = 256  # the figure shows each image at most 256 pixels on its longer side


def read_images(paths, previews=MAX_FIGURE_ROWS):
    """Read image files as the network's 32x32 inputs; a bad file is reported and skipped.

    Of each image only the 32x32 input is kept and, for the first `previews` images (the
    figure's rows), a small preview: the decoded image is dropped at once, so memory grows with
    the number of files, not with their size.

    Returns:
        (loaded, failed): a list of (path, description, preview or None, uint8 tensor
        (3, 32, 32)), and how many files could not be read.
    """
    loaded, failed = [], 0
    for path in paths:
        try:
            image, description = image_files.open_image(path)  # section 1
        except common.UserError as error:
            print(f"Error: {error}", file=sys.stderr)
            failed += 1
            continue
        preview = None
        if len(loaded) < previews:
            preview = image.copy()
            preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))  # shrinks, keeping the proportions
        loaded.append((path, description, preview, data.shrink(image)))  # section 2
    return loaded, failed


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
def expand_wildcards(names):
    """Each name with * ? or [ in it that is not a file itself, as the files it matches.

    On Linux and macOS the shell turns `samples/*.png` into the file names before Python starts;
    the Windows command prompt and PowerShell pass the pattern itself. A pattern that matches
    nothing stays as it is, so that reading it says there is no such file.
    """
    paths = []
    for name in names:
        if any(character in name for character in "*?[") and not Path(name).exists():
            paths.extend(sorted(glob.glob(name)) or [name])  # matched nothing: keep the name
        else:
            paths.append(name)
    return paths


def parse_args():
    """The command-line flags; in Jupyter, the sample images with the defaults."""
    parser = common.make_parser("Lesson 8: classify image files with the trained model.",
                                seed_help=False)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files to classify (PNG, JPEG, ...; any size)")
    parser.add_argument("--checkpoint", type=Path,
                        help="the checkpoint written by 05_train.py (default: checkpoints/best.pt, "
                             "or checkpoints/fake/best.pt with --fake-data)")
    parser.add_argument("--fake-data", action="store_true",
                        help="use the model of `05_train.py --fake-data` (checkpoints/fake/)")
    parser.add_argument("--top", type=common.positive_int, default=3,
                        help="how many of the most likely classes to show per image")
    parser.add_argument("--output-dir", type=Path, default=common.OUTPUT_DIR,
                        help="where the figure is written")
    # In Jupyter, the sample images.
    args = common.parse_args(parser, in_jupyter=sorted(map(str, SAMPLES_DIR.iterdir())))
    if args.checkpoint is None:
        args.checkpoint = common.default_checkpoint_dir(args.fake_data) / "best.pt"
    args.images = expand_wildcards(args.images)
    return args


def main():
    args = parse_args()
    device = common.get_device(args.device)

    # The model, and what it was trained with. model_from_checkpoint rebuilds the network from
    # the config, loads the weights and puts it in eval mode (07_save_load.py shows each step).
    # Eval mode matters: batch-norm then uses the statistics learned in training rather than
    # those of this batch, so an image gets the same answer whatever else is in the batch.
    checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
    config = checkpoint["config"]
    model = checkpointing.model_from_checkpoint(checkpoint, device)
    classes, mean, std = config["classes"], config["mean"], config["std"]
    top = min(args.top, len(classes))
    print(f"model: {args.checkpoint} ({config['model']['size']} CifarNet, {len(classes)} "
          f"classes, saved after epoch {checkpoint['epoch']}), on {device.type}")

    loaded, failed = read_images(args.images)  # a bad file is reported; the others go on

    if loaded:
        # All the images in one batch (N, 3, 32, 32): one forward pass instead of N.
        images = torch.stack([tensor for _, _, _, tensor in loaded])
        probabilities = predict(model, images, mean, std, device)
        for (path, description, _, _), row in zip(loaded, probabilities):
            print_predictions(path, description, row, classes, top)
        import figures  # matplotlib, loaded only when there is something to draw

        # One row per image: the image, the 32x32 input the network saw, and its top classes.
        # figures.save writes the PNG atomically: a bad --output-dir is one sentence, and no
        # empty or half-written file is left behind.
        figure_path = figures.plot_predictions(
            [(f"{Path(path).name} ({description})", preview, tensor, row)
             for (path, description, preview, tensor), row
             in zip(loaded[:MAX_FIGURE_ROWS], probabilities)],
            classes, top, args.output_dir / "predictions.png")
        shown = "" if len(loaded) <= MAX_FIGURE_ROWS else f" (the first {MAX_FIGURE_ROWS} images)"
        print(f"\nsaved the figure{shown}: {figure_path}")
        if config.get("data") == "fake":
            print("(This model was trained on random images with random labels, so every class "
                  "gets about the same probability: it only shows that the code runs.)")
        print("Try your own photos: python 08_predict.py path/to/photo.jpg --top 5")
    if failed:
        sys.exit(1)  # each failure was already explained above, one sentence per file


if __name__ == "__main__":
    common.run_main(main)
