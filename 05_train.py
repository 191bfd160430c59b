"""05 - Training: the loop that teaches the network, written out step by step.

What you will learn
    - the seven steps of a training loop, numbered in the code where they happen:
      1 get a batch, 2 move it to the device, 3 zero the gradients, 4 forward pass,
      5 loss, 6 backward pass, 7 optimizer.step()
    - evaluation on images the network does not train on, every epoch
    - the optimizer (SGD with momentum and weight decay) and a learning-rate schedule
    - what a real run adds around them: checkpoints you can resume from, a progress bar, and a
      history of the losses with its plot

Run it
    python 05_train.py --epochs 10                       # CIFAR-10 (downloaded into data/)
    python 05_train.py --epochs 10 --model-size large    # the bigger network, for a GPU
    python 05_train.py --epochs 1 --fake-data            # offline check (into checkpoints/fake/)
    python 05_train.py --dry-run                         # one batch per epoch, no files
    python 05_train.py --epochs 10 --resume              # finish an interrupted run
    python 05_train.py --epochs 10 --overwrite           # train again over the last run
    python 05_train.py --help                            # every flag, with its default

Reads the data (03_data.py). Writes into checkpoints/ (--checkpoint-dir): best.pt whenever the
validation accuracy improves, last.pt and history.json after every epoch, training_curves.png
at the end. A new run never replaces a trained model unless you say --overwrite. Ctrl-C stops it
cleanly: every finished epoch is kept, and it prints the command that goes on from there.
Next: `python 06_evaluate.py` measures the best model on the test set.

train_one_epoch and evaluate work with any classifier and any DataLoader that yields (float
images, int64 class indices): copy them into your own project as they are, with check_arguments
(training_tools.py), which refuses at the first batch what they would measure wrongly.
"""

# %% Imports
import contextlib
import math
import time

import torch
from torch import nn
from tqdm import tqdm

import checkpointing
import common
import training_tools  # plumbing of a training run: flags, loaders, output (skip on a first read)
from training_tools import check_arguments  # refuses misuse of the two functions below

# The network of 04_model.py. (`import 04_model` is not valid Python, because a name cannot start
# with a digit; common.import_script takes it as a string.)
models = common.import_script("04_model")

# %% Settings --------------------------------------------------------------------------------------
# The flags (see --help) change a run; these constants are the rest of the recipe: the momentum,
# and the learning-rate schedule of make_scheduler (below). GUIDE.md ("What each part of the
# recipe buys") says how they were chosen.
MOMENTUM = 0.9  # SGD steps along a sum of past gradients: one from k steps ago counts 0.9^k
WARMUP_FRACTION = 0.25  # share of the steps spent raising the learning rate to its peak
START_FACTOR = 0.1  # the warm-up starts at peak / 10
END_FACTOR = 0.001  # and the decay ends at peak / 1000
DEFAULT_BATCH_SIZE = {"small": 256, "large": 512}  # used when --batch-size is not given
PEAK_LR_PER_512_IMAGES = 0.6  # the default --lr is this x batch size / 512
# What every epoch records, in history.json and the checkpoints.
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                "seconds")


# %% One epoch of training: the seven steps --------------------------------------------------------
def train_one_epoch(model, loader, loss_fn, optimizer, device, batch_scheduler=None,
                    mixed_precision=False, description="training"):
    """Train a classifier on every batch of `loader` once.

    Args:
        model: an nn.Module that maps images (B, ...) to class scores (B, classes), already on
            `device`.
        loader: yields (images, labels): float images, already in the form the model takes
            (scaled, normalised, augmented: nothing here changes their values), and int64 class
            indices (B,). A torch DataLoader, or 03_data.InMemoryLoader.
        loss_fn: called as loss_fn(outputs, labels); it must return the batch's mean loss, as
            PyTorch's losses do by default (nn.CrossEntropyLoss(), not reduction="sum").
        optimizer: a torch.optim optimizer over the model's parameters.
        device: where the model is: "cpu", "cuda", "mps" or a torch.device.
        batch_scheduler: optional, a learning-rate scheduler planned in batches: it is stepped
            after every batch, so make it for epochs x len(loader) steps (make_scheduler does).
            A scheduler planned in epochs (StepLR, say) stays out of here: call its step()
            yourself after each epoch.
        mixed_precision: on a CUDA GPU with bfloat16 tensor cores, run the forward pass in
            bfloat16 (see below); ignored elsewhere.
        description: the label of the progress bar.

    Returns:
        (mean loss, accuracy) over the images of this epoch, averaged per image. Both are
        measured while the weights change, so they differ from an evaluation after the epoch.

    Raises:
        FloatingPointError: the loss became NaN or infinite: training diverged.
        ValueError: the loader gave no batch, or the arguments do not fit a classifier.
    """
    device = torch.device(device)
    model.train()  # training mode: batch-norm uses each batch's own statistics (04_model.py)
    # Mixed precision (CUDA only): inside `autocast`, matrix products and convolutions run in
    # bfloat16, a 16-bit number format, on the GPU's tensor cores: about twice as fast, while
    # the weights stay float32. Only GPUs from 2020 on (NVIDIA Ampere and newer) have bfloat16
    # tensor cores; older ones (a T4, a V100) would emulate it, slower than float32. Everywhere
    # else, `autocast` below is a nullcontext: a `with` block that does nothing.
    use_bf16 = (mixed_precision and device.type == "cuda"
                and torch.cuda.is_bf16_supported(including_emulation=False))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16
                else contextlib.nullcontext())
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
        with autocast:  # bfloat16 on a recent NVIDIA GPU; on a CPU it changes nothing
            outputs = model(images)  # 4. Forward pass: one score (logit) per class per image
            loss = loss_fn(outputs, labels)  # 5. Loss: how wrong the scores are, one number
        if step == 0:  # once, before anything changes: refuse what would be measured wrongly
            check_arguments(loss_fn, outputs, labels, loader, batch_scheduler)
        # 6. Backward pass: d(loss)/d(weight) for every weight, into its .grad. It sits outside
        # the autocast block: the backward pass reuses the number formats the forward pass chose.
        loss.backward()
        optimizer.step()  # 7. Update every weight from its gradient (SGD: a step against it)

        # ---- Bookkeeping: the schedule, the running loss and accuracy, the progress bar -------
        if batch_scheduler is not None:
            batch_scheduler.step()  # the next batch uses the next learning rate of the schedule
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
    """Mean loss and accuracy of a classifier on every image of `loader`, without training it.

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
            if seen == 0:
                check_arguments(loss_fn, outputs, labels, loader, evaluating=True)
            loss_sum += loss_fn(outputs, labels) * len(labels)
            correct += (outputs.argmax(dim=1) == labels).sum()
            seen += len(labels)
    if seen == 0:
        raise ValueError("the loader gave no batch")
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the evaluation loss is {mean_loss}")
    return mean_loss, correct.item() / seen


# %% The optimizer and the learning-rate schedule --------------------------------------------------
def make_optimizer(model, lr, weight_decay=5e-4, momentum=MOMENTUM):
    """SGD with Nesterov momentum, and weight decay on the weight matrices and filters only.

    Momentum: each update follows a sum of recent gradients, where each older one is weighted
    `momentum` (0.9) times the next (buffer = 0.9 x buffer + gradient), which smooths out the noise
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


def make_scheduler(optimizer, total_steps, start_factor=START_FACTOR, end_factor=END_FACTOR):
    """Warm up linearly from start_factor x lr to lr, then decay linearly to end_factor x lr.

    A randomly initialised network is fragile: full-size steps at the start can throw it into a
    bad region, so the learning rate starts low (warm-up). Later, large steps bounce around the
    bottom of the loss valley; shrinking them lets the weights settle (decay).

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        total_steps: how many times scheduler.step() will be called in the whole run: once per
            batch, so epochs x batches per epoch.
        start_factor, end_factor: where the warm-up starts and the decay ends, as fractions of
            the peak (1.0 for either makes that part a flat line at the peak).

    Returns:
        A LambdaLR scheduler: it multiplies the optimizer's lr by lr_factor(step).
    """
    warmup_steps = max(1, round(WARMUP_FRACTION * total_steps))

    def lr_factor(step):
        if step < warmup_steps:
            return start_factor + (1 - start_factor) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - end_factor) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def default_lr(batch_size):
    """The peak learning rate for a batch size, by the linear scaling rule: a batch twice as big
    averages the gradient over twice as many images, so its steps are less noisy and can be
    twice as long."""
    return PEAK_LR_PER_512_IMAGES * batch_size / 512


# %% The command line (plumbing: --help lists the flags) -------------------------------------------
def parse_args():
    """05's flags: the shared data and training flags (training_tools.py), plus --compile."""
    parser, training = training_tools.training_parser(
        "Train the CIFAR-10 network and save checkpoints. Unless given, --batch-size is 256 for "
        "the small model (more updates per epoch, and fast on a CPU) and 512 for the large one "
        "(a GPU needs big batches to stay busy), and --lr is 0.6 x batch size / 512.",
        model_sizes=models.MODEL_SIZES)
    training.add_argument("--compile", action="store_true",
                          help="run the model through torch.compile: the first epoch is slower "
                               "while it compiles; later steps may be faster (GUIDE.md)")
    return training_tools.parse_training_args(parser, common.default_checkpoint_dir)


# %% The whole run ---------------------------------------------------------------------------------
def main():
    # ---- Plumbing: flags, device, seed and the run's folder (skip on a first read) -------------
    args = parse_args()  # the flags: --help lists them, training_tools.py defines them
    device = common.get_device(args.device)
    common.seed_everything(args.seed)
    # The run's folder: locked for this process, refused if it holds a trained model (unless
    # --overwrite), or read back with --resume (checkpointing.TrainingRun).
    run = checkpointing.TrainingRun(args.checkpoint_dir, args.resume, args.overwrite,
                                    args.dry_run, history_keys=HISTORY_KEYS,
                                    monitor="val_accuracy", mode="max",
                                    kind=checkpointing.CLASSIFIER_KIND, device=device)
    # --batch-size and --lr, if not given: a new run's defaults, or what a resumed run chose. Two
    # epoch counts: --epochs says where to stop; planned_epochs is what the learning-rate schedule
    # spans, --epochs of a new run, but the first run's for a resumed one.
    planned_epochs = training_tools.fill_in_settings(
        args, run, DEFAULT_BATCH_SIZE[args.model_size], default_lr)
    print(f"Device: {device}   model: {args.model_size}   epochs: {args.epochs}   "
          f"batch size: {args.batch_size}   peak lr: {args.lr}")

    # ---- Data (03_data.py), model (04_model.py), loss, optimizer, schedule ----------------------
    # 03_data.py's InMemoryLoader: batches normalised and on the device; training batches shuffled,
    # cropped and flipped, validation batches as they are, twice as large (no graph to keep).
    train_loader, val_loader, classes, mean, std = training_tools.make_loaders(args, device)
    model = training_tools.make_model(args.model_size, len(classes), device, in_channels=len(mean))
    # Cross-entropy compares the scores with the true class. Label smoothing (default 0.2) spreads
    # that share of the target over all 10 classes: 0.82 for the true one, 0.02 for each other, so
    # the network is never pushed to total certainty, which generalises better. So the loss cannot
    # reach 0 (its floor is about 0.87), and after 10 epochs the top probability of a right answer
    # is 0.77 in the median, above 0.95 for only 2% of them (GUIDE.md, 08's chapter).
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scheduler = make_scheduler(optimizer, total_steps=planned_epochs * len(train_loader))
    config = training_tools.training_config(args, classes, mean, std, planned_epochs,
                                            len(train_loader))
    # Puts back the weights, momentum and schedule of a resumed run (after checking its settings).
    first_epoch = run.start(config, model=model, optimizer=optimizer, scheduler=scheduler)
    if not training_tools.epochs_left(first_epoch, args.epochs, planned_epochs):
        if not args.dry_run:  # a resumed run that has every epoch asked for: its curves again
            training_tools.report_training_run(run, args)
        return
    # --compile runs the batches through torch.compile (GUIDE.md explains it); the checkpoints
    # save `model` itself, whose weights the compiled wrapper shares.
    model_to_run = training_tools.compile_model(model, device) if args.compile else model

    # ---- The epochs ----------------------------------------------------------------------------
    run_start = time.perf_counter()
    lower_lr = min(args.lr / 3, default_lr(args.batch_size))
    with run.stop_cleanly(advice=f"try a lower learning rate, e.g. --lr {lower_lr:.2g}"):
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
            # Saves best.pt (if validation accuracy improved), last.pt and history.json. A loss
            # ten times that of guessing (ln 10 = 2.3 for 10 classes) means the weights blew up.
            improved = run.end_epoch(row, max_loss=checkpointing.blown_up_loss(len(classes)))
            training_tools.print_epoch(row, args.epochs, improved)

    # ---- What the run produced -----------------------------------------------------------------
    seconds = time.perf_counter() - run_start
    if args.dry_run:
        print(f"Dry run finished in {seconds:.1f} s; no files written.")
        return
    print(f"\nBest validation accuracy: {100 * run.best:.2f}%   training time: "
          f"{seconds:.0f} s ({seconds / 60:.1f} min)")
    training_tools.report_training_run(run, args)  # the curves, the files, the next command
    common.section("Summary: what you just did")
    print("""\
- ran the seven steps on every batch: batch, device, zero_grad, forward, loss, backward, step
- measured the network on held-out images after every epoch, in eval mode, without gradients
- trained with SGD, momentum and weight decay, and a warm-up-then-decay learning-rate schedule
- kept the best and the last checkpoint, and the history of every epoch, safe to resume""")


if __name__ == "__main__":
    common.run_main(main)
