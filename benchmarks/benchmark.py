"""Benchmark: how fast does 05_train.py train, and is the data pipeline holding it back?

What it measures, in images per second and milliseconds per batch
    1a. the data pipeline alone, as 05_train.py runs it: iterating 03_data.InMemoryLoader
        (shuffled and augmented), which takes a batch out of memory, copies it to the device,
        normalises it, crops and flips it and makes it channels_last: everything that happens
        before the forward pass
    1b. for comparison, the classic per-image pipeline of 03_data.py (sections 4-7): a Dataset
        that makes a PIL image of each image and applies RandomCrop, RandomHorizontalFlip,
        ToTensor and Normalize to it, batched by a DataLoader
    2.  the model alone: forward, loss, backward and optimizer step on one batch that is already
        on the device, with the same loss, optimizer and bfloat16 setting as 05_train.py
    3.  the full training loop: 05_train.py's own train_one_epoch, data pipeline included
    3c. only with --compile: row 3 again with the model compiled as `05_train.py --compile`
        compiles it (training_tools.compile_model); compiling takes a minute or more, so it is
        opt-in
The ratio full loop / model alone says how much the data pipeline costs: at 1.3x or below, the
model's own compute dominates and the pipeline is not the bottleneck.

Run it
    python benchmarks/benchmark.py                                  # CIFAR-10, small model
    python benchmarks/benchmark.py --data-dir data/cifar10-jpg      # the JPEG copy of CIFAR-10
    python benchmarks/benchmark.py --model-size large --device cuda
    python benchmarks/benchmark.py --fake-data --json outputs/benchmark.json
    python benchmarks/benchmark.py --compile                        # adds row 3c, torch.compile
    python benchmarks/benchmark.py --help                           # every flag and its default

Reads the training images (see 03_data.py). Writes nothing unless --json PATH is given.
Each measurement runs --warmup untimed batches (first-call costs: memory allocation, cuDNN's
choice of convolution algorithms) and then times --batches batches. Row 3c first runs one
batch that compiles the model, and reports its time apart.
"""

# %% Setup -----------------------------------------------------------------------------------------
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))  # this file lives in benchmarks/; common.py is one folder up
import common  # noqa: E402  (needs the line above)
import training_tools  # noqa: E402

data = common.import_script("03_data")  # the data pipeline
models = common.import_script("04_model")  # the network
train = common.import_script("05_train")  # the training recipe and train_one_epoch

EPOCHS_FOR_ESTIMATE = 10  # the time of `python 05_train.py --epochs 10` is estimated below
CIFAR10_TRAIN_IMAGES = 50_000 - data.VALIDATION_SIZE  # CIFAR-10's training images 05 trains on
TARGET_RATIO = 1.3  # full loop / model alone at or below this: data loading is not the bottleneck


def parse_args():
    """The shared data flags (common.make_data_parser) plus the benchmark's own."""
    parser = common.make_data_parser("Measure the speed of the data pipeline, the model and the "
                                "full training loop of 05_train.py. --batch-size defaults to "
                                "05_train.py's for the model size.", batch_size=None)
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--model-size", choices=sorted(models.MODEL_SIZES), default="small",
                       help="the network to time (see 04_model.py)")
    bench.add_argument("--workers", type=common.worker_count, default=0,
                       help="DataLoader worker processes for row 1b (the per-image PIL pipeline) "
                            "only; 05_train.py's in-memory pipeline (rows 1a and 3) uses none")
    bench.add_argument("--batches", type=common.positive_int, default=None,
                       help="timed batches per measurement (default: 30 on a GPU, 8 on the CPU)")
    bench.add_argument("--warmup", type=common.non_negative_int, default=None,
                       help="untimed batches before each measurement (default: 5 on a GPU, "
                            "2 on the CPU)")
    bench.add_argument("--no-mixed-precision", action="store_true",
                       help="on CUDA, compute in float32 instead of bfloat16 (as in 05_train.py)")
    bench.add_argument("--compile", action="store_true",
                       help="also time the full loop with the model compiled by torch.compile "
                            "(row 3c, as 05_train.py --compile); compiling adds a minute or more")
    bench.add_argument("--json", type=Path, default=None, metavar="PATH",
                       help="also write the numbers to this JSON file")
    return common.parse_args(parser)


# %% Timing ----------------------------------------------------------------------------------------
def seconds_per_batch(step, warmup, batches, device):
    """Call `step()` `warmup` times untimed, then time `batches` calls.

    The device is synchronised before each clock reading, so work that a step only queued on
    the GPU is counted.

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
    """The next `count` batches of an endless stream, shaped like a loader.

    train_one_epoch only calls iter() on its loader, and len() for the progress bar. Taking the
    batches from one long-lived stream means the warm-up call and the timed call share one
    loader iterator, so whatever starting an iterator costs falls in the warm-up.
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


# %% The data, as 05_train.py prepares it ----------------------------------------------------------
def make_train_loader(train_split, batch_size, device, mean, std):
    """05_train.py's training loader: the in-memory pipeline, shuffled and augmented."""
    return data.InMemoryLoader(*train_split, batch_size, device, mean, std,
                               shuffle=True, augment=True, drop_last=True)


# %% 1a. The data pipeline of 05_train.py ----------------------------------------------------------
def time_data_pipeline(train_loader, device, warmup, batches):
    """Seconds per batch for everything 05_train.py does to a batch before the forward pass.

    Each InMemoryLoader batch arrives on the device normalised, augmented and channels_last, so
    taking the next one is the whole pipeline.
    """
    stream = endless(train_loader)
    return seconds_per_batch(lambda: next(stream), warmup, batches, device)


# %% 1b. The classic per-image pipeline, for comparison --------------------------------------------
def time_pil_pipeline(train_split, batch_size, workers, device, mean, std, warmup, batches):
    """Seconds per batch for 03_data.py's per-image PIL pipeline, up to the same point as 1a."""
    train_transform, _ = data.make_transforms(mean, std)
    # Only as many images as the measurement uses, so that setting up the dataset stays quick.
    count = min(len(train_split.labels), (warmup + batches) * batch_size)
    # The same pixels as the in-memory set, made into a PIL image one at a time: no files needed.
    dataset = data.ImageDataset(train_split.images[:count], train_split.labels[:count],
                                train_transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        drop_last=len(dataset) > batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
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
    model = models.build_model(train_args.model_size, num_classes=num_classes)
    model = model.to(device, memory_format=torch.channels_last)  # the layout of the batches
    loss_fn = nn.CrossEntropyLoss(label_smoothing=train_args.label_smoothing)
    optimizer = train.make_optimizer(model, train_args.lr, train_args.weight_decay)
    # The schedule of a full run: the benchmark's few steps stay early in its warm-up, where the
    # learning rate is low, as in the first batches of a real run.
    scheduler = train.make_scheduler(optimizer, total_steps=train_args.epochs * steps_per_epoch)
    return model, loss_fn, optimizer, scheduler


def time_model(training, images, labels, device, warmup, batches, mixed_precision):
    """Seconds per training step on one batch that is already on the device."""
    model, loss_fn, optimizer, scheduler = training
    use_bf16 = mixed_precision and device.type == "cuda"  # as in train_one_epoch
    model.train()

    def step():  # steps 3 to 7 of 05_train.py's loop, and the schedule
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(images)
            loss = loss_fn(outputs, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return seconds_per_batch(step, warmup, batches, device)


# %% 3. The full training loop ---------------------------------------------------------------------
def time_full_loop(training, train_loader, device, warmup, batches, mixed_precision):
    """Seconds per batch of 05_train.py's train_one_epoch, data pipeline included.

    train_one_epoch runs twice on the same stream of batches: first on `warmup` batches
    (untimed), then on `batches` batches (timed). It ends by reading its loss sum with .item(),
    which waits for the device, and common.synchronize() makes sure nothing is left running.
    """
    model, loss_fn, optimizer, scheduler = training
    stream = endless(train_loader)
    if warmup:
        train.train_one_epoch(model, NextBatches(stream, warmup), loss_fn, optimizer, device,
                              scheduler, mixed_precision=mixed_precision, description="warm-up")
    common.synchronize(device)
    start = time.perf_counter()
    train.train_one_epoch(model, NextBatches(stream, batches), loss_fn, optimizer, device,
                          scheduler, mixed_precision=mixed_precision, description="timed")
    common.synchronize(device)
    return (time.perf_counter() - start) / batches


# %% 3c. The full training loop, compiled (--compile) ----------------------------------------------
def time_compiled_full_loop(training, train_loader, device, warmup, batches, mixed_precision):
    """Row 3 with the model compiled as `05_train.py --compile` compiles it
    (training_tools.compile_model).

    The first training batch compiles the model: it is timed on its own, as the cost a run pays
    once at its start, and then row 3's measurement runs on the compiled model.

    Returns:
        (seconds per batch, seconds that compile_model and the first batch took).
    """
    model, loss_fn, optimizer, scheduler = training
    start = time.perf_counter()
    compiled_model = training_tools.compile_model(model, device)
    train.train_one_epoch(compiled_model, NextBatches(endless(train_loader), 1), loss_fn,
                          optimizer, device, scheduler, mixed_precision=mixed_precision,
                          description="compiling")
    common.synchronize(device)
    compile_seconds = time.perf_counter() - start
    seconds = time_full_loop((compiled_model, loss_fn, optimizer, scheduler), train_loader,
                             device, warmup, batches, mixed_precision)
    return seconds, compile_seconds


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

    # The training settings of 05_train.py, with this run's model, batch size and device; then
    # 05's own rule fills in the batch size and peak lr it would use for them.
    train_args = training_defaults()
    for name in ("model_size", "batch_size", "device", "seed", "no_mixed_precision"):
        setattr(train_args, name, getattr(args, name))
    train_args.batch_size = train_args.batch_size or train.DEFAULT_BATCH_SIZE[args.model_size]
    train_args.lr = train_args.lr or train.default_lr(train_args.batch_size)
    batch_size = train_args.batch_size
    # as in train_one_epoch: bfloat16 only on GPUs with bfloat16 tensor cores
    mixed_precision = (device.type == "cuda" and not args.no_mixed_precision
                       and torch.cuda.is_bf16_supported(including_emulation=False))
    common.section("Setup")
    print(f"Device: {device} ({describe_device(device)})")
    print(f"PyTorch {torch.__version__}   model: {args.model_size}   batch size: {batch_size}"
          f"   workers (row 1b): {args.workers}   timed batches: {batches} after {warmup} "
          "warm-up")

    # Only the training part is needed: it is what 05_train.py's training loop reads.
    start = time.perf_counter()
    train_split, _, classes = data.load_train_and_val(args.data_dir, args.fake_data)
    mean, std = data.normalization_statistics(train_split.images, args.data_dir, args.fake_data)
    print(f"Data: {len(train_split.labels):,} training images, "
          f"loaded in {time.perf_counter() - start:.1f} s")
    if batch_size > len(train_split.labels):
        raise common.UserError(f"--batch-size {batch_size} is larger than the "
                               f"{len(train_split.labels):,} training images; pass a smaller "
                               "--batch-size.")
    train_loader = make_train_loader(train_split, batch_size, device, mean, std)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as in 05_train.py: same-shaped batches

    results = {}  # name -> seconds per batch

    common.section("Measuring")
    start = time.perf_counter()
    results["data_pipeline"] = time_data_pipeline(train_loader, device, warmup, batches)
    print(f"1a. data pipeline of 05_train.py          {time.perf_counter() - start:5.1f} s",
          flush=True)

    start = time.perf_counter()
    results["pil_pipeline"] = time_pil_pipeline(train_split, batch_size, args.workers, device,
                                                mean, std, warmup, batches)
    print(f"1b. classic PIL pipeline                  {time.perf_counter() - start:5.1f} s",
          flush=True)

    training = build_training(train_args, len(classes), len(train_loader), device)
    # The model alone trains on one real batch, prepared exactly as the loop prepares it.
    batch_images, batch_labels = next(iter(train_loader))
    start = time.perf_counter()
    results["model"] = time_model(training, batch_images, batch_labels, device, warmup, batches,
                                  mixed_precision)
    print(f"2.  model alone                           {time.perf_counter() - start:5.1f} s",
          flush=True)

    start = time.perf_counter()
    results["full_loop"] = time_full_loop(training, train_loader, device, warmup, batches,
                                          mixed_precision)
    print(f"3.  full training loop (train_one_epoch)  {time.perf_counter() - start:5.1f} s",
          flush=True)

    if args.compile:  # a fresh model, optimizer and schedule, set up as for row 3
        start = time.perf_counter()
        training = build_training(train_args, len(classes), len(train_loader), device)
        results["full_loop_compiled"], compile_seconds = time_compiled_full_loop(
            training, train_loader, device, warmup, batches, mixed_precision)
        print(f"3c. full loop, torch.compile              {time.perf_counter() - start:5.1f} s "
              f"(compiling and the first batch: {compile_seconds:.1f} s)", flush=True)

    common.section("Results")
    print(f"{describe_device(device)}, PyTorch {torch.__version__}, model {args.model_size}, "
          f"batch size {batch_size}, mixed precision "
          f"{'bfloat16' if mixed_precision else 'off'}\n")
    rows = [
        ("1a. data pipeline of 05_train.py", results["data_pipeline"]),
        ("1b. classic PIL pipeline (comparison)", results["pil_pipeline"]),
        ("2.  model alone (forward+loss+backward+step)", results["model"]),
        ("3.  full training loop (train_one_epoch)", results["full_loop"]),
    ]
    if args.compile:
        rows.append(("3c. full loop, torch.compile", results["full_loop_compiled"]))
    print_table(rows, batch_size)

    ratio = results["full_loop"] / results["model"]
    target_met = ratio <= TARGET_RATIO
    print(f"\nFull loop / model alone: {ratio:.2f}x   (target <= {TARGET_RATIO}x: the data "
          f"pipeline is not the bottleneck) -> {'met' if target_met else 'NOT met'}")
    if not target_met:
        print("The model waits for data: compare rows 1a and 2. A larger --batch-size spreads "
              "each batch's fixed costs over more images.")

    steps = CIFAR10_TRAIN_IMAGES // batch_size  # 05_train.py drops the last partial batch
    estimate = EPOCHS_FOR_ESTIMATE * steps * results["full_loop"]
    print(f"Estimated {EPOCHS_FOR_ESTIMATE} epochs on {CIFAR10_TRAIN_IMAGES:,} images: "
          f"{EPOCHS_FOR_ESTIMATE} x {steps} batches x {1000 * results['full_loop']:.1f} ms = "
          f"{estimate:,.0f} s ({estimate / 60:.1f} min); training steps only, without "
          "validation or loading the data at the start")
    if args.compile:
        speedup = results["full_loop"] / results["full_loop_compiled"]
        # Compiling pays for itself once the time it saves per batch adds up to what it cost.
        saved_per_batch = results["full_loop"] - results["full_loop_compiled"]
        break_even = (f"it pays for its {compile_seconds:.0f} s of compiling after about "
                      f"{compile_seconds / saved_per_batch:,.0f} batches" if saved_per_batch > 0
                      else "it is not faster here, so compiling does not pay off")
        print(f"torch.compile: {speedup:.2f}x the speed of row 3; {break_even}")

    if args.json:
        report = {
            "device": str(device), "device_name": describe_device(device),
            "torch": torch.__version__, "model_size": args.model_size,
            "batch_size": batch_size, "workers": args.workers,
            "mixed_precision": mixed_precision, "warmup": warmup, "batches": batches,
            "results": {name: {"ms_per_batch": 1000 * seconds,
                               "images_per_second": batch_size / seconds}
                        for name, seconds in results.items()},
            "full_loop_over_model": ratio, "target_ratio": TARGET_RATIO, "target_met": target_met,
            "estimated_10_epoch_seconds": estimate,
        }
        if args.compile:
            report.update(compile_seconds=compile_seconds, compile_speedup=speedup)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"Numbers written to {args.json}")


if __name__ == "__main__":
    common.run_main(main)
