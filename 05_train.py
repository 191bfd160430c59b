"""05 - Training: the loop that teaches the network, written out step by step.

What you will learn
    - the seven steps of a training loop, numbered in the code where they happen:
      1 get a batch, 2 move it to the device, 3 zero the gradients, 4 forward pass,
      5 loss, 6 backward pass, 7 optimizer.step()
    - what a real run adds around them: a learning-rate schedule, validation every epoch,
      checkpoints you can resume from, a progress bar, a history of the losses and its plot

Run it
    python 05_train.py --epochs 10                       # CIFAR-10 (downloaded into data/)
    python 05_train.py --epochs 10 --model-size large    # the bigger network, for a GPU
    python 05_train.py --epochs 1 --fake-data            # offline check (into checkpoints/fake/)
    python 05_train.py --dry-run                         # one batch of everything, no files
    python 05_train.py --epochs 10 --resume              # finish an interrupted run
    python 05_train.py --epochs 10 --overwrite           # train again over the last run
    python 05_train.py --epochs 10 --compile             # torch.compile: slow start, see below
    python 05_train.py --help                            # every flag, with its default

Reads the data (03_data.py). Writes checkpoints/best.pt (whenever validation accuracy improves),
checkpoints/last.pt (after every epoch), outputs/history.json and outputs/training_curves.png.
A new run never replaces a trained model unless you say --overwrite, and only one run at a time
writes to a checkpoint folder. Ctrl-C, or a SIGTERM from a shutdown, stops it cleanly: every
finished epoch is kept, and it prints the command that goes on from there.
Next: `python 06_evaluate.py` measures the best model on the test set.

train_one_epoch and evaluate work with any model and any DataLoader that yields (float images,
labels): copy them into your own project as they are.
"""

# %% Imports
import json
import math
import shlex
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import checkpointing
import common

# The data pipeline of 03_data.py and the network of 04_model.py. (`import 03_data` is not valid
# Python, because a name cannot start with a digit; common.import_script takes it as a string.)
data = common.import_script("03_data")
models = common.import_script("04_model")

# %% Settings --------------------------------------------------------------------------------------
# The flags (see --help) change a run; these constants are the rest of the recipe. The learning
# rate follows a schedule (make_scheduler, below): it rises from a tenth of its peak to the peak
# over the first quarter of the steps ("warm-up"), then falls in a straight line to a thousandth
# of the peak. The peak is 0.6 for batches of 512 images and scales with the batch size (256
# images: 0.3). These values come from the first version of this project: 10-epoch runs of the
# small network on an H100 with peaks from 0.1 to 0.8 per 512 images, of which 0.6 was kept. The
# warm-up share and the two factors are the common "short rise, long fall" shape and were not
# tuned one by one.
MOMENTUM = 0.9  # SGD steps along a sum of past gradients, each older one counting 0.9x less
WARMUP_FRACTION = 0.25  # share of the steps spent raising the learning rate to its peak
START_FACTOR = 0.1  # the warm-up starts at peak / 10
END_FACTOR = 0.001  # and the decay ends at peak / 1000
DEFAULT_BATCH_SIZE = {"small": 256, "large": 512}  # used when --batch-size is not given
PEAK_LR_PER_512_IMAGES = 0.6  # the default --lr is this x batch size / 512


# %% One epoch of training: the seven steps --------------------------------------------------------
def train_one_epoch(model, loader, loss_fn, optimizer, device, scheduler=None,
                    mixed_precision=False, description="training"):
    """Train `model` on every batch of `loader` once.

    Args:
        model: an nn.Module, already on `device`.
        loader: yields (images, labels): float images (B, C, H, W), already in the form the
            model takes (scaled, normalised, augmented: nothing here changes their values), and
            int64 class indices (B,). A torch DataLoader, or 03_data.InMemoryLoader.
        loss_fn: called as loss_fn(outputs, labels); it must return the batch's mean loss, as
            PyTorch's losses do by default (nn.CrossEntropyLoss(), not reduction="sum").
        optimizer: a torch.optim optimizer over the model's parameters.
        device: where the model is: "cpu", "cuda", "mps" or a torch.device.
        scheduler: optional; stepped once per batch, not per epoch, so make it for
            epochs x len(loader) steps. For a scheduler that steps once per epoch, leave this
            None and call its step() yourself after each epoch.
        mixed_precision: on a CUDA GPU with bfloat16 tensor cores, run the forward pass in
            bfloat16 (see below); ignored elsewhere.
        description: the label of the progress bar.

    Returns:
        (mean loss, accuracy) over the images of this epoch, averaged per image. Both are
        measured while the weights change, so they differ from an evaluation after the epoch.

    Raises:
        FloatingPointError: the loss became NaN or infinite: training diverged.
        ValueError: the loader gave no batch.
    """
    device = torch.device(device)
    model.train()  # training mode: batch-norm uses each batch's own statistics (04_model.py)
    # bfloat16 "autocast" (CUDA only): matrix products and convolutions run in a 16-bit number
    # format on the GPU's tensor cores, about twice as fast, while the weights stay float32.
    # Only GPUs from 2020 on (NVIDIA Ampere and newer) have bfloat16 tensor cores; older ones
    # (a T4, a V100) would emulate it, slower than float32, so they stay in float32.
    use_bf16 = (mixed_precision and device.type == "cuda"
                and torch.cuda.is_bf16_supported(including_emulation=False))
    # Running sums are kept as tensors on the device: reading a number with .item() makes the
    # CPU wait for the GPU, so it is done only every 20 steps, for the progress bar.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    # tqdm wraps the loader and draws a progress bar (disable=None: none when the output is a
    # file rather than a terminal; leave=False: the bar disappears once the epoch is done).
    progress = tqdm(loader, desc=description, unit="batch", leave=False, disable=None)
    for step, (images, labels) in enumerate(progress):  # 1. Get a batch from the loader
        # 2. Move the batch to the model's device (a no-op if the loader put it there already).
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        # 3. Zero the gradients: backward() adds to each .grad, so last step's must go first.
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(images)  # 4. Forward pass: one score (logit) per class per image
            loss = loss_fn(outputs, labels)  # 5. Loss: how wrong the scores are, one number
        # 6. Backward pass: d(loss)/d(weight) for every weight, into its .grad. It sits outside
        # the autocast block: the backward pass reuses the number formats the forward pass chose.
        loss.backward()
        optimizer.step()  # 7. Update every weight from its gradient (SGD: a step against it)

        # ---- Bookkeeping: the schedule, the running loss and accuracy, the progress bar -------
        if scheduler is not None:
            scheduler.step()  # the next batch uses the next learning rate of the schedule
        loss_sum += loss.detach() * len(labels)  # detach: keep the number, not its graph
        correct += (outputs.argmax(dim=1) == labels).sum()
        seen += len(labels)
        if step % 20 == 0:
            running_loss = loss_sum.item() / seen
            if not math.isfinite(running_loss):
                raise FloatingPointError(f"the training loss became {running_loss}")
            # param_groups: the optimizer's groups of parameters, each with its own settings
            # (make_optimizer below makes two); the schedule sets the same lr in all of them.
            progress.set_postfix(loss=f"{running_loss:.3f}",
                                 lr=f"{optimizer.param_groups[0]['lr']:.3g}")
    if seen == 0:
        raise ValueError("the loader gave no batch (a set smaller than one batch, with "
                         "drop_last=True?)")
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the training loss became {mean_loss}")
    return mean_loss, correct.item() / seen


# %% Evaluation ------------------------------------------------------------------------------------
def evaluate(model, loader, loss_fn, device):
    """Mean loss and accuracy of `model` on every image of `loader`, without training it.

    Args:
        model, loader, loss_fn, device: as for train_one_epoch. The loader must not augment.

    Returns:
        (mean loss, accuracy), averaged over images (not over batches, whose sizes can differ).
    """
    device = torch.device(device)
    model.eval()  # evaluation mode: batch-norm uses the statistics it gathered in training
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    # no_grad (02_autograd.py): no graph is recorded, which saves memory and time; nothing is
    # trained here, so no gradient is ever needed.
    with torch.no_grad():
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            outputs = model(images)
            loss_sum += loss_fn(outputs, labels) * len(labels)
            correct += (outputs.argmax(dim=1) == labels).sum()
            seen += len(labels)
    if seen == 0:
        raise ValueError("the loader gave no batch")
    return loss_sum.item() / seen, correct.item() / seen


# %% The optimizer and the learning-rate schedule --------------------------------------------------
def make_optimizer(model, lr, weight_decay=5e-4, momentum=MOMENTUM):
    """SGD with Nesterov momentum, and weight decay on the weight matrices and filters only.

    Momentum: each update follows a sum of recent gradients, where every older one counts
    `momentum` (0.9) times less (buffer = 0.9 x buffer + gradient), which smooths out the noise
    of single batches; in a steady slope that sum grows to 10 times one gradient. Nesterov: the
    step looks a little ahead along that sum, which corrects an overshoot sooner. Weight decay
    pulls weights towards 0 so the network does not rely on a few large ones; it is not applied
    to BatchNorm's scales and shifts or to biases (the 1-dimensional parameters): they are few,
    and shrinking them only fights the normalisation.

    Args:
        model: the nn.Module to train.
        lr: the learning rate (the peak one, when a schedule scales it).
        weight_decay: the L2 penalty on parameters with 2 or more dimensions.
        momentum: the share of the previous update carried into the next.

    Returns:
        A torch.optim.SGD optimizer over all of the model's parameters.
    """
    decayed = [p for p in model.parameters() if p.ndim > 1]
    not_decayed = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decayed, "weight_decay": weight_decay},
         {"params": not_decayed, "weight_decay": 0.0}],
        lr=lr, momentum=momentum, nesterov=True)


def make_scheduler(optimizer, total_steps):
    """Warm up linearly from START_FACTOR x lr to lr, then decay linearly to END_FACTOR x lr.

    A randomly initialised network is fragile: full-size steps at the start can throw it into a
    bad region, so the learning rate starts low (warm-up). Later, large steps bounce around the
    bottom of the loss valley; shrinking them lets the weights settle (decay).

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        total_steps: how many times scheduler.step() will be called in the whole run: once per
            batch, so epochs x batches per epoch.

    Returns:
        A LambdaLR scheduler: it multiplies the optimizer's lr by lr_factor(step).
    """
    warmup_steps = max(1, round(WARMUP_FRACTION * total_steps))

    def lr_factor(step):
        if step < warmup_steps:
            return START_FACTOR + (1 - START_FACTOR) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - END_FACTOR) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


# %% The command line, the data and the run's settings -------------------------------------------
def add_training_flags(parser):
    """Add the training recipe's flags to `parser`, in a group of their own, and return the group
    (12_distributed.py shares them; each script adds its own --checkpoint-dir)."""
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=common.positive_int, default=10,
                          help="passes over the training images")
    training.add_argument("--lr", type=common.positive_float,
                          help="peak learning rate, reached after the warm-up "
                               "(default: 0.6 x batch size / 512)")
    training.add_argument("--model-size", choices=sorted(models.MODEL_SIZES), default="small",
                          help="small trains on a CPU; large is for a GPU")
    training.add_argument("--weight-decay", type=float, default=5e-4,
                          help="L2 penalty on the weights of convolutions and the linear layer")
    training.add_argument("--label-smoothing", type=float, default=0.2,
                          help="share of each target spread evenly over all the classes "
                               "(0 turns it off)")
    training.add_argument("--no-augment", action="store_true",
                          help="train on the images as they are, without random crops and flips")
    training.add_argument("--no-mixed-precision", action="store_true",
                          help="on CUDA, compute in float32 instead of bfloat16")
    training.add_argument("--resume", action="store_true",
                          help="continue from last.pt in --checkpoint-dir")
    training.add_argument("--overwrite", action="store_true",
                          help="replace the run already in --checkpoint-dir (without this, a new "
                               "run refuses to)")
    return training


def check_training_flags(parser, args):
    """Refuse, through argparse's one-line error, numbers that add_training_flags' types let
    through but that cannot make sense."""
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be at least 0 and less than 1")
    if not 0 <= args.weight_decay < 1:
        parser.error("--weight-decay must be at least 0 and less than 1")
    if args.lr is not None and args.lr > 10:
        parser.error("--lr must be at most 10; far smaller values diverge already")
    if args.batch_size is not None and args.batch_size > 2 ** 16:
        parser.error("--batch-size must be at most 65536")


def parse_args():
    """The command line: the shared data flags (common.make_data_parser) plus the training ones."""
    parser = common.make_data_parser(
        "Train the CIFAR-10 network and save checkpoints. Unless given, --batch-size is 256 for "
        "the small model (more updates per epoch, and fast on a CPU) and 512 for the large one "
        "(a GPU needs big batches to stay busy), and --lr is 0.6 x batch size / 512.",
        batch_size=None)
    training = add_training_flags(parser)
    training.add_argument("--compile", action="store_true",
                          help="run the model through torch.compile: the first epoch is slower "
                               "while it compiles, later steps may be faster (mostly on a GPU; "
                               "on the CPU it needs a C++ compiler); see compile_model")
    training.add_argument("--checkpoint-dir", type=Path,
                          help="where last.pt and best.pt are written (default: checkpoints/, and "
                               "checkpoints/fake/ with --fake-data, so that a check on random "
                               "images never replaces a trained model)")
    args = common.parse_args(parser)
    check_training_flags(parser, args)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = common.default_checkpoint_dir(args.fake_data)
    return args


def fill_in_batch_size_and_lr(args, resumed=None):
    """Choose --batch-size and --lr where they were not given: a resumed run keeps its own; a new
    run takes DEFAULT_BATCH_SIZE and the linear scaling rule."""
    if args.batch_size is None:
        args.batch_size = (resumed["config"]["batch_size"] if resumed
                           else DEFAULT_BATCH_SIZE[args.model_size])
    if args.lr is None:
        args.lr = resumed["config"]["lr"] if resumed else default_lr(args.batch_size)


def default_lr(batch_size):
    """The peak learning rate for a batch size, by the linear scaling rule: a batch twice as big
    averages the gradient over twice as many images, so its steps are less noisy and can be
    twice as long."""
    return PEAK_LR_PER_512_IMAGES * batch_size / 512


def make_loaders(args, device):
    """The training and validation loaders of 03_data.py's fast pipeline: batches arrive
    normalised, augmented (training only) and on the device.

    Returns:
        (train_loader, val_loader, classes, mean, std).
    """
    start = time.perf_counter()
    train, val, classes = data.load_train_and_val(args.data_dir, args.fake_data)
    # Inputs are normalised with the training images' own statistics (03_data.py, section 2).
    # They go into the checkpoint, so that 06-08 normalise new images exactly as training did.
    mean, std = data.normalization_statistics(train.images, args.data_dir, args.fake_data)
    if args.dry_run:  # one batch of each: enough to check that everything runs
        train = data.Split(*(part[:args.batch_size] for part in train))
        val = data.Split(*(part[:args.batch_size] for part in val))
    train_loader = data.InMemoryLoader(*train, args.batch_size, device, mean, std,
                                       shuffle=True, augment=not args.no_augment)
    # Evaluation keeps no graph and so needs far less memory: twice the batch fits easily.
    val_loader = data.InMemoryLoader(*val, 2 * args.batch_size, device, mean, std)
    print(f"Data: {len(train.labels):,} training and {len(val.labels):,} validation images, "
          f"{len(classes)} classes, loaded in {time.perf_counter() - start:.1f} s")
    return train_loader, val_loader, classes, mean, std


def make_model(size, num_classes, device):
    """04_model.py's network, on the device, in the memory layout of the batches."""
    model = models.build_model(size, num_classes=num_classes)
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # Let cuDNN time a few ways to compute each convolution and keep the fastest; worth it
        # because every batch has the same shape.
        torch.backends.cudnn.benchmark = True
    print(f"Model: CifarNet {size}, {sum(p.numel() for p in model.parameters()):,} parameters")
    return model


# %% Optional: torch.compile (--compile) -----------------------------------------------------------
def compile_model(model, device):
    """`model` compiled with torch.compile, to call in its place; it shares `model`'s weights.

    What it does: the first time the compiled model runs, torch.compile records the operations of
    its forward pass (and, in training, of the backward pass) and generates code for them that
    fuses chains of small steps, such as the batch-norm and GELU after each convolution of
    04_model.py, into one pass over memory instead of one pass per step: C++ on the CPU, GPU
    programs ("kernels", written in Triton) on an NVIDIA GPU. Later calls run that code.

    What it costs, up front: compiling takes a minute or more, paid in the first training batch
    and the first validation batch, so the first epoch is much slower. The code is cached in a
    temporary folder (torchinductor_<user>), so the next run on the same machine starts faster.
    On the CPU it needs a C++ compiler (g++ or clang; Visual Studio's on Windows); on a GPU,
    Triton needs a C compiler.

    When it compiles again: the code is made for the shapes and the mode (training, or
    evaluation without gradients) it was first called with. The training batches all have one
    shape, because the training loader drops the last, smaller batch. Validation keeps every
    image, so its last batch is smaller (with the small model's defaults, 5,000 images in
    batches of 512: nine of 512 and one of 392), which costs one more compile, in the first epoch
    only. dynamic=False compiles that one for 392 images too, rather than the general code for
    any batch size that torch.compile otherwise switches to at the second shape, which is
    usually a little slower, for every validation batch after it. Dropping the last validation
    batch instead would leave images out of the measurement, and torch._dynamo.mark_dynamic is
    for inputs whose size keeps changing (sentences of any length, say), which these are not.

    What it buys: faster training steps where much of the time goes into the many small steps
    between the convolutions (typical on a GPU), which pays off over a long run, not a short
    check. It does not always buy anything: on a 2-core AMD EPYC CPU (PyTorch 2.14, one thread,
    a shared machine) a training step of the small model took 616 ms compiled against 537 ms
    plain, after 35-80 s of compiling. Measure it on your machine with
    `python benchmarks/benchmark.py --compile` (row 3c against row 3) before a long run.

    Save `model`, not what this returns: the compiled wrapper keeps `model` as its `_orig_mod`
    attribute, so its state_dict names every weight "_orig_mod.<name>", which 06-08 (they build
    a plain model) could not load. Both hold the very same weight tensors.

    Args:
        model: the nn.Module to compile, already on `device`.
        device: where the model is; compiling is tried there first.

    Returns:
        The compiled module (it compiles when first called).

    Raises:
        common.UserError: compiling does not work on this machine.
    """
    try:
        # A tiny function first: if compiling cannot work here at all (no C++ compiler, or a
        # Python that torch.compile does not support yet), this says so in one sentence now,
        # rather than as a long traceback in the middle of the first epoch.
        torch.compile(lambda x: x + 1, dynamic=False)(torch.zeros(2, device=device))
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise common.UserError(f"torch.compile does not work here ({reason}); run without "
                               "--compile.") from None
    print("torch.compile: on; the model is compiled the first time it trains and the first time "
          "it evaluates, which makes the first epoch slower")
    return torch.compile(model, dynamic=False)


def run_config(args, classes, mean, std, epochs, steps_per_epoch):
    """What the checkpoints record about the run: 06-08 rebuild the model and normalise images
    from it, and --resume checks that it goes on with the same settings. `epochs` is the length
    the learning-rate schedule was planned for."""
    return {
        "model": {"size": args.model_size, "num_classes": len(classes)},
        "classes": list(classes), "mean": list(mean), "std": list(std),
        "data": data.data_source(args.data_dir, args.fake_data),
        "epochs": epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
        "augment": not args.no_augment, "steps_per_epoch": steps_per_epoch,
    }


# %% Checkpoints: saving a run and picking it up again ---------------------------------------------
def save_checkpoints(model, optimizer, scheduler, epoch, best_val_accuracy, history, config,
                     checkpoint_dir, improved):
    """Write best.pt (when validation accuracy improved) and last.pt (every epoch).

    A checkpoint holds everything needed to rebuild the model (config) and to continue training
    exactly where it stopped (optimizer momentum, schedule position, history).
    """
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best_val_accuracy": best_val_accuracy,
        "history": history,
        "config": config,
    }
    # best.pt first: if the run is killed between the two writes, last.pt does not yet claim a
    # best accuracy that no best.pt holds, and the resumed run writes best.pt again.
    if improved:
        checkpointing.save_checkpoint(checkpoint, checkpoint_dir / "best.pt")
    checkpointing.save_checkpoint(checkpoint, checkpoint_dir / "last.pt")


def record_epoch(history, row, epochs, best_val_accuracy, num_classes):
    """Check one epoch's results, append them to `history` and print them as one line.

    `row` holds the epoch's numbers under history's keys ("epoch", "train_loss", ...).
    Returns (improved, best): whether its validation accuracy beat `best_val_accuracy`, and the
    best so far. Raises FloatingPointError when a loss is over ten times that of guessing.
    """
    # Guessing gives a loss of about ln(classes) (2.3 for 10); ten times that means the weights
    # have blown up, even where the numbers have not yet overflowed to NaN.
    worst_loss = max(row["train_loss"], row["val_loss"])
    if not worst_loss < 10 * max(1.0, math.log(num_classes)):
        raise FloatingPointError(f"the loss rose to {worst_loss:.3g}")
    for key, value in row.items():
        history[key].append(value)
    improved = row["val_accuracy"] > best_val_accuracy
    print(f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.3f} "
          f"acc {100 * row['train_accuracy']:5.2f}%  |  val loss {row['val_loss']:.3f} "
          f"acc {100 * row['val_accuracy']:5.2f}%  |  {row['seconds']:5.1f} s"
          + ("  *best" if improved else ""))
    return improved, max(best_val_accuracy, row["val_accuracy"])


def divergence_error(error, epoch, args):
    """The one sentence a run ends with when train_one_epoch or record_epoch found divergence."""
    # A learning rate that is too high makes the weights grow until the numbers overflow; from
    # then on every result is NaN ("not a number") and nothing more can be learned.
    return common.UserError(
        f"{error} in epoch {epoch}: training diverged; try a lower learning rate, e.g. --lr "
        f"{min(args.lr / 3, default_lr(args.batch_size)):.2g}. The checkpoints of the last "
        "finished epoch are kept.")


def check_resumable(checkpoint, args, config):
    """Refuse to resume a run with other settings than it was trained with.

    The schedule counts batches, so the batch size and the peak learning rate are part of it;
    the model and the classes must match the saved weights.
    """
    trained = checkpoint["config"]
    for flag, key in [("--batch-size", "batch_size"), ("--lr", "lr")]:
        if config[key] != trained[key]:
            raise common.UserError(
                f"the run in {args.checkpoint_dir} was trained with {flag} {trained[key]}; "
                "resume with the same value (or leave the flag out), or start a new run.")
    if trained["model"] != config["model"] or trained["classes"] != config["classes"]:
        raise common.UserError(
            f"the run in {args.checkpoint_dir} was trained with --model-size "
            f"{trained['model']['size']} on the classes {', '.join(trained['classes'])}, but this "
            f"run has --model-size {args.model_size} and the classes "
            f"{', '.join(config['classes'])}; resume with the same model and data, or start a new "
            "run without --resume.")


def start_or_resume(checkpoint, args, config, model, optimizer, scheduler):
    """Where the run starts: at epoch 1 with an empty history, or, given last.pt's checkpoint,
    after its last epoch with everything it saved put back (once the settings are checked).

    Returns:
        (first_epoch, best_val_accuracy, history).
    """
    if checkpoint is None:
        history = {key: [] for key in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                       "val_accuracy", "lr", "seconds")}
        return 1, -1.0, history  # -1: the first epoch is always the best so far
    check_resumable(checkpoint, args, config)
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])  # momentum buffers, learning rates
        scheduler.load_state_dict(checkpoint["scheduler"])  # the step count: where the lr was
    except (RuntimeError, ValueError, KeyError, TypeError):
        raise common.UserError(
            f"{args.checkpoint_dir / 'last.pt'} does not fit this model and optimizer (edited, or "
            "written by another version of 05_train.py); start a new run instead.") from None
    print(f"Resuming from {args.checkpoint_dir / 'last.pt'}: {checkpoint['epoch']} epochs done, "
          f"best validation accuracy so far {100 * checkpoint['best_val_accuracy']:.2f}%")
    planned = config["epochs"]
    if args.epochs > planned:
        # The schedule is the run's plan: stretching it now would raise the learning rate again
        # and undo the settling of the last epochs. So it keeps its length, and the extra epochs
        # go on at its lowest learning rate.
        print(f"The learning-rate schedule was planned for {planned} epochs; epochs "
              f"{planned + 1}-{args.epochs} train at its final rate, {END_FACTOR * args.lr:.2g}. "
              f"For a full schedule over {args.epochs} epochs, start a new run.")
    return checkpoint["epoch"] + 1, checkpoint["best_val_accuracy"], checkpoint["history"]


def save_history(history, args):
    """Write the history as JSON and as a plot of loss and accuracy per epoch, and say where
    everything the run wrote is, and what to run next."""
    import figures  # matplotlib, loaded here: only a finished run draws, and it takes a second

    history_path = args.output_dir / "history.json"
    common.write_atomically(history_path, lambda file: file.write(json.dumps(history).encode()))
    curves_path = figures.plot_history(history, args.output_dir / "training_curves.png")
    print(f"Checkpoints: {args.checkpoint_dir / 'last.pt'} and {args.checkpoint_dir / 'best.pt'}")
    print(f"History: {history_path}\nPlot: {curves_path}")
    if args.fake_data:
        print("(Random images with random labels: about 10% is chance, and all any network can "
              "score here. This run only checks that the code runs.)")
    print("Next: " + next_command(args))


def next_command(args):
    """The 06_evaluate.py command that evaluates this run: same data, this run's best.pt."""
    command = ["python", "06_evaluate.py"]
    if args.fake_data:
        command.append("--fake-data")
    elif args.data_dir != common.DATA_DIR:
        command += ["--data-dir", shlex.quote(str(args.data_dir))]
    if args.checkpoint_dir not in (common.CHECKPOINT_DIR, common.CHECKPOINT_DIR / "fake"):
        command += ["--checkpoint", shlex.quote(str(args.checkpoint_dir / "best.pt"))]
    return " ".join(command)


def stop_like_ctrl_c(signal_number, frame):
    """For SIGTERM, what a shutdown or a cluster's time limit sends: stop as Ctrl-C does."""
    raise KeyboardInterrupt


def resume_hint(args, saved_epoch):
    """What to print after Ctrl-C: how much is saved, and the command that goes on from there."""
    if not saved_epoch or args.dry_run:
        return "Interrupted before any epoch was saved, so there is nothing to resume."
    # The same command again, with --resume: same data, folders and epochs.
    command = " ".join(["python", "05_train.py"] + [shlex.quote(argument) for argument
                                                     in sys.argv[1:] if argument != "--resume"])
    return (f"Interrupted. {args.checkpoint_dir / 'last.pt'} holds the {saved_epoch} finished "
            f"epoch(s); continue with:\n  {command} --resume")


# %% The whole run ---------------------------------------------------------------------------------
def main():
    args = parse_args()
    device = common.get_device(args.device)
    common.seed_everything(args.seed)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    # Lock the checkpoint folder (held until this process ends) and find the run to resume; a new
    # run never silently replaces a trained one.
    lock, last_path = checkpointing.open_run(args.checkpoint_dir, args.resume, args.overwrite,
                                             args.dry_run)
    resumed = (checkpointing.load_checkpoint(last_path, device, for_resume=True) if last_path
               else None)
    fill_in_batch_size_and_lr(args, resumed)
    print(f"Device: {device}   model: {args.model_size}   epochs: {args.epochs}   "
          f"batch size: {args.batch_size}   peak lr: {args.lr}")

    train_loader, val_loader, classes, mean, std = make_loaders(args, device)

    # ---- Model, loss, optimizer, schedule ------------------------------------------------------
    model = make_model(args.model_size, len(classes), device)
    # Cross-entropy compares the scores with the true class. Label smoothing (0.2) spreads that
    # share of the target over all 10 classes: 0.82 for the true one, 0.02 for each other, so the
    # network is never pushed to total certainty, which generalises better. So the loss cannot
    # reach 0 (its floor is about 0.87), and 08's top probabilities stay near 80-90% when right.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    # A resumed run keeps the schedule it planned (start_or_resume says why).
    planned_epochs = resumed["config"]["epochs"] if resumed else args.epochs
    scheduler = make_scheduler(optimizer, total_steps=planned_epochs * len(train_loader))

    config = run_config(args, classes, mean, std, planned_epochs, len(train_loader))
    first_epoch, best_val_accuracy, history = start_or_resume(resumed, args, config, model,
                                                              optimizer, scheduler)
    if first_epoch > args.epochs:
        print(f"Nothing to do: it already trained {first_epoch - 1} epochs; pass a larger "
              "--epochs to train more.")
        return
    # --compile: a compiled wrapper runs the batches; checkpoints save `model` (compile_model).
    model_to_run = compile_model(model, device) if args.compile else model

    # ---- The epochs ----------------------------------------------------------------------------
    run_start, saved_epoch = time.perf_counter(), first_epoch - 1
    try:
        for epoch in range(first_epoch, args.epochs + 1):
            # Re-seeding every epoch makes epoch N draw the same batches and crops whether the run
            # went straight through or was resumed: on a CPU a resumed run matches an
            # uninterrupted one exactly (a GPU's fastest kernels may differ in the last digits).
            torch.manual_seed(args.seed + epoch)
            epoch_start = time.perf_counter()
            train_loss, train_accuracy = train_one_epoch(
                model_to_run, train_loader, loss_fn, optimizer, device, scheduler,
                mixed_precision=not args.no_mixed_precision,
                description=f"epoch {epoch}/{args.epochs}")
            val_loss, val_accuracy = evaluate(model_to_run, val_loader, loss_fn, device)
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                   "val_loss": val_loss, "val_accuracy": val_accuracy,
                   "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - epoch_start}
            improved, best_val_accuracy = record_epoch(history, row, args.epochs,
                                                       best_val_accuracy, len(classes))
            if not args.dry_run:  # a dry run only checks that everything works: no files
                save_checkpoints(model, optimizer, scheduler, epoch, best_val_accuracy, history,
                                 config, args.checkpoint_dir, improved)
                saved_epoch = epoch
    except FloatingPointError as error:
        raise divergence_error(error, epoch, args) from None
    except KeyboardInterrupt:  # Ctrl-C: every finished epoch is already in last.pt
        print("\n" + resume_hint(args, saved_epoch), file=sys.stderr)
        sys.exit(130)  # 128 + 2 (SIGINT's number): the shell's convention for "stopped by Ctrl-C"

    # ---- What the run produced -----------------------------------------------------------------
    seconds = time.perf_counter() - run_start
    if args.dry_run:
        print(f"Dry run finished in {seconds:.1f} s; no files written.")
        return
    print(f"\nBest validation accuracy: {100 * best_val_accuracy:.2f}%   training time: "
          f"{seconds:.0f} s ({seconds / 60:.1f} min)")
    save_history(history, args)


if __name__ == "__main__":
    common.run_main(main)
