"""Make the figures of GUIDE.md's chapters 09-12 (docs/figures/) from real runs, in one command.

    python docs/make_next_steps_figures.py --data-dir data/cifar10-jpg

It runs the lessons as a reader would, printing each command, into one folder (--runs-dir,
checkpoints/next-steps/), and keeps each command's output there in a .log file:
    05_train.py on five classes, then 09_transfer_learning.py --compare on the other five,
        seeds 0, 1 and 2                               -> transfer.png
    10_sequences.py                                    -> sequences.png (held-out perplexity per
        epoch; the last model's text at two temperatures)
    11_quantization.py                                 -> quantization.png (size, time, accuracy)
    12_distributed.py under torchrun: 1 process on 1 thread, 2 processes on 1 thread each, 1
        process on 2 threads, the same global batch    -> distributed.png
A run whose results are already in the folder is not repeated, so the command can be stopped and
run again; --rerun NAME (transfer, sequences, quantization, distributed) repeats one. Everything
a figure shows, with the commands and where and when they ran (CPU, its load, PyTorch), goes into
docs/figures/next_steps.json, and --redraw draws the figures again from that file alone.
The figures are 256-colour PNGs, as docs/make_figures.py makes them.
"""

import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in docs/; common.py is one folder up
sys.path.insert(0, str(REPO_DIR / "docs"))  # and make_figures.py beside it
import common  # noqa: E402  (needs the lines above)
from make_figures import docs_parser, machine, shrink  # noqa: E402

FIGURES_DIR = REPO_DIR / "docs" / "figures"
RECORD = FIGURES_DIR / "next_steps.json"
STEPS = ("transfer", "sequences", "quantization", "distributed")
OLD_CLASSES = "airplane,automobile,bird,cat,deer"  # 05 learns these ...
NEW_CLASSES = "dog,frog,horse,ship,truck"  # ... and 09 transfers to these
TRANSFER_SEEDS = (0, 1, 2)
TEMPERATURES = (0.5, 1.5)  # the two samples drawn (10 prints 0.5, 1.0 and 1.5)
# 12's three ways to use the two cores, as (label, processes, threads per process).
DISTRIBUTED_SETUPS = (("1 process, 1 thread", 1, 1), ("2 processes, 1 thread each", 2, 1),
                      ("1 process, 2 threads", 1, 2))


# %% Running the lessons ---------------------------------------------------------------------------
def readable(word):
    """A word of a command as a reader types it: a path inside the repository made relative."""
    if isinstance(word, Path) and word.resolve().is_relative_to(REPO_DIR):
        return str(word.resolve().relative_to(REPO_DIR))
    return str(word)


def run(command, log_path, threads=None, display=None):
    """Run `command` (a list: python or torchrun and a script, with its flags) in the repository,
    its output into `log_path`; stop with the end of that output if it fails.

    Returns:
        {"command", "seconds", "load_before", "load_after", "output"}: the command as a reader
        would type it, its wall time, the machine's 1-minute load average before and after
        (os.getloadavg: processes running or waiting for a core; 2 cores are full at 2), and
        its output.
    """
    environment = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    prefix = []
    if threads is not None:  # threads per process: torch reads OMP_NUM_THREADS when it starts
        environment["OMP_NUM_THREADS"] = str(threads)
        prefix = [f"OMP_NUM_THREADS={threads}"]
    if command[0] == "torchrun":  # the same program, found without an activated environment
        executable = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
    else:
        executable = [sys.executable, *command[1:]]
    shown = display or " ".join(prefix + [shlex.quote(readable(word)) for word in command])
    print("$", shown, flush=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run([str(word) for word in executable], cwd=REPO_DIR, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    # Progress bars redraw a line with \r: keep what each line finally showed.
    output = "\n".join(line.split("\r")[-1] for line in result.stdout.splitlines())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"$ {shown}\n{output}\n")
    if result.returncode != 0:
        sys.exit(f"this command failed (output in {log_path}):\n{shown}\n"
                 + "\n".join(output.splitlines()[-15:]))
    print(f"  {seconds:.0f} s; output in {log_path}", flush=True)
    return {"command": shown, "seconds": round(seconds, 1), "load_before": load_before,
            "load_after": os.getloadavg()[0], "output": output}


def read_history(folder):
    """A training run's history.json (05, 10 and 12 write one): a dict of lists."""
    return json.loads((Path(folder) / "history.json").read_text())


def parse_compare_table(output):
    """The rows of 09_transfer_learning.py --compare's table, as dicts, from its output."""
    rows = []
    table = output.split("Scratch vs frozen vs fine-tuned")[-1]
    for line in table.splitlines():
        words = line.split()
        if len(words) >= 4 and words[-3].endswith("%") and words[-2].endswith("s"):
            rows.append({"method": " ".join(words[:-3]),
                         "test_accuracy": float(words[-3].rstrip("%")),
                         "seconds": float(words[-2].rstrip("s")),
                         "trainable_parameters": int(words[-1].replace(",", ""))})
    if not rows:
        raise ValueError("no --compare table in this output")
    return rows


def transfer(args, runs_dir):
    """05 on five classes, then 09 --compare on the five others, once per seed."""
    five = runs_dir / "five"
    command = ["python", "05_train.py", "--data-dir", args.data_dir, "--classes", OLD_CLASSES,
               "--epochs", args.five_epochs, "--checkpoint-dir", five]
    # Its command is recorded even when an earlier run of it is used.
    steps = {"train_five": {"command": " ".join(shlex.quote(readable(word))
                                                for word in command)}}
    if not (five / "best.pt").exists():
        steps["train_five"] = run(command, runs_dir / "five.log")
    history = read_history(five)
    compare = {}
    for seed in TRANSFER_SEEDS:
        # One thread: on two shared cores the times varied tenfold from run to run.
        result = run(["python", "09_transfer_learning.py", "--data-dir", args.data_dir,
                      "--classes", NEW_CLASSES, "--backbone", five / "best.pt",
                      "--images-per-class", 50, "--compare", "--seed", seed],
                     runs_dir / f"transfer_seed{seed}.log", threads=1)
        compare[seed] = {"rows": parse_compare_table(result.pop("output")), **result}
    return {"five_classes": {"classes": OLD_CLASSES, "epochs": len(history["epoch"]),
                             "best_val_accuracy": max(history["val_accuracy"]),
                             "training_seconds": sum(history["seconds"]),
                             **{key: value for key, value in steps.get("train_five", {}).items()
                                if key != "output"}},
            "new_classes": NEW_CLASSES, "images_per_class": 50, "compare": compare}


def sequences(args, runs_dir):
    """10 with its defaults; the history, the baselines and two samples of the last model."""
    import torch

    folder = runs_dir / "sequences"
    step = {}
    if not (folder / "last.pt").exists():
        step = run(["python", "10_sequences.py", "--checkpoint-dir", folder],
                   runs_dir / "sequences.log")
        step.pop("output")
    lesson = common.import_script("10_sequences")
    checkpoint = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)
    config = checkpoint["config"]
    model = lesson.CharacterLSTM(**config["model"])
    model.load_state_dict(checkpoint["model"])
    vocabulary = lesson.Vocabulary(config["vocabulary"])
    # The baselines 10 prints: a uniform guess, and each character's training-text frequency.
    encoded = vocabulary.encode(lesson.read_text(REPO_DIR / config["text"]
                                                 if not Path(config["text"]).is_absolute()
                                                 else config["text"]))
    split = int(len(encoded) * (1 - config["held_out_fraction"]))
    counts = torch.bincount(encoded[:split], minlength=len(vocabulary)).double() + 1
    frequencies_loss = -(counts / counts.sum())[encoded[split:]].log().mean().item()
    # The samples that 10 prints at the end: the last model, from its prompt, seed 0.
    samples = {str(temperature): lesson.DEFAULT_PROMPT + lesson.generate(
        model, vocabulary, lesson.DEFAULT_PROMPT, 200, temperature, "cpu", seed=config["seed"])
        for temperature in TEMPERATURES}
    return {"history": read_history(folder), "parameters": sum(p.numel()
                                                                for p in model.parameters()),
            "text_characters": len(encoded), "vocabulary_size": len(vocabulary),
            "uniform_perplexity": len(vocabulary),
            "frequencies_perplexity": math.exp(frequencies_loss), "samples": samples, **step}


def quantization(args, runs_dir):
    """11 on checkpoints/best.pt; its quantization.json."""
    path = runs_dir / "quantization" / "quantization.json"
    step = {}
    if not path.exists():
        step = run(["python", "11_quantization.py", "--data-dir", args.data_dir,
                    "--output-dir", runs_dir], runs_dir / "quantization.log")
        step.pop("output")
    return {"results": json.loads(path.read_text()), **step}


def distributed(args, runs_dir):
    """12 under torchrun three ways, the same global batch (256) and epochs; seconds per epoch."""
    setups = []
    for label, processes, threads in DISTRIBUTED_SETUPS:
        folder = runs_dir / f"distributed-{processes}x{threads}"
        step = {}
        if not (folder / "history.json").exists():
            step = run(["torchrun", "--standalone", f"--nproc_per_node={processes}",
                        "12_distributed.py", "--data-dir", args.data_dir, "--device", "cpu",
                        "--epochs", args.distributed_epochs, "--checkpoint-dir", folder],
                       runs_dir / f"distributed-{processes}x{threads}.log", threads=threads)
            step.pop("output")
        history = read_history(folder)
        setups.append({"label": label, "processes": processes, "threads": threads,
                       "epoch_seconds": history["seconds"],
                       "val_accuracy": history["val_accuracy"], **step})
    return {"global_batch": 256, "setups": setups}


# %% Drawing ---------------------------------------------------------------------------------------
def draw_transfer(record, path):
    """Test accuracy of the three methods: a bar for seed 0, a dot for every seed."""
    import matplotlib.pyplot as plt

    compare = record["compare"]
    seeds = sorted(compare, key=int)
    methods = [row["method"] for row in compare[seeds[0]]["rows"]]
    figure, axes = plt.subplots(figsize=(7, 4))
    for index, method in enumerate(methods):
        by_seed = [next(row for row in compare[seed]["rows"] if row["method"] == method)
                   for seed in seeds]
        first = by_seed[0]
        axes.bar(index, first["test_accuracy"], color=["#adb5bd", "#8ecae6", "#f4a261"][index])
        axes.plot([index] * len(by_seed), [row["test_accuracy"] for row in by_seed], "ko",
                  markersize=4)
        axes.text(index, first["test_accuracy"] + 1.5,
                  f"{first['test_accuracy']:.1f}%\n{first['trainable_parameters']:,} weights "
                  f"trained\nin {first['seconds']:.1f} s", ha="center", va="bottom", fontsize=9)
    axes.set_xticks(range(len(methods)), methods)
    axes.set_ylim(0, 100)
    axes.axhline(20, color="grey", linestyle=":", linewidth=1)
    axes.text(len(methods) - 0.5, 21, "chance (5 classes)", ha="right", fontsize=8,
              color="grey")
    axes.set_ylabel("test accuracy, %  (bar: seed 0; dots: seeds " + ", ".join(seeds) + ")")
    five = record["five_classes"]
    axes.set_title(f"CifarNet trained on {five['classes'].replace(',', ', ')},\n"
                   f"moved to {record['new_classes'].replace(',', ', ')} with "
                   f"{record['images_per_class']} training images each", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def draw_sequences(record, path):
    """Perplexity per epoch (training and held-out) with the baselines, and two samples."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    history = record["history"]
    figure = plt.figure(figsize=(8, 7))
    axes = figure.add_axes([0.1, 0.5, 0.85, 0.43])
    epochs = history["epoch"]
    axes.plot(epochs, [math.exp(loss) for loss in history["train_loss"]], "o-",
              label="training text (averaged over the epoch, with dropout)")
    axes.plot(epochs, history["val_perplexity"], "o-", label="held-out text")
    axes.axhline(record["frequencies_perplexity"], color="grey", linestyle="--", linewidth=1)
    axes.text(epochs[-1], record["frequencies_perplexity"] * 0.93,
              f"character frequencies alone: {record['frequencies_perplexity']:.1f}",
              ha="right", va="top", fontsize=8, color="grey")
    axes.set_yscale("log")
    axes.set_yticks([3, 4, 5, 7, 10, 15, 20, 30], ["3", "4", "5", "7", "10", "15", "20", "30"])
    axes.yaxis.set_minor_formatter(NullFormatter())  # no labels on the log scale's minor ticks
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="epoch", ylabel="perplexity (log scale)",
             title=f"10_sequences.py: a {record['parameters']:,}-parameter LSTM on "
                   f"{record['text_characters']:,} characters (uniform guess: "
                   f"{record['uniform_perplexity']})")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=9)
    for row, temperature in enumerate(record["samples"]):
        text = "\n".join(textwrap.wrap(record["samples"][temperature], 88,
                                       replace_whitespace=True, drop_whitespace=False))
        figure.text(0.05, 0.39 - 0.2 * row, f"temperature {temperature}:", fontsize=9,
                    weight="bold", va="top")
        figure.text(0.05, 0.36 - 0.2 * row, text, fontsize=8, family="monospace", va="top")
    return _save(figure, path)


def draw_quantization(record, path):
    """File size, milliseconds per image (batch 1 and 256) and test accuracy, float vs int8."""
    import matplotlib.pyplot as plt

    results = record["results"]
    timing = results["milliseconds_per_image"]
    figure, (size_axes, time_axes, accuracy_axes) = plt.subplots(
        1, 3, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 4, 2]})
    colours = {"float32": "#8ecae6", "int8": "#f4a261"}
    sizes = [results["file_bytes"][kind] / 1024 for kind in colours]
    size_axes.bar(list(colours), sizes, color=list(colours.values()))
    size_axes.set(title="file (KiB)")
    labels = ["float32, eager", "float32, torch.compile", "int8, torch.compile"]
    short = ["float32\neager", "float32\ncompiled", "int8\ncompiled"]
    width = 0.38
    for offset, batch in [(-width / 2, "batch_1"), (width / 2, "batch_256")]:
        values = [timing[label][batch] for label in labels]
        bars = time_axes.bar([index + offset for index in range(3)], values, width,
                             label=batch.replace("_", " "),
                             color="#adb5bd" if batch == "batch_1" else "#6c757d")
        time_axes.bar_label(bars, fmt="%.2f", fontsize=8)
    time_axes.set_xticks(range(3), short)
    time_axes.set(title="milliseconds per image (lower is faster)")
    time_axes.legend(fontsize=8)
    accuracies = [100 * results["test_accuracy"][kind] for kind in colours]
    accuracy_axes.bar(list(colours), accuracies, color=list(colours.values()))
    accuracy_axes.set(title="test accuracy (%)", ylim=(min(accuracies) - 2, 100))
    for axes, values, fmt in [(size_axes, sizes, "{:,.0f}"),
                              (accuracy_axes, accuracies, "{:.2f}")]:
        for index, value in enumerate(values):
            axes.text(index, value, fmt.format(value), ha="center", va="bottom", fontsize=9)
    for axes in (size_axes, time_axes, accuracy_axes):
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle(f"11_quantization.py on {results['checkpoint'].split('/')[-1]} "
                    f"(CPU: {results['cpu_capability']}, {results['threads']} threads; "
                    f"{results['test_images']:,} test images)", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def draw_distributed(record, machine_record, path):
    """Seconds per epoch of 12 in three set-ups: a bar for the median, a dot per epoch."""
    import statistics

    import matplotlib.pyplot as plt

    setups = record["setups"]
    figure, axes = plt.subplots(figsize=(8, 3.2))
    for index, setup in enumerate(setups):
        seconds = setup["epoch_seconds"]
        median = statistics.median(seconds)
        axes.barh(index, median, color=["#adb5bd", "#8ecae6", "#f4a261"][index])
        axes.plot(seconds, [index] * len(seconds), "ko", markersize=4)
        axes.text(max(seconds) + 1, index, f"{median:.0f} s", va="center", fontsize=9)
    axes.set_yticks(range(len(setups)), [setup["label"] for setup in setups])
    axes.invert_yaxis()
    axes.set_xlabel("seconds per epoch (bar: median; dots: each epoch)")
    axes.set_title(f"12_distributed.py, 45,000 images, global batch {record['global_batch']}, "
                   f"on a {machine_record['cores']}-core {machine_record['cpu']}", fontsize=10)
    axes.set_xlim(0, max(max(setup["epoch_seconds"]) for setup in setups) * 1.15)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path):
    """Write the figure to a temporary PNG, then a 256-colour copy to `path`."""
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as folder:
        full = Path(folder) / "full.png"
        figure.savefig(full, dpi=100)
        plt.close(figure)
        shrink(full, path)
    return path


def draw_all(record, figures_dir):
    """Every figure that `record` has the numbers for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    drawn = []
    if "transfer" in record:
        drawn.append(draw_transfer(record["transfer"], figures_dir / "transfer.png"))
    if "sequences" in record:
        drawn.append(draw_sequences(record["sequences"], figures_dir / "sequences.png"))
    if "quantization" in record:
        drawn.append(draw_quantization(record["quantization"], figures_dir / "quantization.png"))
    if "distributed" in record:
        drawn.append(draw_distributed(record["distributed"], record["machine"],
                                      figures_dir / "distributed.png"))
    return drawn


# %% The command ---------------------------------------------------------------------------------
def main():
    parser = docs_parser(__doc__, checkpoint=False)
    parser.add_argument("--runs-dir", type=Path, default=common.CHECKPOINT_DIR / "next-steps",
                        help="where the runs write their checkpoints, results and logs")
    parser.add_argument("--figures-dir", type=Path, default=FIGURES_DIR,
                        help="where the figures and next_steps.json are written")
    parser.add_argument("--only", choices=STEPS, nargs="+", default=list(STEPS),
                        help="run and draw only these")
    parser.add_argument("--rerun", choices=STEPS, nargs="+", default=[],
                        help="repeat these runs even if their results are there")
    parser.add_argument("--five-epochs", type=int, default=5,
                        help="epochs of 05_train.py on the five classes that 09 transfers from")
    parser.add_argument("--distributed-epochs", type=int, default=2,
                        help="epochs of each 12_distributed.py run")
    parser.add_argument("--redraw", action="store_true",
                        help="run nothing: draw the figures from --figures-dir/next_steps.json")
    args = parser.parse_args()
    record_path = args.figures_dir / "next_steps.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if not args.redraw:
        record["machine"] = machine()
        record["data_dir"] = str(args.data_dir)
        folders = {"transfer": ["five", "transfer"], "sequences": ["sequences"],
                   "quantization": ["quantization"],
                   "distributed": [f"distributed-{p}x{t}" for _, p, t in DISTRIBUTED_SETUPS]}
        for name in args.only:
            if name in args.rerun:  # move the earlier results aside, never delete them
                for folder in folders[name]:
                    if (args.runs_dir / folder).exists():
                        (args.runs_dir / folder).rename(
                            args.runs_dir / f"{folder}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            print(f"== {name}", flush=True)
            record[name] = {"made": time.strftime("%Y-%m-%d %H:%M"),
                            **globals()[name](args, args.runs_dir)}
            text = json.dumps(record, indent=2)
            common.write_atomically(record_path, lambda file: file.write(text.encode()))
    for path in draw_all({key: value for key, value in record.items()
                          if key in args.only or key not in STEPS}, args.figures_dir):
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    print(f"Record: {record_path}")


if __name__ == "__main__":
    main()
