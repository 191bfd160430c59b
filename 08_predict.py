"""08 Predict: classify your own image files with the trained model.

What you will learn
    - How to load a trained model for inference: the checkpoint gives the weights and also what
      they were trained with (the class names, the normalisation mean and std, the model size,
      the size and colours of the images).
    - How to turn any image file (PNG, JPEG, TIFF, ...; any size; colour, grayscale, 16-bit, with
      transparency) into what the network was trained on: for CIFAR-10 an RGB 32x32 tensor
      (3x32x32), for a model trained on 64x64 grayscale images a 1x64x64 one, normalised exactly
      as in training.
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
wide), the version of it that the network sees, and its top classes. A file that is missing,
damaged or not an image is reported in one sentence and skipped; the others are still
classified, and the exit code is then 1.
"""

# %% Setup (imports and settings: plumbing you can skip) -----------------------------------------
import glob
import sys
from pathlib import Path

import torch

import checkpointing
import common
import image_files

data = common.import_script("03_data")  # the data pipeline: the same inputs as in training

SAMPLES_DIR = common.REPO_DIR / "samples"
MAX_BATCH = 256  # 32x32 images per forward pass (fewer if larger): more would only use memory
MAX_FIGURE_ROWS = 8  # the figure shows the first 8 images; the printout shows them all
PREVIEW_SIZE = 256  # the figure shows each image at most 256 pixels on its longer side


# %% 1. Reading an image file, whatever its format ------------------------------------------------
# Sections 1 and 2 explain what read_images (after section 2) does to each file; main() runs it
# on yours, and prints for each what it read and what it became, e.g. (JPEG, 256x256 RGB -> 32x32).
# image_files.open_image (plumbing, shared with training on a folder of your own images in 03 and
# 05, so that a photo reaches the network the same way in both) reads any image file, of any
# format, mode and size, as RGB or as grayscale: whichever the network was trained on. On the way
# it reads a large photo at a reduced size, turns a sideways phone photo upright and puts
# transparent parts on white; its docstring says how. A file it cannot read (missing, damaged,
# not an image) is one sentence: read_images, after section 2, prints it and goes on.


# %% 2. Shrinking it to the network's input, as in training ---------------------------------------
# The network is fed images of the size and colours it was trained on, which its checkpoint
# records: 3x32x32 (RGB) for CIFAR-10. CifarNet itself would take any size of 8x8 or more (its
# global max-pool turns the last feature maps into one number per channel, whatever their size),
# but its filters learned from objects of the size they have in 32x32 images: at another size
# they see something else. (A model after one epoch, on 1,500 test images: 65% right at 32x32,
# 33% at 48x48, 23% at 64x64, 38% at 16x16.)
# So we scale the image so that its shorter side is that size (32), keeping its proportions, then
# cut the middle square out of it. That is torchvision's Resize(32) followed by CenterCrop(32),
# written with Pillow in image_files.shrink, the function that also shrinks the images of a
# --data-dir folder for training: a photo gets the same treatment. For a large photo that means:
#   - detail is lost: 4032x3024 pixels become 32x32, about 12,000 times fewer, so the whole scene
#     becomes a thumbnail, and small objects shrink to a few pixels;
#   - the sides of a wide photo (or the top and bottom of a tall one) are cut off.
# CIFAR-10's pictures show one object, centred, filling most of the frame. A photo framed
# differently (a cat in a corner of a room, a close-up of a face) may be misread, not because the
# code is wrong but because the network has never seen anything like it. The saved figure shows
# what the network saw next to a preview of the original: judge a prediction by what it saw.
def network_input(config):
    """The images a network takes, from its checkpoint's config: (size, mode), the side of the
    square images it was trained on and "RGB" or "L" (grayscale).

    The number of channels is that of the training images' mean (one value per channel);
    checkpoints from before 05 recorded "image_size" were all trained at 32x32.
    """
    size, channels = config.get("image_size", 32), len(config["mean"])
    in_channels = config["model"].get("in_channels", 3)  # 3 in checkpoints from before it
    # A hand-edited checkpoint can say anything: one sentence rather than a traceback later.
    if channels != in_channels or channels not in (1, 3):
        raise common.UserError(
            f"the checkpoint's mean has {channels} values for a network of {in_channels} input "
            "channels, and 08 reads images as grayscale (1 channel) or RGB (3); train again "
            "with `python 05_train.py`.")
    if type(size) is not int or not 8 <= size <= 4096:
        raise common.UserError(f"the checkpoint's image_size, {size!r}, is not a side the network "
                               "can take (a whole number of pixels from 8 to 4096); train again "
                               "with `python 05_train.py`.")
    return size, "L" if channels == 1 else "RGB"


def read_images(paths, size, mode, previews=MAX_FIGURE_ROWS):
    """Read image files as the network's inputs; a bad file is reported and skipped.

    Of each image only the network's input is kept and, for the first `previews` images (the
    figure's rows), a small preview: the decoded image is dropped at once, so memory grows with
    the number of files, not with their size.

    Args:
        paths: the image files.
        size, mode: what the network takes (network_input): 32 and "RGB" for CIFAR-10.
        previews: how many images get a preview.

    Returns:
        (loaded, failed): a list of (path, description, preview or None, uint8 tensor
        (channels, size, size)), and how many files could not be read. The description says
        what the file is, e.g. "PNG, 1000x700 RGBA".
    """
    loaded, failed = [], 0
    for path in paths:
        try:
            image, description = image_files.open_image(path, mode)  # section 1
        except common.UserError as error:
            print(f"Error: {error}", file=sys.stderr)
            failed += 1
            continue
        preview = None
        if len(loaded) < previews:
            preview = image.convert("RGB")  # a copy, as RGB: what the figure draws
            preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))  # shrinks, keeping the proportions
        tensor = image_files.shrink(image, size)  # section 2: (channels, size, size)
        loaded.append((path, description, preview, tensor))
    return loaded, failed


# %% 3. Predicting: eval mode, no gradients, softmax ----------------------------------------------
def predict(model, images, mean, std, device):
    """Class probabilities for a batch of images.

    Args:
        model: the network, on `device`; predict puts it in eval mode (04_model.py, section 5).
        images: a uint8 tensor (N, channels, height, width), e.g. (N, 3, 32, 32).
        mean, std: the per-channel statistics the model was trained with (from the checkpoint).
        device: where the model is.

    Returns:
        A float tensor (N, num_classes) on the CPU; each row holds probabilities that add up to 1.
    """
    # inference_mode is no_grad and a little more: no graph is recorded for backward and tensors
    # skip autograd's bookkeeping, which saves memory and time. It is for code that never trains.
    model.eval()  # batch-norm with its training averages: an image's answer is its own alone
    with torch.inference_mode():
        logits = []
        # A few images make one batch, thousands several: as many pixels per forward pass as
        # MAX_BATCH images of 32x32 have, so 64x64 images go 64 at a time.
        per_pass = max(1, MAX_BATCH * 32 * 32 // (images.shape[2] * images.shape[3]))
        for chunk in images.split(per_pass):
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
    print(f"\n{path}  ({description})")
    width = max(len(str(name)) for name in classes)
    for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
        bar = "#" * round(value * 40)  # 40 characters would be 100%
        print(f"  {rank:>{len(str(top))}}. {classes[index]!s:{width}}  {value:6.1%}  {bar}")


# %% 5. Putting it together -----------------------------------------------------------------------
# First the command line (plumbing you can skip), then main(): the whole path, in order.
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
    size, mode = network_input(config)  # section 2: 32 and "RGB" for CIFAR-10
    colours = "grayscale" if mode == "L" else "RGB"
    target = f"{size}x{size}" + (" grayscale" if mode == "L" else "")  # printed with each image
    top = min(args.top, len(classes))
    print(f"model: {args.checkpoint} ({config['model']['size']} CifarNet, {len(classes)} "
          f"classes, {size}x{size} {colours} images, saved after epoch {checkpoint['epoch']}), "
          f"on {device.type}")

    loaded, failed = read_images(args.images, size, mode)  # a bad file: one sentence, no stop

    if loaded:
        # All the images in one tensor, (N, 3, 32, 32) for CIFAR-10: predict runs them through
        # the network in batches, not one by one.
        images = torch.stack([tensor for _, _, _, tensor in loaded])
        probabilities = predict(model, images, mean, std, device)
        if not torch.isfinite(probabilities).all():  # NaN: broken weights, or a std of 0
            raise common.UserError(f"the model in {args.checkpoint} outputs NaN (not a number) "
                                   "instead of scores; its weights or its mean and std are "
                                   "damaged: train again with `python 05_train.py`.")
        for (path, description, _, _), row in zip(loaded, probabilities):
            print_predictions(path, f"{description} -> {target}", row, classes, top)
        import figures  # matplotlib, loaded only when there is something to draw

        # One row per image: the image, the input the network saw (a grayscale one drawn as
        # RGB, its one channel three times), and its top classes. figures.save writes the PNG
        # atomically: a bad --output-dir is one sentence, and no half-written file is left.
        figure_path = figures.plot_predictions(
            [(f"{Path(path).name} ({description})", preview, tensor.expand(3, -1, -1), row)
             for (path, description, preview, tensor), row
             in zip(loaded[:MAX_FIGURE_ROWS], probabilities)],
            classes, top, args.output_dir / "predictions.png")
        shown = "" if len(loaded) <= MAX_FIGURE_ROWS else f" (the first {MAX_FIGURE_ROWS} images)"
        print(f"\nsaved the figure{shown}: {figure_path}")
        if config.get("data") == "fake":
            print("(This model was trained on random images with random labels, so every class "
                  "gets about the same probability: it only shows that the code runs.)")

        common.section("Summary: what you just did")
        print(f"""\
- the checkpoint gave the network and what it was trained with: the class names, the mean and
  std, the size of the images ({size}x{size}) and their colours ({colours})
- each file, whatever its format and size, became exactly that kind of input: read, shrunk,
  normalised as in training
- eval mode, inference_mode, a forward pass per batch, then softmax: a probability per class""")
        print("\nTry your own photos: python 08_predict.py path/to/photo.jpg --top 5")
        print("Next, 09_transfer_learning.py: start from a network trained on other images, and "
              "teach it your classes.")
    if failed:
        sys.exit(1)  # each failure was already explained above, one sentence per file


if __name__ == "__main__":
    common.run_main(main)
