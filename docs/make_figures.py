"""Make the figures of GUIDE.md (docs/figures/*.png) from a trained checkpoint, with one command.

    python docs/make_figures.py --data-dir data/cifar10-jpg

It runs the lessons as a reader would, each writing into a temporary folder, and keeps a small
copy of each figure:
    03_data.py                      -> data_samples.png, data_augmentation.png
    04_model.py                     -> model_architecture.png (04 writes it into outputs/)
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
import shutil
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
    "model_architecture.png": "04_model.py",
    "training_curves.png": "the checkpoint's history",
    "confusion_matrix.png": "06_evaluate.py", "mistakes.png": "06_evaluate.py",
    "predictions.png": "08_predict.py",
}


def machine():
    """The CPU, its cores and instructions, and the software versions, for the record."""
    import torch

    name, flags = platform.processor() or platform.machine(), []
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as file:
        for line in file:  # Linux: the CPU's name and its instruction-set flags
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    # The instructions that make int8 fast (11): 8-bit multiply-adds (VNNI) and Intel's AMX.
    try:
        import logging
        # torchao 0.18 with torch 2.14 logs a warning meant for its developers (as 11 hides it).
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        import torchao
        torchao_version = torchao.__version__
    except ImportError:
        torchao_version = None
    return {"cpu": name, "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "int8_instructions": [flag for flag in flags if "vnni" in flag or "amx" in flag],
            "python": platform.python_version(), "torch": torch.__version__,
            "torchao": torchao_version}


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


def docs_parser(docstring, checkpoint=True):
    """The flags docs/'s scripts share: --data-dir, and --checkpoint unless checkpoint=False.
    The description is the first line of the script's `docstring`."""
    parser = argparse.ArgumentParser(description=docstring.splitlines()[0],
                                     formatter_class=common.HelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=common.DATA_DIR,
                        help="the CIFAR-10 data, as for the lessons")
    if checkpoint:
        parser.add_argument("--checkpoint", type=Path, default=common.CHECKPOINT_DIR / "best.pt",
                            help="the trained model (05_train.py's best.pt)")
    return parser


def main():
    args = docs_parser(__doc__).parse_args()
    checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
    # last.pt, beside best.pt, holds the history of every epoch; best.pt only up to its own.
    last_path = args.checkpoint.with_name("last.pt")
    history = (checkpointing.load_checkpoint(last_path, device="cpu")["history"]
               if last_path.exists() else checkpoint["history"])
    with tempfile.TemporaryDirectory() as folder:
        made = Path(folder)
        run("03_data.py", "--data-dir", args.data_dir, "--output-dir", made)
        run("04_model.py")  # the small model's drawing; 04 has no --output-dir
        shutil.copy(common.OUTPUT_DIR / "model_architecture.png", made)
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
    lines = evaluation.strip().splitlines()  # 06's report, from the accuracy to the mistake
    first = next(index for index, line in enumerate(lines) if line.startswith("Test accuracy"))
    last = next(index for index, line in enumerate(lines) if line.startswith("Most common"))
    provenance = {
        "machine": machine(),
        "data_dir": str(args.data_dir),
        "data": str(checkpoint["config"].get("data")),
        "checkpoint": {"path": str(args.checkpoint.resolve().relative_to(REPO_DIR))
                       if args.checkpoint.resolve().is_relative_to(REPO_DIR) else
                       str(args.checkpoint), "epoch": checkpoint["epoch"],
                       "model_size": checkpoint["config"]["model"]["size"]},
        "figures": MADE_BY,
        "evaluation_output": lines[first:last + 1],
    }
    text = json.dumps(provenance, indent=2)
    common.write_atomically(FIGURES_DIR / "figures.json", lambda file: file.write(text.encode()))


if __name__ == "__main__":
    main()
