"""06 - Evaluation: how good is the trained network, and where does it go wrong?

What you will learn
    - the evaluation loop: eval mode, no gradients, every test image exactly once
    - overall accuracy, and why it is not enough: accuracy per class and the confusion matrix
    - test-time augmentation (TTA): averaging the predictions for an image, its mirror image
      and copies shifted by a few pixels
    - how to look at the mistakes the network is most sure about

Run it (after 05_train.py)
    python 06_evaluate.py                        # checkpoints/best.pt on the CIFAR-10 test set
    python 06_evaluate.py --checkpoint checkpoints/last.pt
    python 06_evaluate.py --fake-data            # after `05_train.py --fake-data`

Reads checkpoints/best.pt (or --checkpoint) and the test images. Writes
outputs/confusion_matrix.png, outputs/mistakes.png and outputs/evaluation.json.

The test set is used here and only here: 05_train.py picked the best epoch with the validation
images, so the test accuracy is an honest estimate of how the model does on images it never saw.
"""

# %% Imports
import json
import shlex
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import checkpointing
import common

data = common.import_script("03_data")  # the data pipeline: the same inputs as in training


# %% Plumbing, which you can skip: the command-line flags ---------------------------------------
def parse_args():
    """The shared data flags plus --checkpoint."""
    parser = common.make_data_parser("Evaluate a trained checkpoint on the test set.",
                                     batch_size=1000)
    parser.add_argument("--checkpoint", type=Path,
                        help="the checkpoint to evaluate (default: checkpoints/best.pt, or "
                             "checkpoints/fake/best.pt with --fake-data, where "
                             "`05_train.py --fake-data` writes)")
    args = common.parse_args(parser)
    if args.checkpoint is None:
        args.checkpoint = common.default_checkpoint_dir(args.fake_data) / "best.pt"
    if not args.dry_run:  # the files are written at the end: refuse a folder that is a file now
        common.check_can_write(args.output_dir, "--output-dir")
    return args


# %% The evaluation loop ---------------------------------------------------------------------------
# Test-time augmentation also shifts each image by this many pixels, up, down, left and right.
# Training's random crops shift images by up to 4 pixels (03_data.AUGMENT_PADDING), so a network
# trained with them has seen such copies; 2 measured best: on a 10-epoch run of 05, shifts of 1
# pixel gave 86.34%, of 2 pixels 86.48% (GUIDE.md, "Faster to the same accuracy").
TTA_SHIFT = 2


def shifted_copies(images, shift=TTA_SHIFT):
    """Four copies of the batch (B, C, H, W), its pictures moved `shift` pixels down, up, right
    and left. Each is a crop of the images padded by `shift` pixels that mirror the border
    ("reflect"), as training's random crops are made (03_data.random_crop_and_flip)."""
    padded = F.pad(images, (shift, shift, shift, shift), mode="reflect")
    height, width = images.shape[2:]
    # The crop whose top-left corner is at (shift, shift) is the picture itself. A crop that
    # starts higher up shows the picture lower down, and so on.
    corners = [(0, shift),          # moved down: the top rows are mirrored border
               (2 * shift, shift),  # moved up
               (shift, 0),          # moved right
               (shift, 2 * shift)]  # moved left
    # channels_last: the memory layout 03's batches and 05's model use (04_model.py).
    return [padded[:, :, top:top + height, left:left + width].contiguous(
                memory_format=torch.channels_last) for top, left in corners]


def predict(model, loader, device):
    """Class probabilities for every image of `loader`: plain, and with two kinds of TTA.

    Args:
        model: the trained network, on `device`.
        loader: yields (images, labels) ready for the model, in a fixed order (no shuffling,
            no augmentation), e.g. 03_data.InMemoryLoader.
        device: where the model is.

    Returns:
        (plain, flip, shifts): three float tensors (N, classes) on the CPU, one row per image in
        the loader's order: the probabilities of the image alone; averaged with its mirror image
        (2 views); and averaged over those two and four shifted copies of each (10 views).
    """
    # Eval mode: batch-norm uses its training statistics, so an image's answer does not depend on
    # the other images of its batch. (08_predict.py uses torch.inference_mode, a stricter
    # no_grad; either is right for a loop that never trains.)
    model.eval()
    plain, flip, shifts = [], [], []
    with torch.no_grad():  # no gradients are needed to measure: saves memory and time
        for images, _ in tqdm(loader, desc="test images", unit="batch", leave=False,
                              disable=None):
            images = images.to(device, non_blocking=True)
            # softmax turns the scores (logits) into probabilities that add up to 1 (04_model.py).
            probabilities = model(images).softmax(dim=1)
            # Test-time augmentation: a mirrored cat is still a cat, and the network saw mirrored
            # images in training. Averaging the two predictions smooths out some of its quirks.
            mirrored = model(images.flip(dims=[3])).softmax(dim=1)  # dim 3 is the width
            # The same again for four copies moved by 2 pixels, and their mirror images: the
            # network trained on such crops too, so each copy is one more opinion.
            total = probabilities + mirrored
            for copy in shifted_copies(images):
                total += model(copy).softmax(dim=1) + model(copy.flip(dims=[3])).softmax(dim=1)
            plain.append(probabilities.cpu())
            flip.append(((probabilities + mirrored) / 2).cpu())
            shifts.append((total / 10).cpu())
    return torch.cat(plain), torch.cat(flip), torch.cat(shifts)


def confusion_matrix(predictions, labels, num_classes):
    """Count how often each true class (row) was predicted as each class (column)."""
    # Think of the matrix as one long row of num_classes x num_classes cells: the cell of row
    # `true`, column `predicted` is number true * num_classes + predicted. bincount counts how
    # often each number occurs, so it fills every cell in one call; view folds it back.
    cells = torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return cells.view(num_classes, num_classes)


# %% The whole evaluation --------------------------------------------------------------------------
def main():
    # Plumbing, down to the test images, which you can skip: the flags, the device, and the
    # trained network rebuilt from its checkpoint (checkpointing.py loads it safely).
    args = parse_args()
    device = common.get_device(args.device)
    checkpoint = checkpointing.load_checkpoint(args.checkpoint, device)
    config = checkpoint["config"]
    model = checkpointing.model_from_checkpoint(checkpoint, device)
    classes = config["classes"]
    print(f"Checkpoint: {args.checkpoint} (epoch {checkpoint['epoch']}, model "
          f"{config['model']['size']}, best validation accuracy "
          f"{100 * checkpoint['best_val_accuracy']:.2f}%)")

    images, labels, data_classes = data.load_split(args.data_dir, "test", args.fake_data,
                                                   args.classes)
    if list(data_classes) != list(classes):
        hint = (f" (add --classes {','.join(classes)})" if set(classes) < set(data_classes)
                else "")
        raise common.UserError(
            f"the checkpoint was trained on the classes {classes}, but the test data has "
            f"{list(data_classes)}; evaluate with the same data it was trained on{hint}.")
    if args.dry_run:  # one batch only
        images, labels = images[:args.batch_size], labels[:args.batch_size]
    # The test images normalised with the training images' statistics, saved in the checkpoint.
    test_loader = data.InMemoryLoader(images, labels, args.batch_size, device, config["mean"],
                                      config["std"])
    probabilities, flip_probabilities, shift_probabilities = predict(model, test_loader, device)

    # ---- Overall accuracy, plain and with TTA --------------------------------------------------
    predictions = probabilities.argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()
    flip_accuracy = (flip_probabilities.argmax(dim=1) == labels).float().mean().item()
    shift_accuracy = (shift_probabilities.argmax(dim=1) == labels).float().mean().item()
    print(f"\nTest accuracy on {len(labels):,} images: {100 * accuracy:.2f}%")
    print(f"With flip test-time augmentation:  {100 * flip_accuracy:.2f}% "
          f"({100 * (flip_accuracy - accuracy):+.2f} points, for twice the compute)")
    print(f"With flips and 2-pixel shifts:     {100 * shift_accuracy:.2f}% "
          f"({100 * (shift_accuracy - accuracy):+.2f} points, for ten times the compute)")
    if config.get("data") == "fake":
        print(f"(Random images with random labels: about {100 / len(classes):.0f}% is chance, "
              "and all any network can score here. This run only checks that the code runs.)")

    # ---- Per-class accuracy: a single number hides which classes are hard ----------------------
    matrix = confusion_matrix(predictions, labels, len(classes))
    per_class = matrix.diag().float() / matrix.sum(dim=1).clamp(min=1).float()
    print("\nAccuracy per class (plain):")
    for name, value, total in zip(classes, per_class.tolist(), matrix.sum(dim=1).tolist()):
        print(f"  {name:<12} {100 * value:6.2f}%  {'#' * round(30 * value):<30}  ({total} images)")
    # The largest off-diagonal cell is the pair of classes the network mixes up most.
    off_diagonal = matrix.clone().fill_diagonal_(0)
    if off_diagonal.max() == 0:
        print("No mistakes at all.")
    else:
        # argmax of the flattened matrix gives a cell number; divmod turns it back into
        # (row, column), as in confusion_matrix above.
        true_class, said_class = divmod(off_diagonal.argmax().item(), len(classes))
        print(f"Most common mistake: {classes[true_class]} taken for {classes[said_class]} "
              f"({off_diagonal.max().item()} times)")

    if args.dry_run:
        print("\nDry run: one batch only, so no files were written.")
    else:
        # ---- Files -----------------------------------------------------------------------------
        import figures  # matplotlib, loaded here: a dry run draws nothing, and it takes a second

        matrix_path = figures.plot_confusion_matrix(matrix, classes,
                                                    args.output_dir / "confusion_matrix.png")
        # The 16 wrong answers given with the highest confidence: often a label that is itself
        # doubtful, or an image that would fool a person too.
        confidence = probabilities.max(dim=1).values
        wrong = (predictions != labels).nonzero().flatten()
        worst = wrong[confidence[wrong].argsort(descending=True)][:16].tolist()
        mistakes_path = figures.plot_mistakes(
            images[worst], [f"true: {classes[labels[index]]}\nsaid: {classes[predictions[index]]} "
                            f"{100 * confidence[index]:.0f}%" for index in worst],
            args.output_dir / "mistakes.png")
        results_path = args.output_dir / "evaluation.json"
        results = json.dumps({
            "checkpoint": str(args.checkpoint), "epoch": checkpoint["epoch"],
            "model_size": config["model"]["size"], "data": config.get("data"),
            "test_images": len(labels), "test_accuracy": accuracy,
            "test_accuracy_tta": flip_accuracy, "test_accuracy_tta_shifts": shift_accuracy,
            "per_class_accuracy": dict(zip(classes, per_class.tolist())),
            "confusion_matrix": matrix.tolist(),
        }, indent=2)
        common.write_atomically(results_path, lambda file: file.write(results.encode()))
        print(f"\nConfusion matrix: {matrix_path}\nMost confident mistakes: {mistakes_path}\n"
              f"Numbers: {results_path}")

    # ---- Summary -------------------------------------------------------------------------------
    common.section("Summary: what you just did")
    print("""\
- ran the test images through the network: eval mode, no gradients, each image once
- measured the accuracy overall, with test-time augmentation (flips, then shifts too), and
  class by class
- counted which class is taken for which (the confusion matrix)""")
    # The next lessons should read this same checkpoint: named, unless it is their default.
    flag = ("" if args.checkpoint == common.CHECKPOINT_DIR / "best.pt"
            else f" --checkpoint {shlex.quote(str(args.checkpoint))}")
    print(f"\nNext: python 07_save_load.py{flag} (saving, loading and exporting the model), "
          f"then python 08_predict.py samples/*{flag}")


if __name__ == "__main__":
    common.run_main(main)
