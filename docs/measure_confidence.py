"""How sure is the trained network? The top probability it gives each test image, measured.

    python docs/measure_confidence.py --data-dir data/cifar10-jpg

GUIDE.md (08) says how sure the network is of its answers, and 05_train.py's comment on label
smoothing says it too; this is where those numbers come from. For every test image it takes the
largest softmax probability (the one 08_predict.py prints first) and prints its percentiles,
separately for the images the network gets right and those it gets wrong, and how many images
get more than a few thresholds. It uses 06_evaluate.py's own predict(), so the probabilities are
exactly the ones 06 counts.
"""

import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in docs/; common.py is one folder up
sys.path.insert(0, str(REPO_DIR / "docs"))  # and make_figures.py beside it
import checkpointing  # noqa: E402  (needs the lines above)
import common  # noqa: E402
from make_figures import docs_parser  # noqa: E402

PERCENTILES = (10, 25, 50, 75, 90)
THRESHOLDS = (0.5, 0.82, 0.9, 0.95)  # 0.82: what label smoothing 0.2 aims at for 10 classes


def confidence_report(top, right, percentiles=PERCENTILES, thresholds=THRESHOLDS):
    """Lines of text: percentiles of `top` (a float tensor, one top probability per image) for
    all images, those `right` (a bool tensor) and the others, then the share above thresholds."""
    import torch

    lines = [f"{'images':<8}{'count':>7}" + "".join(f"{f'p{p}':>8}" for p in percentiles)]
    for name, chosen in [("all", torch.ones_like(right)), ("right", right), ("wrong", ~right)]:
        values = top[chosen]
        if len(values) == 0:
            continue
        quantiles = torch.quantile(values.double(), torch.tensor(percentiles).double() / 100)
        lines.append(f"{name:<8}{len(values):>7,}"
                     + "".join(f"{q:>8.3f}" for q in quantiles.tolist()))
    for threshold in thresholds:
        above = top > threshold
        right_share = 100 * (above & right).sum() / max(1, right.sum())
        wrong_above = (above & ~right).sum()
        lines.append(f"top probability above {threshold:.2f}: {100 * above.float().mean():5.1f}% "
                     f"of all images; {right_share:5.1f}% of those it gets right, "
                     f"{100 * wrong_above / max(1, (~right).sum()):5.1f}% ({wrong_above}) of "
                     "those it gets wrong")
    return lines


def main():
    args = docs_parser(__doc__).parse_args()
    data = common.import_script("03_data")
    evaluation = common.import_script("06_evaluate")
    checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
    config = checkpoint["config"]
    model = checkpointing.model_from_checkpoint(checkpoint, "cpu")
    images, labels, _ = data.load_split(args.data_dir, "test", False, config["classes"])
    loader = data.InMemoryLoader(images, labels, 1000, "cpu", config["mean"], config["std"])
    probabilities, _, _ = evaluation.predict(model, loader, "cpu")
    top, predicted = probabilities.max(dim=1)
    right = predicted == labels
    print(f"{args.checkpoint}: {len(labels):,} test images, {100 * right.float().mean():.2f}% "
          "right; the top probability (softmax) per image, percentiles:")
    print("\n".join(confidence_report(top, right)))


if __name__ == "__main__":
    main()
