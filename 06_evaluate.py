"""06 - Evaluation: how good is the trained network, and where does it go wrong?

What you will learn
    - the evaluation loop: eval mode, no gradients, every test image exactly once
    - overall accuracy, and why it is not enough: accuracy per class and the confusion matrix
    - test-time augmentation (TTA): averaging the prediction for an image and its mirror image
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

import numpy as np
import torch

import common


def parse_args():
    """The shared data flags plus --checkpoint."""
    parser = common.make_parser("Evaluate a trained checkpoint on the test set.", batch_size=1000)
    parser.add_argument("--checkpoint", type=common.existing_file,
                        default=common.CHECKPOINT_DIR / "best.pt",
                        help="the checkpoint to evaluate (05_train.py writes best.pt and last.pt)")
    return parser.parse_args()


# %% The evaluation loop ---------------------------------------------------------------------------
@torch.no_grad()  # no gradients are needed to measure: saves memory and time
def predict(model, loader, device, mean, std, dry_run=False):
    """Class probabilities for every image of `loader`, plain and with flip TTA.

    Returns:
        (probabilities, tta_probabilities, labels): two float tensors (N, classes) and the labels
        (N,), all on the CPU.
    """
    model.eval()  # BatchNorm uses its training statistics; results do not depend on the batch
    plain, averaged, all_labels = [], [], []
    for images, labels in loader:
        images = common.normalize(images.to(device), mean, std)
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=device.type == "cuda"):
            logits = model(images)
            # Test-time augmentation: a mirrored cat is still a cat, and the network saw mirrored
            # images in training. Averaging the two predictions smooths out some of its quirks.
            mirrored_logits = model(images.flip(dims=[3]))  # dim 3 is the width: left <-> right
        probabilities = logits.float().softmax(dim=1)
        plain.append(probabilities.cpu())
        averaged.append(((probabilities + mirrored_logits.float().softmax(dim=1)) / 2).cpu())
        all_labels.append(labels)
        if dry_run:
            break
    return torch.cat(plain), torch.cat(averaged), torch.cat(all_labels)


def confusion_matrix(predictions, labels, num_classes):
    """Count how often each true class (row) was predicted as each class (column)."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    # Each (true, predicted) pair becomes one index into the flattened matrix.
    matrix.view(-1).index_add_(0, labels * num_classes + predictions,
                               torch.ones_like(labels))
    return matrix


# %% Figures ---------------------------------------------------------------------------------------
def plot_confusion_matrix(matrix, classes, path):
    """Save the confusion matrix as a PNG: counts in each cell, the diagonal is correct."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (test set)")
    threshold = matrix.max().item() / 2
    for row in range(len(classes)):
        for column in range(len(classes)):
            count = matrix[row, column].item()
            axes.text(column, row, count, ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_mistakes(images, labels, probabilities, classes, path, count=16):
    """Save the `count` wrong predictions made with the highest confidence, with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confidence, predictions = probabilities.max(dim=1)
    wrong = (predictions != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:count]
    columns = 4
    rows = max(1, -(-len(worst) // columns))  # ceiling division
    figure, axes_grid = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows),
                                     squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, index in zip(axes_grid.flat, worst.tolist()):
        axes.imshow(images[index].permute(1, 2, 0).numpy())  # (3, H, W) -> (H, W, 3) for imshow
        axes.set_title(f"true: {classes[labels[index]]}\nsaid: {classes[predictions[index]]} "
                       f"{100 * confidence[index]:.0f}%", fontsize=9)
    figure.suptitle("The most confident mistakes")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# %% The whole evaluation --------------------------------------------------------------------------
def main():
    args = parse_args()
    device = common.get_device(args.device)
    checkpoint = common.load_checkpoint(args.checkpoint, device)
    config = checkpoint["config"]
    model = common.model_from_checkpoint(checkpoint, device)
    model = model.to(memory_format=torch.channels_last)
    classes = config["classes"]
    print(f"Checkpoint: {args.checkpoint} (epoch {checkpoint['epoch']}, model "
          f"{config['model']['size']}, best validation accuracy "
          f"{100 * checkpoint['best_val_accuracy']:.2f}%)")

    images, labels, data_classes = common.load_split(args.data_dir, "test", args.fake_data)
    if list(data_classes) != list(classes):
        raise common.UserError(
            f"the checkpoint was trained on the classes {classes}, but the test data has "
            f"{list(data_classes)}; evaluate with the same data it was trained on.")
    test_loader = common.make_loader(common.InMemoryDataset(images, labels), args.batch_size,
                                     shuffle=False, device=device, workers=args.workers)
    probabilities, tta_probabilities, labels = predict(
        model, test_loader, device, config["mean"], config["std"], args.dry_run)
    images = images[:len(labels)]  # a dry run stops after one batch

    # ---- Overall accuracy, plain and with TTA --------------------------------------------------
    predictions = probabilities.argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()
    tta_accuracy = (tta_probabilities.argmax(dim=1) == labels).float().mean().item()
    print(f"\nTest accuracy on {len(labels):,} images: {100 * accuracy:.2f}%")
    print(f"With flip test-time augmentation:  {100 * tta_accuracy:.2f}% "
          f"({100 * (tta_accuracy - accuracy):+.2f} points, for twice the compute)")

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
        true_class, said_class = np.unravel_index(off_diagonal.argmax().item(), matrix.shape)
        print(f"Most common mistake: {classes[true_class]} taken for {classes[said_class]} "
              f"({off_diagonal.max().item()} times)")

    if args.dry_run:
        print("\nDry run: one batch only, so no files were written.")
        return

    # ---- Files ---------------------------------------------------------------------------------
    args.output_dir.mkdir(parents=True, exist_ok=True)
    matrix_path = args.output_dir / "confusion_matrix.png"
    plot_confusion_matrix(matrix, classes, matrix_path)
    mistakes_path = args.output_dir / "mistakes.png"
    plot_mistakes(images, labels, probabilities, classes, mistakes_path)
    results_path = args.output_dir / "evaluation.json"
    results_path.write_text(json.dumps({
        "checkpoint": str(args.checkpoint), "epoch": checkpoint["epoch"],
        "model_size": config["model"]["size"], "data": config["data"],
        "test_images": len(labels), "test_accuracy": accuracy, "test_accuracy_tta": tta_accuracy,
        "per_class_accuracy": dict(zip(classes, per_class.tolist())),
        "confusion_matrix": matrix.tolist(),
    }, indent=2))
    print(f"\nConfusion matrix: {matrix_path}\nMost confident mistakes: {mistakes_path}\n"
          f"Numbers: {results_path}")


if __name__ == "__main__":
    common.run_main(main)
