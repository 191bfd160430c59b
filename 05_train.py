"""05 - Training: the loop that teaches the network, written out step by step.

What you will learn
    - the seven steps of a training loop, numbered in the code where they happen:
      1 get a batch, 2 move it to the device, 3 zero the gradients, 4 forward pass,
      5 loss, 6 backward pass, 7 optimizer.step()
    - what a real run adds around them: a learning-rate schedule, validation every epoch,
      checkpoints you can resume from, a progress bar, a history of the losses and its plot
    - the tricks that make a small network reach high accuracy in 10 epochs, each explained
      where it is used and each one something you can switch off

Run it
    python 05_train.py --epochs 10                       # CIFAR-10 (downloaded into data/)
    python 05_train.py --epochs 10 --model-size large    # the bigger network, for a GPU
    python 05_train.py --epochs 1 --fake-data            # offline check of the whole pipeline
    python 05_train.py --epochs 12 --resume              # go on from checkpoints/last.pt
    python 05_train.py --help                            # every flag, with its default

Reads the data (see 03_data.py). Writes checkpoints/last.pt (after every epoch),
checkpoints/best.pt (whenever validation accuracy improves), outputs/history.json and
outputs/training_curves.png. Next: `python 06_evaluate.py` measures the best model on the test set.
"""

# %% Imports
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import common

# %% Settings --------------------------------------------------------------------------------------
# The flags below (see --help) change the run; these constants are the rest of the recipe. Each is
# explained where it is used.
MOMENTUM = 0.9  # SGD keeps a running average of past gradients and moves along it
WARMUP_FRACTION = 0.25  # share of the steps spent raising the learning rate to its peak
START_FACTOR = 0.1  # the warm-up starts at peak / 10
END_FACTOR = 0.001  # and the decay ends at peak / 1000
AUGMENT_PADDING = 4  # random crops shift an image by up to 4 pixels
DEFAULT_BATCH_SIZE = {"small": 256, "large": 512}  # used when --batch-size is not given
PEAK_LR_PER_512_IMAGES = 0.6  # the default --lr is this x batch size / 512


def parse_args():
    """The command line: the shared data flags (common.make_parser) plus the training ones."""
    parser = common.make_parser(
        "Train the CIFAR-10 network and save checkpoints. Unless given, --batch-size is 256 for "
        "the small model (more updates per epoch, and fast on a CPU) and 512 for the large one "
        "(a GPU needs big batches to stay busy), and --lr is 0.6 x batch size / 512.",
        batch_size=None)
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=common.positive_int, default=10,
                          help="passes over the training images")
    training.add_argument("--lr", type=common.positive_float,
                          help="peak learning rate, reached after the warm-up "
                               "(default: %(default)s, so 0.6 x batch size / 512)")
    training.add_argument("--model-size", choices=sorted(common.model_module().MODEL_SIZES),
                          default="small", help="small trains on a CPU; large is for a GPU")
    training.add_argument("--weight-decay", type=float, default=5e-4,
                          help="L2 penalty on the weights of convolutions and the linear layer")
    training.add_argument("--label-smoothing", type=float, default=0.2,
                          help="share of each target spread over the other classes "
                               "(0 turns it off)")
    training.add_argument("--no-augment", action="store_true",
                          help="train on the images as they are, without random crops and flips")
    training.add_argument("--no-mixed-precision", action="store_true",
                          help="on CUDA, compute in float32 instead of bfloat16")
    training.add_argument("--resume", action="store_true",
                          help="continue from last.pt in --checkpoint-dir")
    training.add_argument("--checkpoint-dir", type=Path, default=common.CHECKPOINT_DIR,
                          help="where last.pt and best.pt are written")
    args = parser.parse_args()
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be at least 0 and less than 1")
    if args.weight_decay < 0:
        parser.error("--weight-decay must be 0 or more")
    return args


def settle_batch_size_and_lr(args, resumed=None):
    """Fill in --batch-size and --lr when they were not given.

    A new run uses DEFAULT_BATCH_SIZE and the linear scaling rule. A resumed run keeps the batch
    size it was trained with (the schedule counts its batches) and, unless --lr is given, its lr.
    """
    if resumed is not None:
        trained_batch_size = resumed["config"]["batch_size"]
        if args.batch_size not in (None, trained_batch_size):
            raise common.UserError(
                f"the run in {args.checkpoint_dir} was trained with --batch-size "
                f"{trained_batch_size}; resume with the same batch size, or start a new run.")
        args.batch_size = trained_batch_size
        if args.lr is None:
            args.lr = resumed["config"]["lr"]
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH_SIZE[args.model_size]
    if args.lr is None:
        # The linear scaling rule: a batch twice as big averages the gradient over twice as many
        # images, so its steps are less noisy and can be twice as long.
        args.lr = PEAK_LR_PER_512_IMAGES * args.batch_size / 512


# %% The optimizer and the learning-rate schedule --------------------------------------------------
def make_optimizer(model, lr, weight_decay):
    """SGD with Nesterov momentum, and weight decay on the weight matrices and filters only.

    Momentum: each update follows a running average of recent gradients, which smooths out the
    noise of single batches. Nesterov: the gradient is taken a little ahead along that average,
    which corrects an overshoot sooner. Weight decay pulls weights towards 0 so the network does
    not rely on a few large ones; it is not applied to BatchNorm's scales and shifts or to biases
    (the 1-dimensional parameters): they are few, and shrinking them only fights the normalisation.
    """
    decayed = [p for p in model.parameters() if p.ndim > 1]
    not_decayed = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decayed, "weight_decay": weight_decay},
         {"params": not_decayed, "weight_decay": 0.0}],
        lr=lr, momentum=MOMENTUM, nesterov=True)



def make_scheduler(optimizer, total_steps):
    """Warm up linearly from START_FACTOR x lr to lr, then decay linearly to END_FACTOR x lr.

    A randomly initialised network is fragile: full-size steps at the start can throw it into a
    bad region, so the learning rate starts low (warm-up). Later, large steps bounce around the
    bottom of the loss valley; shrinking them lets the weights settle (decay). The scheduler
    multiplies the optimizer's lr by lr_factor(step) and is stepped once per batch.
    """
    warmup_steps = max(1, round(WARMUP_FRACTION * total_steps))

    def lr_factor(step):
        if step < warmup_steps:
            return START_FACTOR + (1 - START_FACTOR) * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - END_FACTOR) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


# %% One epoch of training: the seven steps --------------------------------------------------------
def stop_if_diverged(loss, epoch, args):
    """End the run with a clear sentence if the loss is NaN or infinite.

    A learning rate that is too high makes the weights grow until the numbers overflow; from
    then on every result is NaN ("not a number") and nothing more can be learned.
    """
    if not math.isfinite(loss):
        raise common.UserError(
            f"the loss became {loss} in epoch {epoch}: training diverged; try a lower learning "
            f"rate, e.g. --lr {args.lr / 3:.2g}. The checkpoints of the last finished epoch are "
            "kept.")



def train_one_epoch(model, train_loader, loss_fn, optimizer, scheduler, device, args, epoch,
                    mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD):
    """Train on every batch of `train_loader` once; `mean` and `std` normalise the images.

    Returns:
        (mean loss, accuracy) over the training images of this epoch. Both are measured on
        augmented images while the weights change, so they differ from the validation figures.
    """
    model.train()  # BatchNorm uses the batch's own statistics (see 04_model.py)
    use_bf16 = device.type == "cuda" and not args.no_mixed_precision
    # Sums are kept as tensors on the device: calling .item() every step would make the CPU wait
    # for the GPU each time. They are read only when the progress bar is updated.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    progress = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                    leave=False, disable=None)  # disable=None: no bar when output is not a terminal
    for step, (images, labels) in enumerate(progress):  # 1. Get a batch from the DataLoader
        # 2. Move the batch to the device (the model is already there). non_blocking lets the copy
        # from pinned memory overlap with the GPU's work.
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        images = common.normalize(images, mean, std)  # uint8 0..255 -> float, ~mean 0, std 1
        if not args.no_augment:
            # Random crops and flips: each epoch sees slightly different versions of every image,
            # so the network learns what a cat looks like rather than these 45,000 exact pictures.
            images = common.augment(images, padding=AUGMENT_PADDING)
        # channels_last stores each pixel's channels together, the layout fast convolution
        # kernels on CPUs and recent GPUs prefer. The numbers are the same; only the memory
        # order changes.
        images = images.contiguous(memory_format=torch.channels_last)

        # 3. Zero the gradients: backward() adds to .grad, so last step's gradients must go.
        optimizer.zero_grad(set_to_none=True)
        # bfloat16 autocast (CUDA only): matrix products run in 16-bit on the tensor cores, about
        # twice as fast, while weights and the loss stay in float32.
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(images)  # 4. Forward pass: scores (logits), shape (batch, 10)
            loss = loss_fn(outputs, labels)  # 5. Loss: one number, lower is better
        loss.backward()  # 6. Backward pass: d(loss)/d(weight) for every weight, into its .grad
        optimizer.step()  # 7. Update every weight a small step against its gradient
        scheduler.step()  # the next batch uses the next learning rate of the schedule

        loss_sum += loss.detach() * len(labels)
        correct += (outputs.argmax(dim=1) == labels).sum()
        seen += len(labels)
        if step % 20 == 0 or args.dry_run:
            running_loss = loss_sum.item() / seen
            stop_if_diverged(running_loss, epoch, args)
            progress.set_postfix(loss=f"{running_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.3f}")
        if args.dry_run:
            break
    return loss_sum.item() / seen, correct.item() / seen


# %% Validation ------------------------------------------------------------------------------------
@torch.no_grad()  # no graph is recorded: less memory and faster, and nothing can be trained here
def evaluate(model, loader, loss_fn, device, dry_run=False,
             mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD):
    """Mean loss and accuracy of `model` on every image of `loader`, in eval mode.

    Returns:
        (mean loss, accuracy), averaged over images (not over batches, whose sizes can differ).
    """
    model.eval()  # BatchNorm uses the statistics it gathered in training, not this batch's
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images = common.normalize(images.to(device, non_blocking=True), mean, std)
        images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=device.type == "cuda"):
            outputs = model(images)
        loss_sum += loss_fn(outputs.float(), labels).item() * len(labels)
        correct += (outputs.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        if dry_run:
            break
    return loss_sum / seen, correct / seen


# %% The history plot ------------------------------------------------------------------------------
def plot_history(history, path):
    """Save loss and accuracy per epoch, training vs validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # draw to a file; no window needed
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"]
    loss_axes.plot(epochs, history["train_loss"], "o-", label="training")
    loss_axes.plot(epochs, history["val_loss"], "o-", label="validation")
    # With label smoothing the loss cannot reach 0: even a perfect answer keeps some doubt.
    loss_axes.set(title="Loss (lower is better)", xlabel="epoch",
                  ylabel="cross-entropy (label-smoothed by default)")
    accuracy_axes.plot(epochs, [100 * a for a in history["train_accuracy"]], "o-", label="training")
    accuracy_axes.plot(epochs, [100 * a for a in history["val_accuracy"]], "o-", label="validation")
    accuracy_axes.set(title="Accuracy (higher is better)", xlabel="epoch", ylabel="%")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# %% The whole run ---------------------------------------------------------------------------------
def main():
    args = parse_args()
    device = common.get_device(args.device)
    common.seed_everything(args.seed)
    last_path = args.checkpoint_dir / "last.pt"
    best_path = args.checkpoint_dir / "best.pt"
    resumed = common.load_checkpoint(last_path, device) if args.resume else None
    settle_batch_size_and_lr(args, resumed)
    print(f"Device: {device}   model: {args.model_size}   epochs: {args.epochs}   "
          f"batch size: {args.batch_size}   peak lr: {args.lr}")

    # ---- Data: train, validation and test splits in memory; see 03_data.py ----------------------
    start = time.perf_counter()
    train_set, val_set, _, classes = common.load_datasets(args.data_dir, args.fake_data)
    train_loader = common.make_loader(train_set, args.batch_size, shuffle=True, device=device,
                                      workers=args.workers)
    val_loader = common.make_loader(val_set, 2 * args.batch_size, shuffle=False, device=device,
                                    workers=args.workers)
    print(f"Data: {len(train_set):,} training and {len(val_set):,} validation images, "
          f"{len(classes)} classes, loaded in {time.perf_counter() - start:.1f} s")

    # ---- Model, loss, optimizer, schedule ------------------------------------------------------
    model = common.model_module().build_model(args.model_size, num_classes=len(classes))
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # Let cuDNN time a few ways to compute each convolution and keep the fastest; worth it
        # because every batch has the same shape.
        torch.backends.cudnn.benchmark = True
    num_parameters = sum(p.numel() for p in model.parameters())
    print(f"Model: CifarNet {args.model_size}, {num_parameters:,} parameters")

    # Cross-entropy compares the 10 scores with the true class. Label smoothing asks for 80%
    # (with the default 0.2) on the true class and spreads the rest over the others, so the
    # network is not pushed to be ever more certain: it generalises better.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    steps_per_epoch = 1 if args.dry_run else len(train_loader)
    scheduler = make_scheduler(optimizer, total_steps=args.epochs * steps_per_epoch)

    data_kind = common.data_source(args.data_dir, args.fake_data)
    # Inputs are normalised with the training images' own per-channel statistics (03_data.py):
    # CIFAR-10's are known constants; for other images they are computed here. They go into the
    # checkpoint, so that 06-08 normalise new images exactly as training did.
    if data_kind == "cifar10":
        mean, std = common.CIFAR10_MEAN, common.CIFAR10_STD
    else:
        mean, std = common.channel_statistics(train_set.images)
    config = {
        "model": {"size": args.model_size, "num_classes": len(classes)},
        "classes": list(classes),
        "mean": list(mean),
        "std": list(std),
        "data": data_kind,
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
        "augment": not args.no_augment, "steps_per_epoch": steps_per_epoch,
    }
    history = {"epoch": [], "train_loss": [], "train_accuracy": [], "val_loss": [],
               "val_accuracy": [], "lr": [], "seconds": []}
    first_epoch, best_val_accuracy = 1, 0.0

    # ---- Resume: put back everything the last run saved ----------------------------------------
    if resumed is not None:
        checkpoint = resumed
        trained = checkpoint["config"]
        if trained["model"] != config["model"] or trained["classes"] != config["classes"]:
            raise common.UserError(
                f"{last_path} was trained with --model-size {trained['model']['size']} on the "
                f"classes {', '.join(trained['classes'])}, but this run has --model-size "
                f"{args.model_size} and the classes {', '.join(classes)}; resume with the same "
                "model and data, or start a new run without --resume.")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])  # the step count: where the lr was
        if args.lr != trained["lr"]:
            # A new --lr: the loaded states hold the old peak, so set the new one in its place.
            print(f"Changing the peak learning rate from {trained['lr']} to {args.lr}.")
            scheduler.base_lrs = [args.lr] * len(optimizer.param_groups)
            for group, lr_factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
                group["initial_lr"] = args.lr
                group["lr"] = args.lr * lr_factor(scheduler.last_epoch)
        history = checkpoint["history"]
        best_val_accuracy = checkpoint["best_val_accuracy"]
        first_epoch = checkpoint["epoch"] + 1
        print(f"Resuming from {last_path}: {checkpoint['epoch']} epochs done, "
              f"best validation accuracy so far {100 * best_val_accuracy:.2f}%")
        if first_epoch > args.epochs:
            print(f"Nothing to do: it already trained {checkpoint['epoch']} epochs; "
                  f"pass a larger --epochs to train more.")
            return
    elif last_path.exists() and not args.dry_run:
        print(f"Note: this new run will replace the checkpoints in {args.checkpoint_dir} "
              "(use --resume to continue the old run instead).")

    # ---- The epochs ----------------------------------------------------------------------------
    run_start = time.perf_counter()
    try:
        for epoch in range(first_epoch, args.epochs + 1):
            # Re-seeding at every epoch makes epoch N draw the same batches and crops whether the
            # run went straight through or was resumed, so a resumed run matches an
            # uninterrupted one.
            torch.manual_seed(args.seed + epoch)
            epoch_start = time.perf_counter()
            train_loss, train_accuracy = train_one_epoch(
                model, train_loader, loss_fn, optimizer, scheduler, device, args, epoch, mean, std)
            val_loss, val_accuracy = evaluate(model, val_loader, loss_fn, device, args.dry_run,
                                              mean, std)
            seconds = time.perf_counter() - epoch_start

            for key, value in [("epoch", epoch), ("train_loss", train_loss),
                               ("train_accuracy", train_accuracy), ("val_loss", val_loss),
                               ("val_accuracy", val_accuracy),
                               ("lr", scheduler.get_last_lr()[0]), ("seconds", seconds)]:
                history[key].append(value)
            stop_if_diverged(train_loss + val_loss, epoch, args)  # before anything is saved
            improved = val_accuracy > best_val_accuracy
            best_val_accuracy = max(best_val_accuracy, val_accuracy)
            print(f"epoch {epoch:>3}/{args.epochs}  train loss {train_loss:.3f} "
                  f"acc {100 * train_accuracy:5.2f}%  |  val loss {val_loss:.3f} "
                  f"acc {100 * val_accuracy:5.2f}%  |  {seconds:5.1f} s"
                  + ("  *best" if improved else ""))

            if args.dry_run:
                continue  # a dry run only checks that everything works: it leaves no files
            # A checkpoint holds everything needed to rebuild the model (config) and to continue
            # training exactly where it stopped (optimizer momentum, schedule position, history).
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_val_accuracy": best_val_accuracy,
                "history": history,
                "config": config,
            }
            common.save_checkpoint(checkpoint, last_path)
            if improved:
                common.save_checkpoint(checkpoint, best_path)

    except KeyboardInterrupt:
        # Ctrl-C: every finished epoch is already in last.pt, so nothing but the current epoch
        # is lost. Say how to pick up from there.
        finished = history["epoch"][-1] if history["epoch"] else 0
        # The same command again, with --resume: same data, folders and epochs.
        command = " ".join(["python", "05_train.py"] + [shlex.quote(argument) for argument
                                                         in sys.argv[1:] if argument != "--resume"])
        print(f"\nInterrupted during epoch {finished + 1}. " + (
            f"{last_path} holds the {finished} finished epoch(s); continue with:\n"
            f"  {command} --resume" if finished and not args.dry_run
            else "No epoch had finished, so there is nothing to resume."), file=sys.stderr)
        sys.exit(130)

    total_seconds = time.perf_counter() - run_start
    if args.dry_run:
        print(f"Dry run finished in {total_seconds:.1f} s; no files written.")
        return

    # ---- What the run produced -----------------------------------------------------------------
    args.output_dir.mkdir(parents=True, exist_ok=True)
    history_path = args.output_dir / "history.json"
    history_path.write_text(json.dumps(history, indent=2))
    curves_path = args.output_dir / "training_curves.png"
    plot_history(history, curves_path)
    print(f"\nBest validation accuracy: {100 * best_val_accuracy:.2f}%   "
          f"training time: {total_seconds:.0f} s ({total_seconds / 60:.1f} min)")
    print(f"Checkpoints: {last_path} and {best_path}")
    print(f"History: {history_path}\nPlot: {curves_path}")
    print("Next: python 06_evaluate.py" + (" --fake-data" if args.fake_data else ""))


if __name__ == "__main__":
    common.run_main(main)
