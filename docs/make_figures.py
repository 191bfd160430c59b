"""Make the figures of GUIDE.md (docs/figures/*.png) from a trained checkpoint, with one command.

    python docs/make_figures.py --data-dir data/cifar10-jpg

It runs the lessons as a reader would, each writing into a temporary folder, and keeps a small
copy of each figure:
    03_data.py                      -> data_samples.png, data_augmentation.png
    the checkpoint's history        -> training_curves.png (figures.plot_history, as 05 draws it)
    06_evaluate.py --checkpoint     -> confusion_matrix.png, mistakes.png
    08_predict.py samples/*         -> predictions.png
The copies are reduced to 256 colours, which keeps them a few dozen KB each. Where and on what
they were made (machine, PyTorch, data, checkpoint) goes into docs/figures/figures.json, which
the guide's captions repeat.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in docs/; common.py is one folder up
import checkpointing  # noqa: E402  (needs the line above)
import common  # noqa: E402
import figures  # noqa: E402

FIGURES_DIR = REPO_DIR / "docs" / "figures"
MADE_BY = {  # which script writes each figure
    "data_samples.png": "03_data.py", "data_augmentation.png": "03_data.py",
    "training_curves.png": "the checkpoint's history",
    "confusion_matrix.png": "06_evaluate.py", "mistakes.png": "06_evaluate.py",
    "predictions.png": "08_predict.py",
}


def run(script, *args):
    """Run a lesson with this Python; stop with its own message if it fails."""
    command = [sys.executable, str(REPO_DIR / script), *map(str, args)]
    print("$", " ".join(command[1:]))
    result = subprocess.run(command, cwd=REPO_DIR, env=dict(os.environ, MPLBACKEND="Agg"),
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr.strip()}")
    return result.stdout


def shrink(source, target):
    """Copy a PNG with its colours reduced to a 256-colour palette (the figures are flat plots
    and small photos, so the difference does not show)."""
    from PIL import Image

    with Image.open(source) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        common.write_atomically(target, lambda file: small.save(file, format="PNG",
                                                                  optimize=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR,
                        help="the CIFAR-10 data, as for the lessons")
    parser.add_argument("--checkpoint", type=Path, default=common.CHECKPOINT_DIR / "best.pt",
                        help="the trained model (05_train.py's best.pt)")
    args = parser.parse_args()
    checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
    # last.pt, beside best.pt, holds the history of every epoch; best.pt only up to its own.
    last_path = args.checkpoint.with_name("last.pt")
    history = (checkpointing.load_checkpoint(last_path, device="cpu")["history"]
               if last_path.exists() else checkpoint["history"])
    with tempfile.TemporaryDirectory() as folder:
        made = Path(folder)
        run("03_data.py", "--data-dir", args.data_dir, "--output-dir", made)
        figures.plot_history(history, made / "training_curves.png")
        evaluation = run("06_evaluate.py", "--checkpoint", args.checkpoint,
                         "--data-dir", args.data_dir, "--output-dir", made)
        samples = sorted((REPO_DIR / "samples").iterdir())
        run("08_predict.py", *samples, "--checkpoint", args.checkpoint, "--output-dir", made)
        total = 0
        for name in MADE_BY:
            shrink(made / name, FIGURES_DIR / name)
            size = (FIGURES_DIR / name).stat().st_size
            total += size
            print(f"{FIGURES_DIR / name}: {size / 1024:.0f} KiB")
    print(f"{total / 1024:.0f} KiB in all")
    provenance = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": __import__("torch").__version__,
        "data": str(checkpoint["config"].get("data")),
        "checkpoint": {"path": str(args.checkpoint), "epoch": checkpoint["epoch"],
                       "model_size": checkpoint["config"]["model"]["size"]},
        "figures": MADE_BY,
        "evaluation_output": evaluation.strip().splitlines()[-12:],
    }
    text = json.dumps(provenance, indent=2)
    common.write_atomically(FIGURES_DIR / "figures.json", lambda file: file.write(text.encode()))


if __name__ == "__main__":
    main()
