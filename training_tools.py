"""Plumbing of the training scripts, 05_train.py and 12_distributed.py: skip it on a first read.

The lesson (the seven steps of training, evaluation, the optimizer and the schedule) is in
05_train.py, and saving and resuming a run is checkpointing.py's. This file holds the rest of
what a real run needs around them:
    flags          the training recipe's flags, their checks and the run's folders
    data, model    the training and validation loaders 05 trains with (03_data.py's pipeline),
                   and 04_model.py's network made ready on the device
    settings       what a resumed run keeps (batch size, peak learning rate, schedule length)
    output         the line printed after every epoch, and the report at the end of a run
    record         what a checkpoint records about the run, for 06-08 and for --resume
    compile        torch.compile behind --compile
    checks         check_arguments: train_one_epoch and evaluate refuse, at the first batch,
                   arguments they would measure wrongly (copy it with them)
"""

import time
from pathlib import Path

import torch

from common import (CHECKPOINT_DIR, DATA_DIR, UserError, check_can_write, import_script,
                    make_data_parser, parse_args, positive_float, positive_int)

# The data pipeline of 03_data.py and the network of 04_model.py (see
# common.import_script).
data = import_script("03_data")
models = import_script("04_model")


# %% Flags ---------------------------------------------------------------------------------------
def add_training_flags(parser, model_sizes):
    """Add the training recipe's flags of 05_train.py (12_distributed.py shares them) to
    `parser`, in a group of their own, and return the group; each script adds its own
    --checkpoint-dir. `model_sizes`: the choices of --model-size."""
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, default=10,
                          help="passes over the training images")
    training.add_argument("--lr", type=positive_float,
                          help="peak learning rate, reached after the warm-up "
                               "(default: 0.6 x batch size / 512)")
    training.add_argument("--model-size", choices=sorted(model_sizes), default="small",
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
    if args.epochs > 10_000:  # a typo, not a plan: even --dry-run would run them all
        parser.error(f"--epochs must be at most 10000, not {args.epochs}")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be at least 0 and less than 1")
    if not 0 <= args.weight_decay < 1:
        parser.error("--weight-decay must be at least 0 and less than 1")
    if args.lr is not None and args.lr > 10:
        parser.error(f"--lr must be at most 10 (the default is 0.6 x batch size / 512), "
                     f"not {args.lr:g}")
    if args.batch_size is not None and args.batch_size > 2 ** 16:
        parser.error("--batch-size must be at most 65536")


def training_parser(description, model_sizes, checkpoint_dir="checkpoints/"):
    """The parser of a training script (05, 12): the data flags, the training flags and
    --checkpoint-dir (`checkpoint_dir` names its default in --help). Returns (parser, training
    group), for the script to add its own flags."""
    parser = make_data_parser(description, batch_size=None, output_dir=None)
    training = add_training_flags(parser, model_sizes)
    training.add_argument("--checkpoint-dir", type=Path,
                          help="where last.pt, best.pt and history.json are written (default: "
                               f"{checkpoint_dir}; a --fake-data run uses its fake/ subfolder, "
                               "so that a check on random images never replaces a trained model)")
    return parser, training


def parse_training_args(parser, default_checkpoint_dir):
    """Parse a training script's flags and fill in the folders: --checkpoint-dir from
    default_checkpoint_dir(fake_data), --output-dir the same folder unless given (both checked
    now, not after the last epoch)."""
    args = parse_args(parser)
    check_training_flags(parser, args)
    args.checkpoint_dir = args.checkpoint_dir or default_checkpoint_dir(args.fake_data)
    args.output_dir = args.output_dir or args.checkpoint_dir  # the run's figure goes with it
    check_can_write(args.checkpoint_dir, "--checkpoint-dir")
    check_can_write(args.output_dir, "--output-dir")
    return args


# %% Data, model and settings ----------------------------------------------------------------------
def make_loaders(args, device):
    """The training and validation loaders of 03_data.py's fast pipeline: batches arrive
    normalised, augmented (training only) and on the device.

    Returns:
        (train_loader, val_loader, classes, mean, std).
    """
    start = time.perf_counter()
    train, val, classes = data.load_train_and_val(args.data_dir, args.fake_data, args.classes)
    # Inputs are normalised with the training images' own statistics (03_data.py, section 3).
    # They go into the checkpoint, so that 06-08 normalise new images exactly as training did.
    mean, std = data.normalization_statistics(train.images, args.data_dir, args.fake_data)
    if args.dry_run:  # one batch of each: enough to check that everything runs
        train = data.Split(*(part[:args.batch_size] for part in train))
        val = data.Split(*(part[:args.batch_size] for part in val))
    # drop_last: every training step sees a full batch (03_data.py, section 7).
    train_loader = data.InMemoryLoader(*train, args.batch_size, device, mean, std, shuffle=True,
                                       augment=not args.no_augment, drop_last=True)
    # Evaluation keeps no graph and so needs far less memory: twice the batch fits easily.
    val_loader = data.InMemoryLoader(*val, 2 * args.batch_size, device, mean, std)
    print(f"Data: {len(train.labels):,} training and {len(val.labels):,} validation images, "
          f"{len(classes)} classes, loaded in {time.perf_counter() - start:.1f} s")
    return train_loader, val_loader, classes, mean, std


def make_model(size, num_classes, device, in_channels=3):
    """04_model.py's network, on the device, in the memory layout of the batches."""
    model = models.build_model(size, num_classes=num_classes, in_channels=in_channels)
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        # Let cuDNN time a few ways to compute each convolution and keep the fastest; worth it
        # because every batch has the same shape.
        torch.backends.cudnn.benchmark = True
    print(f"Model: CifarNet {size}, {sum(p.numel() for p in model.parameters()):,} parameters")
    return model


def fill_in_settings(args, run, default_batch_size, default_lr):
    """Fill in --batch-size and --lr where they were not given, and return the number of epochs
    the learning-rate schedule spans. A resumed run keeps what its first run chose (its
    checkpoint's config); a new run takes `default_batch_size`, `default_lr(batch size)` and
    --epochs. `run` is a checkpointing.TrainingRun."""
    args.batch_size = args.batch_size or run.saved_setting("batch_size", default_batch_size)
    args.lr = args.lr or run.saved_setting("lr", default_lr(args.batch_size))
    return run.saved_setting("epochs", args.epochs)


# %% Output -------------------------------------------------------------------------------------
def print_epoch(row, num_epochs, improved):
    """One line per epoch: the training and validation numbers, and whether it is the best."""
    print(f"epoch {row['epoch']:>3}/{num_epochs}  train loss {row['train_loss']:.3f} "
          f"acc {100 * row['train_accuracy']:5.2f}%  |  val loss {row['val_loss']:.3f} "
          f"acc {100 * row['val_accuracy']:5.2f}%  |  {row['seconds']:5.1f} s"
          + ("  *best" if improved else ""))


# %% The record and report of a training run (05, 12) -------------------------------------------
def epochs_left(first_epoch, epochs, planned_epochs):
    """Whether a training run (05, 12) has epochs to train from `first_epoch` to `epochs`; a
    resumed run that has them all says so, and one asked to go past the `planned_epochs` of its
    learning-rate schedule says what those extra epochs get."""
    if first_epoch > epochs:
        print(f"Nothing to do: it already trained {first_epoch - 1} epochs; pass a larger "
              "--epochs to train more.")
        return False
    if epochs > planned_epochs:
        # Stretching the schedule now would raise the learning rate again and undo the settling
        # of the last epochs; the extra epochs go on at its last, lowest learning rate instead.
        print(f"The learning-rate schedule was planned for {planned_epochs} epochs; epochs "
              f"{planned_epochs + 1}-{epochs} train at its last rate. For a full schedule over "
              f"{epochs} epochs, start a new run.")
    return True


def training_config(args, classes, mean, std, epochs, steps_per_epoch):
    """What 05's and 12's checkpoints record about a run: 06-08 rebuild the model and prepare
    images from it, and --resume refuses to go on with other settings. `epochs` is the length
    the learning-rate schedule was planned for."""
    return {
        # mean and std hold one number per channel: 3 for colour images, 1 for grayscale.
        "model": {"size": args.model_size, "num_classes": len(classes), "in_channels": len(mean)},
        "image_size": data.IMAGE_SIZE, "classes": list(classes), "mean": list(mean),
        "std": list(std), "data": data.data_source(args.data_dir, args.fake_data),
        "data_dir": None if args.fake_data else str(Path(args.data_dir).resolve()),
        "epochs": epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
        "augment": not args.no_augment, "steps_per_epoch": steps_per_epoch,
    }


def report_training_run(run, args):
    """At the end of a training run (checkpointing.TrainingRun): draw the curves, say where
    every file is, and print the 06_evaluate.py command that evaluates its best.pt."""
    import shlex

    import figures  # matplotlib, loaded here: only a finished run draws, and it takes a second

    curves_path = figures.plot_history(run.history, Path(args.output_dir) / "training_curves.png")
    print(f"Checkpoints: {run.last_path} and {run.best_path}\nHistory: {run.history_path}\n"
          f"Plot: {curves_path}")
    if args.fake_data:
        print("(Random images with random labels: about 10% is chance, and all any network can "
              "score here. This run only checks that the code runs.)")
    command = ["python", "06_evaluate.py"]
    if args.fake_data:
        command.append("--fake-data")
    elif args.data_dir != DATA_DIR:
        command += ["--data-dir", shlex.quote(str(args.data_dir))]
    if run.best_path not in (CHECKPOINT_DIR / "best.pt", CHECKPOINT_DIR / "fake" / "best.pt"):
        command += ["--checkpoint", shlex.quote(str(run.best_path))]
    print("Next: " + " ".join(command))


# %% torch.compile (--compile) -------------------------------------------------------------------
def compile_model(model, device):
    """`model` compiled with torch.compile, to call in its place; it shares `model`'s weights.
    GUIDE.md ("torch.compile") explains what it does, what it costs and when it pays.

    Save `model`, not what this returns: the compiled wrapper names every weight
    "_orig_mod.<name>" in its state_dict, which a plain model could not load.

    Raises:
        UserError: compiling does not work on this machine (no C++ compiler, say).
    """
    import logging

    # A CPU-only machine gets a warning that no CUDA runtime is found: true, and nothing to act on.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        # A tiny function first: if compiling cannot work here at all (no C++ compiler, or a
        # Python that torch.compile does not support yet), this says so in one sentence now,
        # rather than as a long traceback in the middle of the first epoch.
        torch.compile(lambda x: x + 1, dynamic=False)(torch.zeros(2, device=device))
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"torch.compile does not work here ({reason}); run without "
                        "--compile.") from None
    print("torch.compile: on; the model is compiled the first time it trains and the first time "
          "it evaluates, which makes the first epoch slower")
    # dynamic=False: code for the few batch shapes there are (the training batch, the
    # validation batch and its smaller last one), not general code for any batch size.
    return torch.compile(model, dynamic=False)


# %% Checks: what train_one_epoch and evaluate refuse -------------------------------------------
# Copied into another project, 05's two functions are called with other losses, schedulers,
# loaders and targets; this check makes a wrong one fail at the first batch with one sentence,
# instead of training on numbers that mean something else. Copy it with them: it needs only torch.
def check_arguments(loss_fn, outputs, labels, loader, batch_scheduler=None, evaluating=False):
    """Refuse, at the first batch, what train_one_epoch and evaluate would measure wrongly: a
    loss that is not the batch's mean (their sums turn means back into sums), a scheduler
    planned in epochs passed as batch_scheduler, an evaluation that would skip or augment
    images, and outputs and labels that are not (batch, classes) scores and int64 class indices
    (batch,), such as regression or one-hot targets.

    What it cannot see: a LambdaLR (or another schedule written as a function) planned in epochs;
    and a loss with class weights or ignore_index is a mean over its own weights, so the reported
    loss is then close to, not exactly, the set's mean."""
    # Schedulers planned in epochs: stepped once per batch, they would decay far too soon.
    schedulers = torch.optim.lr_scheduler
    epoch_schedulers = (schedulers.StepLR, schedulers.MultiStepLR, schedulers.ExponentialLR,
                        schedulers.ReduceLROnPlateau)
    with torch.no_grad():  # a mean is the same for the batch written twice; a sum doubles
        outputs = outputs.float()  # (bfloat16 under autocast would round the comparison)
        single = loss_fn(outputs, labels).float()
        doubled = loss_fn(torch.cat([outputs, outputs]), torch.cat([labels, labels])).float()
        summed = doubled.numel() != 1 or not torch.allclose(doubled, single, rtol=1e-3,
                                                            atol=1e-6, equal_nan=True)
    # A cosine schedule's length, or its first cycle's with warm restarts, in steps: shorter
    # than one epoch, it was planned in epochs.
    horizon = getattr(batch_scheduler, "T_max", None) or getattr(batch_scheduler, "T_0", None)
    if summed:
        problem = ("loss_fn must return the batch's mean loss (reduction='mean'), not a sum or "
                   "one loss per image")
    elif isinstance(batch_scheduler, epoch_schedulers) or (horizon and horizon < len(loader)):
        problem = (f"{type(batch_scheduler).__name__} is planned in epochs; call its step() after "
                   "each epoch instead of passing it as batch_scheduler")
    elif evaluating and (getattr(loader, "drop_last", False) or  # also a DataLoader's sampler's
                         getattr(getattr(loader, "batch_sampler", None), "drop_last", False)):
        problem = "evaluate must see every image, but the loader drops its last batch"
    elif evaluating and getattr(loader, "augment", False):  # 03_data.InMemoryLoader's flag
        problem = "evaluate must see the images as they are, but the loader augments them"
    elif not (outputs.ndim == 2 and labels.ndim == 1 and labels.dtype == torch.long):
        problem = (f"these functions measure a classifier: they need outputs (batch, classes) and "
                   f"int64 labels (batch,), not {tuple(outputs.shape)} and {tuple(labels.shape)} "
                   f"{labels.dtype}; for other targets, drop their accuracy lines")
    else:
        return
    raise ValueError(problem)
