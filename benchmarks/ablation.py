"""Ablation: what each part of 05_train.py's recipe buys, and what each change to it would buy.

Every row trains the network from the same seed for the same number of epochs, with one part of
the recipe switched off or changed, and reports the test accuracy of its last epoch: plain, with
06_evaluate.py's flip test-time augmentation (2 views), and with its flips and 2-pixel shifts
(10 views), and the seconds its training and validation took. The first rows switch a part off;
the beginner's row is the network many tutorials start with: two convolutions, ReLU, no
batch-norm, trained with Adam on the plain images.

    default            05_train.py as it is
    no augmentation    --no-augment: no random crops and flips
    no label smoothing --label-smoothing 0
    no weight decay    --weight-decay 0
    no warm-up         the learning rate starts at its peak (start_factor=1.0)
    no decay           the learning rate stays at its peak after the warm-up (end_factor=1.0)
    no Nesterov        plain momentum instead of Nesterov's
    no batch-norm      every BatchNorm2d replaced by nn.Identity (the convolutions have no
                       bias, so this also takes away every shift batch-norm added)
    beginner's network two convolutions and Adam (lr 0.001), no augmentation or smoothing

The other rows are the levers tried for time to accuracy (GUIDE.md, "Faster to the same
accuracy"), each one change to the default:

    crops-2            random crops shift by up to 2 pixels, not 4 (padding=2)
    wide-last-block    the last block has 256 channels, not 128 (1.54 times the multiply-adds)
    crops-2-wide       both of the above
    batch-128          batches of 128 images, twice the steps (the lr scaled to 0.15 unless
                       --lr is given)
    bf16-cpu           the forward pass in bfloat16 on the CPU (torch.autocast; --device cpu
                       only); fast only on CPUs with bfloat16 instructions (Intel's AMX, in
                       Xeons from 2023 on), slower on the others
    wide-bf16-cpu      the wider last block, in bfloat16 on the CPU (more capacity, paid for
                       by the faster arithmetic; the same CPUs only)

Run it
    python benchmarks/ablation.py --data-dir data/cifar10-jpg --epochs 3   # the first 9 rows
    python benchmarks/ablation.py --data-dir data/cifar10-jpg --epochs 10 \
        --rows default crops-2 wide-last-block crops-2-wide batch-128 bf16-cpu wide-bf16-cpu
    python benchmarks/ablation.py --fake-data --epochs 1 --rows default beginner  # a check
    python benchmarks/ablation.py --help

Writes the table as JSON to --json (default outputs/ablation.json) and prints it as Markdown.
Rows run one after another; on a 2-core CPU each epoch of the default takes under a minute.
"""

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in benchmarks/; common.py is one folder up
import checkpointing  # noqa: E402  (needs the line above)
import common  # noqa: E402
import training_tools  # noqa: E402

data = common.import_script("03_data")
models = common.import_script("04_model")
training = common.import_script("05_train")
evaluation = common.import_script("06_evaluate")

# The rows: the name --rows takes, and the label in the table.
ROWS = {"default": "default", "no-augment": "no augmentation",
        "no-smoothing": "no label smoothing", "no-weight-decay": "no weight decay",
        "no-warmup": "no warm-up", "no-decay": "no decay", "no-nesterov": "no Nesterov",
        "no-batch-norm": "no batch-norm", "beginner": "beginner's network"}
# The levers (not run unless named in --rows).
LEVERS = {"crops-2": "crops of up to 2 pixels", "wide-last-block": "last block 256 wide",
          "crops-2-wide": "crops of 2 pixels, last block 256 wide", "batch-128": "batch of 128",
          "bf16-cpu": "bfloat16 on the CPU",
          "wide-bf16-cpu": "last block 256 wide, bfloat16 on the CPU"}
WIDE_ROWS = (LEVERS["wide-last-block"], LEVERS["crops-2-wide"], LEVERS["wide-bf16-cpu"])
BF16_ROWS = (LEVERS["bf16-cpu"], LEVERS["wide-bf16-cpu"])
SHORT_CROP_ROWS = (LEVERS["crops-2"], LEVERS["crops-2-wide"])


class BeginnerNet(nn.Module):
    """The two-convolution network of many first tutorials: conv-ReLU-pool twice, then two
    linear layers. No batch-norm, no augmentation, Adam."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class Bfloat16Forward(nn.Module):
    """Runs a model's forward pass under bfloat16 autocast on the CPU and hands back float32
    scores, so the loss, the backward pass and the optimizer step stay outside autocast (as in
    05's train_one_epoch on CUDA). Its weights are the model's own."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(images).float()


def parse_args():
    parser = common.make_data_parser("Train the network once per row, each with one part of "
                                     "05_train.py's recipe switched off, and compare test "
                                     "accuracies.", batch_size=256)
    parser.add_argument("--epochs", type=common.positive_int, default=3,
                        help="epochs per row (the same for every row)")
    parser.add_argument("--rows", nargs="+", choices=[*ROWS, *LEVERS], metavar="ROW",
                        help=f"the rows to run (default: the first nine): {', '.join(ROWS)}; "
                             f"and the levers: {', '.join(LEVERS)}")
    parser.add_argument("--lr", type=common.positive_float,
                        help="peak learning rate of every SGD row, whatever its batch size "
                             "(default: 05_train.py's for the row's batch size, 0.3 for 256)")
    parser.add_argument("--json", type=Path, default=common.OUTPUT_DIR / "ablation.json",
                        help="where to write the results")
    return common.parse_args(parser)


def train_row(row, args, device, train, val, test, classes, mean, std):
    """Train one row's network from args.seed and return its test accuracy (plain, with TTA)."""
    common.seed_everything(args.seed)
    batch_size = 128 if row == "batch of 128" else args.batch_size
    beginner = row == "beginner's network"
    augment = row not in ("no augmentation", "beginner's network")
    if beginner:
        model = BeginnerNet(len(classes)).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scheduler = None
        loss_fn = nn.CrossEntropyLoss()
    else:
        model = training_tools.make_model("small", len(classes), device)
        if row == "no batch-norm":
            for block in [model.stem, *model.blocks]:
                for name, child in block.named_children():
                    if isinstance(child, nn.BatchNorm2d):
                        setattr(block, name, nn.Identity())
        if row in WIDE_ROWS:
            # A wider last block: the same input (64 channels), 256 out instead of 128, and the
            # classifier reads 256 features.
            block_input = model.blocks[2].conv1.in_channels
            model.blocks[2] = models.ConvBlock(block_input, 256).to(
                device, memory_format=torch.channels_last)
            model.classifier = nn.Linear(256, len(classes), bias=False).to(device)
            print(f"This row's model: {sum(p.numel() for p in model.parameters()):,} parameters")
        lr = args.lr or training.default_lr(batch_size)
        weight_decay = 0.0 if row == "no weight decay" else 5e-4
        optimizer = training.make_optimizer(model, lr, weight_decay)
        if row == "no Nesterov":
            for group in optimizer.param_groups:
                group["nesterov"] = False
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.0 if row == "no label smoothing" else 0.2)
    padding = 2 if row in SHORT_CROP_ROWS else data.AUGMENT_PADDING
    train_loader = data.InMemoryLoader(*train, batch_size, device, mean, std, shuffle=True,
                                       augment=augment, padding=padding, drop_last=True)
    if not beginner:
        # 1.0 turns the warm-up (or the decay) into a flat line at the peak.
        scheduler = training.make_scheduler(
            optimizer, args.epochs * len(train_loader),
            start_factor=1.0 if row == "no warm-up" else training.START_FACTOR,
            end_factor=1.0 if row == "no decay" else training.END_FACTOR)
    val_loader = data.InMemoryLoader(*val, 2 * batch_size, device, mean, std)
    first_lr = optimizer.param_groups[0]["lr"]  # what the first step uses
    if row in BF16_ROWS:
        # Convolutions and matrix products in bfloat16, as 05 runs them on a CUDA GPU; the model
        # itself (and so its parameter count) stays as it is.
        model = Bfloat16Forward(model)
    history = {key: [] for key in ["epoch", "train_loss", "train_accuracy", "val_loss",
                                   "val_accuracy", "lr", "seconds"]}
    best, start = 0.0, time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            torch.manual_seed(args.seed + epoch)
            epoch_start = time.perf_counter()
            train_loss, train_accuracy = training.train_one_epoch(
                model, train_loader, loss_fn, optimizer, device, scheduler,
                description=f"{row}, epoch {epoch}/{args.epochs}")
            val_loss, val_accuracy = training.evaluate(model, val_loader, loss_fn, device)
            row_numbers = {"epoch": epoch, "train_loss": train_loss,
                           "train_accuracy": train_accuracy, "val_loss": val_loss,
                           "val_accuracy": val_accuracy,
                           "lr": optimizer.param_groups[0]["lr"],
                           "seconds": time.perf_counter() - epoch_start}
            # 05's divergence rule: a loss ten times that of guessing means the weights blew up.
            if not max(train_loss, val_loss) < checkpointing.blown_up_loss(len(classes)):
                raise FloatingPointError(f"the loss rose to {max(train_loss, val_loss):.3g}")
            for key, value in row_numbers.items():
                history[key].append(value)
            improved = val_accuracy > best
            best = max(best, val_accuracy)
            training_tools.print_epoch(row_numbers, args.epochs, improved)
    except FloatingPointError as error:
        print(f"{row}: diverged ({error})")
        return {"row": row, "diverged": True, "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start  # training and validation
    test_loader = data.InMemoryLoader(*test, 2 * batch_size, device, mean, std)
    plain, flip, shifts = evaluation.predict(model, test_loader, device)
    labels = test[1]
    return {"row": row, "diverged": False,
            "val_accuracy": history["val_accuracy"][-1],
            "test_accuracy": (plain.argmax(1) == labels).float().mean().item(),
            "test_accuracy_tta": (flip.argmax(1) == labels).float().mean().item(),
            "test_accuracy_tta_shifts": (shifts.argmax(1) == labels).float().mean().item(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "batch_size": batch_size, "first_lr": first_lr, "last_lr": history["lr"][-1],
            "seconds": seconds}


def main():
    args = parse_args()
    common.seed_everything(args.seed)
    device = common.get_device(args.device)
    rows = ([label for name, label in {**ROWS, **LEVERS}.items() if name in args.rows]
            if args.rows else list(ROWS.values()))
    if set(BF16_ROWS) & set(rows) and device.type != "cpu":
        raise common.UserError(f"the bf16-cpu and wide-bf16-cpu rows measure bfloat16 on the "
                               f"CPU, not on {device}; run them with --device cpu.")
    train, val, classes = data.load_train_and_val(args.data_dir, args.fake_data)
    mean, std = data.normalization_statistics(train.images, args.data_dir, args.fake_data)
    test_images, test_labels, _ = data.load_split(args.data_dir, "test", args.fake_data)
    test = (test_images, test_labels)
    results = []
    for row in rows:
        print(f"\n=== {row} ===")
        results.append(train_row(row, args, device, train, val, test, classes, mean, std))
    report = {"epochs": args.epochs, "seed": args.seed, "batch_size": args.batch_size,
              "lr": args.lr or training.default_lr(args.batch_size),
              "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "data": data.data_source(args.data_dir, args.fake_data),
              "rows": results}
    text = json.dumps(report, indent=2)
    common.write_atomically(args.json, lambda file: file.write(text.encode()))
    print("\n| recipe | test accuracy | change | flip TTA | flips + shifts | training time |\n"
          "|---|---|---|---|---|---|")
    baseline = next((r["test_accuracy"] for r in results if r["row"] == "default"), None)
    for result in results:
        if result["diverged"]:
            print(f"| {result['row']} | diverged | | | | |")
            continue
        change = ("" if baseline is None or result["row"] == "default"
                  else f"{100 * (result['test_accuracy'] - baseline):+.2f}")
        print(f"| {result['row']} | {100 * result['test_accuracy']:.2f}% | {change} | "
              f"{100 * result['test_accuracy_tta']:.2f}% | "
              f"{100 * result['test_accuracy_tta_shifts']:.2f}% | {result['seconds']:.0f} s |")
    print(f"\nSaved {args.json}")


if __name__ == "__main__":
    common.run_main(main)
