"""Benchmark: how fast does 05_train.py train, and is the data pipeline holding it back?

What it measures, in images per second and milliseconds per batch
    1a. the data pipeline alone, as 05_train.py runs it: the in-memory DataLoader
        (common.make_loader), the copy to the device, common.normalize, common.augment and the
        channels_last layout; everything that happens before the forward pass
    1b. for comparison, the classic per-image pipeline: a Dataset of PIL images with
        RandomCrop, RandomHorizontalFlip, ToTensor and Normalize, batched by a DataLoader
    2.  the model alone: forward, loss, backward and optimizer step on one batch that is already
        on the device, with the same loss, optimizer and bfloat16 setting as 05_train.py
    3.  the full training loop: 05_train.py's own train_one_epoch, data pipeline included
The ratio full loop / model alone says how much the data pipeline costs: at 1.3x or below, the
model's own compute dominates and the pipeline is not the bottleneck.

Run it
    python benchmarks/benchmark.py                                  # CIFAR-10, small model
    python benchmarks/benchmark.py --data-dir data/cifar10-jpg      # the JPEG copy of CIFAR-10
    python benchmarks/benchmark.py --model-size large --device cuda
    python benchmarks/benchmark.py --fake-data --json outputs/benchmark.json
    python benchmarks/benchmark.py --help                           # every flag and its default

Reads the training images (see 03_data.py). Writes nothing unless --json PATH is given.
Each measurement runs --warmup untimed batches (first-call costs: memory allocation, cuDNN's
choice of convolution algorithms) and then times --batches batches.
"""

# %% Setup -----------------------------------------------------------------------------------------
import importlib
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in benchmarks/; common.py is one folder up
import common  # noqa: E402  (needs the line above)

# 05_train.py cannot be imported with `import 05_train`: a module name cannot start with a digit.
train = importlib.import_module("05_train")

EPOCHS_FOR_ESTIMATE = 10  # the time of `python 05_train.py --epochs 10` is estimated below
CIFAR10_TRAIN_IMAGES = 45_000  # CIFAR-10's 50,000 training images minus 5,000 for validation
TARGET_RATIO = 1.3  # full loop / model alone at or below this: data loading is not the bottleneck


def parse_args():
    """The shared data flags (common.make_parser) plus the benchmark's own."""
    parser = common.make_parser("Measure the speed of the data pipeline, the model and the "
                                "full training loop of 05_train.py. --batch-size defaults to "
                                "05_train.py's for the model size.", batch_size=None)
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--model-size", choices=sorted(common.model_module().MODEL_SIZES),
                       default="small", help="the network to time (see 04_model.py)")
    bench.add_argument("--batches", type=common.positive_int, default=None,
                       help="timed batches per measurement (default: 30 on a GPU, 8 on the CPU)")
    bench.add_argument("--warmup", type=common.non_negative_int, default=None,
                       help="untimed batches before each measurement (default: 5 on a GPU, "
                            "2 on the CPU)")
    bench.add_argument("--no-mixed-precision", action="store_true",
                       help="on CUDA, compute in float32 instead of bfloat16 (as in 05_train.py)")
    bench.add_argument("--json", type=Path, default=None, metavar="PATH",
                       help="also write the numbers to this JSON file")
    return parser.parse_args()


# %% Timing ----------------------------------------------------------------------------------------
def seconds_per_batch(step, warmup, batches, device):
    """Call `step()` `warmup` times untimed, then time `batches` calls.

    Returns:
        The mean wall-clock seconds of one call.
    """
    for _ in range(warmup):
        step()
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        step()
    common.synchronize(device)
    return (time.perf_counter() - start) / batches


def endless(loader):
    """Yield the loader's batches forever, starting a new epoch whenever one ends.

    A small data set (FakeData has 900 training images) may hold fewer batches than a
    measurement needs; cycling through epochs, as training does, supplies as many as asked for.
    """
    while True:
        yield from loader


class NextBatches:
    """The next `count` batches of an endless stream, shaped like a DataLoader.

    train_one_epoch only calls iter() on its loader, and len() for the progress bar. Taking the
    batches from one long-lived stream means the warm-up call and the timed call share one
    loader iterator, so starting worker processes (with --workers) falls in the warm-up.
    """

    def __init__(self, stream, count):
        self.stream = stream
        self.count = count

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(self.stream, self.count)


# %% The device, described -------------------------------------------------------------------------
def cpu_name():
    """The processor's model name where the system says it, else its architecture."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_device(device):
    """One line naming the hardware the numbers were measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()}, {platform.platform()})"
    threads = torch.get_num_threads()  # set by OMP_NUM_THREADS or torch.set_num_threads
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores, "
            f"PyTorch uses {threads} thread{'' if threads == 1 else 's'}")


# %% 1a. The data pipeline of 05_train.py ----------------------------------------------------------
def time_data_pipeline(train_set, args, device, warmup, batches):
    """Seconds per batch for everything 05_train.py does to a batch before the forward pass."""
    train_loader = common.make_loader(train_set, args.batch_size, shuffle=True, device=device,
                                      workers=args.workers)
    stream = endless(train_loader)

    def step():
        images, labels = next(stream)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        images = common.normalize(images)
        images = common.augment(images, padding=train.AUGMENT_PADDING)
        images.contiguous(memory_format=torch.channels_last)

    return seconds_per_batch(step, warmup, batches, device)


# %% 1b. The classic per-image pipeline, for comparison --------------------------------------------
class PILImages(Dataset):
    """A Dataset of PIL images transformed one at a time, as torchvision.datasets.CIFAR10 does."""

    def __init__(self, images, labels, transform):
        from torchvision.transforms.functional import to_pil_image

        # The same pixels as the in-memory set, as PIL images: no image files are needed.
        self.images = [to_pil_image(image) for image in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


def time_pil_pipeline(train_set, args, device, warmup, batches):
    """Seconds per batch for the per-image PIL pipeline, up to the same point as 1a."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(common.IMAGE_SIZE, padding=train.AUGMENT_PADDING,
                              padding_mode="reflect"),  # reflect, like common.augment
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(common.CIFAR10_MEAN, common.CIFAR10_STD),
    ])
    # Only as many images as the measurement uses, so that building the PIL images stays quick.
    count = min(len(train_set), (warmup + batches) * args.batch_size)
    dataset = PILImages(train_set.images[:count], train_set.labels[:count], transform)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                        drop_last=len(dataset) > args.batch_size, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    stream = endless(loader)

    def step():
        images, labels = next(stream)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        images.contiguous(memory_format=torch.channels_last)

    return seconds_per_batch(step, warmup, batches, device)


# %% 2. The model alone ----------------------------------------------------------------------------
def training_defaults():
    """05_train.py's flags at their default values: peak lr, weight decay, label smoothing, ...

    They are read from 05_train.py's own parser (given an empty command line) rather than
    copied here, so the benchmark keeps training with the recipe 05_train.py uses.
    """
    saved_argv = sys.argv
    sys.argv = ["05_train.py"]
    try:
        return train.parse_args()
    finally:
        sys.argv = saved_argv


def build_training(train_args, num_classes, steps_per_epoch, device):
    """The model, loss, optimizer and schedule, set up as in 05_train.py's main().

    Returns:
        (model, loss_fn, optimizer, scheduler).
    """
    model = common.model_module().build_model(train_args.model_size, num_classes=num_classes)
    model = model.to(device, memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=train_args.label_smoothing)
    optimizer = train.make_optimizer(model, train_args.lr, train_args.weight_decay)
    # The schedule of a full run: the benchmark's few steps stay early in its warm-up, where the
    # learning rate is low, as in the first batches of a real run.
    scheduler = train.make_scheduler(optimizer, total_steps=train_args.epochs * steps_per_epoch)
    return model, loss_fn, optimizer, scheduler


def time_model(training, images, labels, train_args, device, warmup, batches):
    """Seconds per training step on one batch that is already on the device."""
    model, loss_fn, optimizer, scheduler = training
    use_bf16 = device.type == "cuda" and not train_args.no_mixed_precision
    model.train()

    def step():  # steps 3 to 7 of 05_train.py's loop, and the schedule
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(images)
            loss = loss_fn(outputs, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return seconds_per_batch(step, warmup, batches, device)


# %% 3. The full training loop ---------------------------------------------------------------------
def time_full_loop(training, train_set, train_args, device, warmup, batches):
    """Seconds per batch of 05_train.py's train_one_epoch, data pipeline included.

    train_one_epoch runs twice on the same stream of batches: first on `warmup` batches
    (untimed), then on `batches` batches (timed). It ends by reading its loss sum with .item(),
    which waits for the device, and common.synchronize() makes sure nothing is left running.
    """
    model, loss_fn, optimizer, scheduler = training
    train_loader = common.make_loader(train_set, train_args.batch_size, shuffle=True,
                                      device=device, workers=train_args.workers)
    stream = endless(train_loader)
    if warmup:
        train.train_one_epoch(model, NextBatches(stream, warmup), loss_fn, optimizer, scheduler,
                              device, train_args, epoch=1)
    common.synchronize(device)
    start = time.perf_counter()
    train.train_one_epoch(model, NextBatches(stream, batches), loss_fn, optimizer, scheduler,
                          device, train_args, epoch=1)
    common.synchronize(device)
    return (time.perf_counter() - start) / batches


# %% The report ------------------------------------------------------------------------------------
def print_table(rows, batch_size):
    """Print one line per measurement: what, images per second, milliseconds per batch."""
    width = max(len(label) for label, _ in rows)
    print(f"{'what':<{width}}  {'images/s':>10}  {'ms/batch':>9}")
    for label, seconds in rows:
        rate = batch_size / seconds
        rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"  # 3 digits even when slow
        print(f"{label:<{width}}  {rate_text:>10}  {1000 * seconds:>9.1f}")


def main():
    args = parse_args()
    device = common.get_device(args.device)
    common.seed_everything(args.seed)
    # Fewer batches on the CPU, where one step of the small model takes about a second.
    if args.dry_run:
        default_warmup, default_batches = 1, 1
    elif device.type in ("cuda", "mps"):
        default_warmup, default_batches = 5, 30
    else:
        default_warmup, default_batches = 2, 8
    warmup = default_warmup if args.warmup is None else args.warmup
    batches = default_batches if args.batches is None else args.batches

    if args.batch_size is None:
        args.batch_size = train.DEFAULT_BATCH_SIZE[args.model_size]
    common.section("Setup")
    print(f"Device: {device} ({describe_device(device)})")
    print(f"PyTorch {torch.__version__}   model: {args.model_size}   batch size: {args.batch_size}"
          f"   workers: {args.workers}   timed batches: {batches} after {warmup} warm-up")

    # Only the training split is needed: it is what 05_train.py's training loop reads.
    start = time.perf_counter()
    images, labels, classes = common.load_split(args.data_dir, "train", args.fake_data)
    train_indices, _ = common.split_train_val(len(labels))
    train_set = common.InMemoryDataset(images[train_indices], labels[train_indices])
    print(f"Data: {len(train_set):,} training images, "
          f"loaded in {time.perf_counter() - start:.1f} s")
    if args.batch_size > len(train_set):
        raise common.UserError(f"--batch-size {args.batch_size} is larger than the "
                               f"{len(train_set):,} training images; pass a smaller --batch-size.")

    # The training settings of 05_train.py, with this run's model, batch size and device.
    train_args = training_defaults()
    for name in ("model_size", "batch_size", "workers", "device", "seed", "no_mixed_precision"):
        setattr(train_args, name, getattr(args, name))
    train.settle_batch_size_and_lr(train_args)  # the lr 05_train.py would use at this batch size
    train_args.dry_run = False  # a dry run of 05_train.py stops after one batch; time them all
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as in 05_train.py: same-shaped batches

    results = {}  # name -> seconds per batch

    common.section("Measuring")
    start = time.perf_counter()
    results["data_pipeline"] = time_data_pipeline(train_set, args, device, warmup, batches)
    print(f"1a. data pipeline of 05_train.py          {time.perf_counter() - start:5.1f} s",
          flush=True)

    start = time.perf_counter()
    results["pil_pipeline"] = time_pil_pipeline(train_set, args, device, warmup, batches)
    print(f"1b. classic PIL pipeline                  {time.perf_counter() - start:5.1f} s",
          flush=True)

    steps_per_epoch = len(train_set) // args.batch_size
    training = build_training(train_args, len(classes), steps_per_epoch, device)
    # The model alone trains on one real batch, prepared exactly as the loop prepares it.
    batch_images, batch_labels = next(iter(common.make_loader(
        train_set, args.batch_size, shuffle=True, device=device)))
    batch_images = common.augment(common.normalize(batch_images.to(device)),
                                  padding=train.AUGMENT_PADDING)
    batch_images = batch_images.contiguous(memory_format=torch.channels_last)
    batch_labels = batch_labels.to(device)
    start = time.perf_counter()
    results["model"] = time_model(training, batch_images, batch_labels, train_args, device,
                                  warmup, batches)
    print(f"2.  model alone                           {time.perf_counter() - start:5.1f} s",
          flush=True)

    start = time.perf_counter()
    results["full_loop"] = time_full_loop(training, train_set, train_args, device, warmup, batches)
    print(f"3.  full training loop (train_one_epoch)  {time.perf_counter() - start:5.1f} s",
          flush=True)

    common.section("Results")
    print(f"{describe_device(device)}, PyTorch {torch.__version__}, model {args.model_size}, "
          f"batch size {args.batch_size}, mixed precision "
          f"{'bfloat16' if device.type == 'cuda' and not args.no_mixed_precision else 'off'}\n")
    print_table([
        ("1a. data pipeline of 05_train.py", results["data_pipeline"]),
        ("1b. classic PIL pipeline (comparison)", results["pil_pipeline"]),
        ("2.  model alone (forward+loss+backward+step)", results["model"]),
        ("3.  full training loop (train_one_epoch)", results["full_loop"]),
    ], args.batch_size)

    ratio = results["full_loop"] / results["model"]
    target_met = ratio <= TARGET_RATIO
    print(f"\nFull loop / model alone: {ratio:.2f}x   (target <= {TARGET_RATIO}x: the data "
          f"pipeline is not the bottleneck) -> {'met' if target_met else 'NOT met'}")
    if not target_met:
        print("The model waits for data: compare rows 1a and 2, and see whether more --workers "
              "or a larger --batch-size help.")

    steps = CIFAR10_TRAIN_IMAGES // args.batch_size  # 05_train.py drops the last partial batch
    estimate = EPOCHS_FOR_ESTIMATE * steps * results["full_loop"]
    print(f"Estimated {EPOCHS_FOR_ESTIMATE} epochs on {CIFAR10_TRAIN_IMAGES:,} images: "
          f"{EPOCHS_FOR_ESTIMATE} x {steps} batches x {1000 * results['full_loop']:.1f} ms = "
          f"{estimate:,.0f} s ({estimate / 60:.1f} min); training steps only, without "
          "validation or loading the data at the start")

    if args.json:
        report = {
            "device": str(device), "device_name": describe_device(device),
            "torch": torch.__version__, "model_size": args.model_size,
            "batch_size": args.batch_size, "workers": args.workers,
            "mixed_precision": device.type == "cuda" and not args.no_mixed_precision,
            "warmup": warmup, "batches": batches,
            "results": {name: {"ms_per_batch": 1000 * seconds,
                               "images_per_second": args.batch_size / seconds}
                        for name, seconds in results.items()},
            "full_loop_over_model": ratio, "target_ratio": TARGET_RATIO, "target_met": target_met,
            "estimated_10_epoch_seconds": estimate,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"Numbers written to {args.json}")


if __name__ == "__main__":
    common.run_main(main)
