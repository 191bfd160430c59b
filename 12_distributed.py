"""12 Distributed training: the training of 05_train.py in several processes at once (DDP).

What you will learn
    - How torchrun starts one Python process per GPU (or several on a CPU) and tells each who it
      is: RANK (its number among all processes), LOCAL_RANK (its number on this machine) and
      WORLD_SIZE (how many there are), and how they join one process group.
    - The backend that carries their messages: NCCL between CUDA GPUs, gloo on the CPU.
    - DistributedSampler: every process trains on its own share of each epoch's images, and
      set_epoch gives every epoch a new order that all processes agree on.
    - What DistributedDataParallel (DDP) does in backward(): it averages the gradients of all
      processes, so every copy of the model takes the very same step.
    - What that means for the batch size and the learning rate.
    - Adding up metrics across processes (all_reduce), and why only rank 0 prints and writes.
    - Shutting down cleanly (destroy_process_group), after an error or Ctrl-C too.

How to run it
    torchrun --standalone --nproc_per_node=2 12_distributed.py --fake-data --dry-run --device cpu
    torchrun --standalone --nproc_per_node=2 12_distributed.py --epochs 10     # 2 GPUs (or CPU)
    torchrun --standalone --nproc_per_node=gpu 12_distributed.py --epochs 10   # every GPU here
    torchrun --standalone --nproc_per_node=2 12_distributed.py --epochs 10 --resume
On several machines, run the same command on each, with how many machines there are and the
address of one of them that all can reach (section 1 explains it):
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-id=cifar \\
        --rdzv-endpoint=first-machine.example.com:29400 12_distributed.py --epochs 10
`python 12_distributed.py` alone only says how to start it: the processes are torchrun's job.
torchrun comes with PyTorch; if your shell does not find it (a virtual environment that is not
activated), `python -m torch.distributed.run` is the same program. When a process fails,
torchrun adds a report of its own after the script's sentence (GUIDE.md explains it).

Words this lesson uses (each is shown where it happens):
    process group  the processes of one run, connected so that they can exchange tensors
    rank           a process's number in the group; rank 0 prints and writes the files
    backend        the library that moves the tensors between them (NCCL or gloo)
    all_reduce     every process gives a tensor and gets back the sum over all of them
    broadcast      one process sends a tensor (or a Python object) to all the others
    barrier        a point that every process must reach before any goes on
    share          the part of each epoch's images that one process trains on (often
                   called its "shard")

Reads the data as 05_train.py does (03_data.py). Writes checkpoints/distributed/last.pt,
best.pt, history.json and training_curves.png (checkpoints/distributed/fake/ with --fake-data),
never 05's, in the same layout as 05's, so 06-08 read them:
`python 06_evaluate.py --checkpoint checkpoints/distributed/best.pt`.

The training step itself is 05_train.py's train_one_epoch, unchanged: DDP does its work inside
the model's forward and backward passes, so the loop of 05 needs no edit.
"""

# %% Imports
import atexit
import contextlib
import os
import re
import shlex
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

import checkpointing
import common
import training_tools  # plumbing of a training run, shared with 05 (skip on a first read)

data = common.import_script("03_data")  # the images, the statistics, InMemoryLoader
training = common.import_script("05_train")  # the training step, evaluation, optimizer, schedule
models = common.import_script("04_model")  # the network's sizes, for --model-size

DEFAULT_CHECKPOINT_DIR = common.CHECKPOINT_DIR / "distributed"  # never 05's checkpoints/


# %% 1. Processes, ranks and the process group ----------------------------------------------------
# Data-parallel training runs N copies of the same program. Each holds a full copy of the model,
# trains on a different share of every batch, and before each optimizer step they exchange
# gradients so that all copies stay identical. N processes, not N threads: each has its own
# Python, so none waits for another's interpreter lock (the GIL), and its own GPU.
#
# torchrun starts the N processes and gives each, in environment variables, what it must know:
#   WORLD_SIZE  how many processes take part, on all machines together
#   RANK        this process's number among them, 0 to WORLD_SIZE - 1
#   LOCAL_RANK  its number on this machine, which picks its GPU: cuda:LOCAL_RANK
# plus MASTER_ADDR and MASTER_PORT, where they meet; init_process_group (below) reads them all
# and connects the processes into one group. Rank 0 is the one that prints and writes files.
# --standalone makes this machine the meeting point, on a free port. On several machines, each
# runs the same torchrun command with --nnodes (how many machines), --rdzv-endpoint (host:port of
# one machine that all can reach; "rdzv" is rendezvous, the meeting), --rdzv-backend=c10d
# (torchrun's own meeting service) and --rdzv-id (any name, the same on every machine). Once all
# have arrived, torchrun numbers the processes and starts them.
def join_process_group(device_name):
    """Read who this process is from torchrun's variables, pick its device and join the group.

    Returns:
        (rank, local_rank, world_size, device).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise common.UserError(
            "this script trains in several processes that torchrun starts, so launch it with "
            "e.g. `torchrun --standalone --nproc_per_node=2 12_distributed.py --fake-data` (the "
            "number of GPUs, or 2 on a CPU; `python -m torch.distributed.run` if torchrun is not "
            "found).")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    # The backend carries the messages between processes. NCCL (NVIDIA's library) moves tensors
    # directly between GPUs, over NVLink where there is one; gloo works on the CPU, everywhere.
    device = common.get_device(device_name)
    if device.type == "mps":
        raise common.UserError("torch.distributed has no backend for Apple's MPS; use --device "
                               "cpu.")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise common.UserError(
                f"this machine has {torch.cuda.device_count()} GPU(s), but torchrun started more "
                "processes than that; pass --nproc_per_node with at most that many.")
        device = torch.device("cuda", local_rank)  # one GPU per process, never shared
        torch.cuda.set_device(device)  # the GPU that NCCL and "cuda" without a number mean here
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    # However the script ends from here on (finished, an error, Ctrl-C, sys.exit), leave the
    # group cleanly, so that no process is left waiting for this one: atexit runs it at the end.
    atexit.register(leave_process_group)
    return rank, local_rank, world_size, device


def leave_process_group():
    """A moment for the backend's threads to finish, then destroy_process_group."""
    if dist.is_initialized():
        # The backend's own threads can still be letting go of the tensors of the last exchange
        # (an all_reduce returns as soon as its result is in), and that needs Python's lock.
        # Destroying the group waits for those threads while holding the lock: on torch 2.6 the
        # process then hung for good, and a thread still busy when Python shuts down aborts it
        # ("terminate called without an active exception"; a race in PyTorch, discussed in
        # pytorch/pytorch#190489). Sleeping frees the lock and lets the threads finish first.
        time.sleep(0.5)
        dist.destroy_process_group()
        time.sleep(0.2)  # the group can outlive destroy_process_group (DDP holds it): again


# %% 2. Some steps in one process only ------------------------------------------------------------
# Some steps must happen in one process only, while the others wait: if any of them fails, all
# must stop, or the others would wait forever (until torchrun ends them, with a long report).
def run_in_some(selected, action, device):
    """Call `action()` in the processes where `selected` is true, while the others wait, and
    return its result (None elsewhere). If it raises a UserError, that process prints its one
    sentence and every process stops with exit status 1.
    """
    failed, result = False, None
    if selected:
        try:
            result = action()
        except common.UserError as error:
            common.explain(error)  # prints "Error: ..."
            failed = True
    # all_reduce adds up a tensor over all processes and gives everyone the sum (section 5): here
    # how many failed. Reading the sum (.item()) waits for it, so everyone also waits for the
    # slowest, as a barrier does.
    failures = torch.tensor(float(failed), device=device)
    dist.all_reduce(failures)
    if failures.item():
        sys.exit(1)
    return result


def open_run(args, is_main, device):
    """The run's folder (checkpointing.TrainingRun), opened by rank 0 alone and shared.

    Only rank 0 writes checkpoints, so only rank 0 locks the folder and looks for the run to
    resume. It sends what it found to every process: on several machines the others may not even
    see this folder. broadcast_object_list pickles any Python object (here the checkpoint dict,
    its tensors on the CPU) and sends it from rank 0 to all; it fills a list in place.
    """
    def open_folder(writer):
        return checkpointing.TrainingRun(
            args.checkpoint_dir, args.resume, args.overwrite, args.dry_run,
            history_keys=training.HISTORY_KEYS, monitor="val_accuracy", mode="max",
            kind=checkpointing.CLASSIFIER_KIND, writer=writer)

    run = run_in_some(is_main, lambda: open_folder(writer=True), device) or open_folder(False)
    message = [run.resumed]
    dist.broadcast_object_list(message, src=0)
    run.resumed = message[0]
    return run


# %% 3. Each process its own share of every epoch -------------------------------------------------
# --batch-size is the global batch: the images that one optimizer step learns from, all processes
# together. Each process takes batch_size / world_size of them, and DDP averages their gradients
# (section 4). An average of N means over equal shares is the mean over the whole batch, so one
# step is the step 05 would take on that batch, save two details: batch-norm normalises each
# share with its own statistics (section 4), and each process draws its own random crops. So the
# same recipe (learning rate, schedule, steps per epoch) applies, each step computed up to N
# times faster.
# The other common choice keeps each process's batch fixed, so the global batch grows N times:
# then there are N times fewer steps per epoch, and the learning rate is usually raised with the
# batch (the linear scaling rule of 05's default_lr: a rule of thumb that works with a warm-up
# and up to batches of a few thousand images). Here that is simply a larger --batch-size, and
# --lr follows it unless you give one.
def load_data(args, rank, local_rank, world_size, device):
    """The training images, this process's share of the validation images, and the sampler
    that hands out each epoch's share of the training images.

    Returns:
        (train, sampler, val_loader, val_count, classes, mean, std).
    """
    # Rank 0 of each machine reads (and if need be downloads) the data first; the others wait,
    # then read the files it wrote. N processes downloading into one folder at once would
    # overwrite each other's half-written files.
    loaded = run_in_some(local_rank == 0, lambda: data.load_train_and_val(
        args.data_dir, args.fake_data, args.classes), device)
    train, val, classes = loaded or data.load_train_and_val(args.data_dir, args.fake_data,
                                                            args.classes)
    mean, std = data.normalization_statistics(train.images, args.data_dir, args.fake_data)
    if args.dry_run:  # one global batch of each, every epoch: enough to check that all runs
        train = data.Split(*(part[:args.batch_size] for part in train))
        val = data.Split(*(part[:args.batch_size] for part in val))
    # DistributedSampler hands out indices: every epoch it shuffles all indices with a generator
    # seeded with seed + epoch, so every process draws the same order without a word exchanged,
    # and process r keeps the positions r, r + N, r + 2N, ... Its shares never overlap, and batch
    # b of all processes together holds the same images as the b-th global batch of that order.
    # drop_last=True drops the few images that do not split evenly. sampler.set_epoch(epoch)
    # must be called at each epoch: without it, every epoch repeats the first epoch's order.
    # With a Dataset and a DataLoader (03_data.py), pass it as DataLoader(dataset,
    # sampler=sampler, ...). Here the images are in memory, so each epoch the process takes its
    # share of them and hands it to 03's InMemoryLoader, in the sampler's order (section 6).
    # (It only needs to know how many images there are, so the labels stand in for a dataset.)
    sampler = DistributedSampler(train.labels, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    # Validation: each process measures its own share (no shuffling; it need not be even), and
    # section 5 adds up the results.
    val_share = data.Split(val.images[rank::world_size], val.labels[rank::world_size])
    val_loader = data.InMemoryLoader(*val_share, 2 * args.batch_size // world_size, device,
                                     mean, std)
    return train, sampler, val_loader, len(val_share.labels), classes, mean, std


def epoch_loader(train, sampler, epoch, steps_per_epoch, local_batch_size, args, rank,
                 world_size, device, mean, std):
    """This process's batches for one epoch: its share, in the order all processes agree on."""
    sampler.set_epoch(epoch)
    share = torch.tensor(list(sampler))[:steps_per_epoch * local_batch_size]
    # Random crops and flips come from torch's generator: a different seed for every process and
    # epoch, so the processes do not crop alike, and a resumed run draws the same crops.
    torch.manual_seed((args.seed + epoch) * world_size + rank)
    return data.InMemoryLoader(train.images[share], train.labels[share], local_batch_size,
                               device, mean, std, augment=not args.no_augment)


# %% 4. The model, wrapped in DistributedDataParallel ---------------------------------------------
def wrap_model(model, device, local_rank):
    """The model for training under DDP; the plain `model` keeps the very same parameters.

    DistributedDataParallel: at the start it copies rank 0's weights to every process. In
    backward() it averages each gradient over all processes (an all_reduce), in buckets of
    parameters, while the rest of the backward pass is still being computed, so the exchange
    costs little extra time. After backward() every process holds the same averaged gradients,
    its optimizer takes the same step, and the copies stay identical without ever sending
    weights. Batch-norm's running statistics are not gradients: each process updates its own
    from its share, and DDP copies rank 0's to the others at the start of each training forward
    pass. So they differ a little at the end of an epoch, when each has updated them once more;
    rank 0's are the ones saved.
    """
    return DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                   else None)


# %% 5. Metrics over all processes -----------------------------------------------------------------
def mean_over_processes(mean_loss, accuracy, count, device):
    """The loss and accuracy over the images of all processes, from each one's own mean loss and
    accuracy over its `count` images.

    all_reduce adds up a tensor over all processes and gives every one of them the sum. Adding up
    sums and counts, then dividing, weighs every image once, whatever share each process had.
    """
    totals = torch.tensor([mean_loss * count, accuracy * count, count], dtype=torch.float64,
                          device=device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    loss_sum, correct, seen = totals.tolist()
    return loss_sum / seen, correct / seen


@contextlib.contextmanager
def stop_if_a_process_is_lost():
    """If another process dies (killed, out of memory, its machine gone), the next exchange with
    it fails in this one with an error from the backend ("Connection reset by peer"). Say so in
    one line, then stop as Ctrl-C does: rank 0 prints the command that resumes the run.

    torchrun may be quicker than the backend: it sees the process die, and stops the others with
    SIGTERM (which stop_cleanly turns into a KeyboardInterrupt("SIGTERM")). That is said too."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if stop.args == ("SIGTERM",):
            print("\nThis process was told to stop (SIGTERM): torchrun does that when another "
                  "process of the run stops, and so do a shutdown and a time limit.",
                  file=sys.stderr)
        raise
    except RuntimeError as error:
        if not (isinstance(error, getattr(dist, "DistError", ())) or re.search(
                r"connection (reset|closed)|broken pipe|peer", str(error), re.IGNORECASE)):
            raise  # a bug, not a lost process: its traceback is what you want
        reason = re.sub(r"^\[[^]]*\] ", "", str(error).splitlines()[0]).split(". ")[0][:100]
        print(f"\nAnother process of this run stopped ({reason}).", file=sys.stderr)
        raise KeyboardInterrupt from None


def weights_agree(model, device):
    """The proof that DDP kept the copies identical: every process adds up all its weights, and
    all_reduce finds the largest and the smallest of those sums. Equal means equal everywhere.

    Returns:
        (agree, smallest, largest).
    """
    weight_sum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    largest, smallest = weight_sum.clone(), weight_sum.clone()
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
    return largest.item() == smallest.item(), smallest.item(), largest.item()


# %% 6. Setup, training, teardown ------------------------------------------------------------------
def main():
    args = parse_args()  # plumbing: 05's flags and this lesson's folders (at the end of the file)
    rank, local_rank, world_size, device = join_process_group(args.device)  # section 1
    try:
        train(args, rank, local_rank, world_size, device)
    except common.UserError:
        # Every process meets the same mistake (a wrong flag, a run that cannot be resumed):
        # rank 0 says it, the others stop quietly. Leaving the group is atexit's job (section 1).
        if rank == 0:
            raise
        sys.exit(1)


def train(args, rank, local_rank, world_size, device):
    """05's training, in this process, on its share of every batch."""
    is_main = rank == 0  # rank 0 alone prints, and writes checkpoints and figures
    # Every process runs every line of this file, so a plain print would show each line N times.
    # The others send their ordinary output (stdout) nowhere; their errors (stderr) still show,
    # except during training, where their progress bars (also on stderr) are hidden.
    if not is_main:
        sys.stdout = open(os.devnull, "w")
    common.seed_everything(args.seed)  # the same seed everywhere (DDP copies rank 0's weights)
    print(f"{world_size} process(es), backend {dist.get_backend()}, rank 0 on {device}")

    # ---- The run's folder, and what a resumed run keeps (sections 2 and 3) ---------------------
    run = open_run(args, is_main, device)
    planned_epochs = training_tools.fill_in_settings(  # --batch-size and --lr, as in 05
        args, run, training.DEFAULT_BATCH_SIZE[args.model_size], training.default_lr)
    if args.batch_size % world_size:
        raise common.UserError(f"--batch-size {args.batch_size} must split evenly between the "
                               f"{world_size} processes; pass a multiple of {world_size}.")
    local_batch_size = args.batch_size // world_size
    print(f"Batch: {args.batch_size} images per step = {world_size} process(es) x "
          f"{local_batch_size}   peak lr: {args.lr}")
    train, sampler, val_loader, val_count, classes, mean, std = load_data(
        args, rank, local_rank, world_size, device)
    # Every process must take the same number of steps: one with an extra batch would wait
    # forever for the others to join its gradient exchange. So each keeps only full batches.
    steps_per_epoch = len(sampler) // local_batch_size
    if steps_per_epoch == 0:
        raise common.UserError(f"{len(train.labels)} training images are fewer than one batch "
                               f"of {args.batch_size}; pass a smaller --batch-size.")
    print(f"Data: {len(train.labels):,} training images ({steps_per_epoch} steps per epoch), "
          f"{len(classes)} classes")

    # ---- The model, loss, optimizer and schedule are 05's (section 4) ----------------------------
    model = training_tools.make_model(args.model_size, len(classes), device,
                                      in_channels=len(mean))
    # Batch-norm (04_model.py) normalises with the statistics of the batch it sees: under DDP,
    # each process's share of it. That is usually fine, but small shares give noisy statistics;
    # SyncBatchNorm computes them over the whole global batch instead, at the price of one more
    # exchange per layer. PyTorch implements it for GPUs only.
    if args.sync_batch_norm:
        if device.type != "cuda":
            raise common.UserError("--sync-batch-norm works on CUDA GPUs only; leave it out on "
                                   "the CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters, new layers
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = training.make_optimizer(model, args.lr, args.weight_decay)
    scheduler = training.make_scheduler(optimizer, total_steps=planned_epochs * steps_per_epoch)
    config = training_tools.training_config(args, classes, mean, std, planned_epochs,
                                            steps_per_epoch)
    # Resuming puts back the weights, momentum and schedule in every process, so that all go on
    # from the same state; then DDP wraps that same model and trains those same parameters.
    first_epoch = run.start(config, model=model, optimizer=optimizer, scheduler=scheduler)
    ddp_model = wrap_model(model, device, local_rank)
    if not training_tools.epochs_left(first_epoch, args.epochs, planned_epochs):
        return  # a resumed run that has trained every epoch asked for

    # ---- The epochs ----------------------------------------------------------------------------
    no_output = open(os.devnull, "w")  # only rank 0 draws a progress bar
    run_start = time.perf_counter()
    with run.stop_cleanly(advice="try a lower learning rate (--lr)",
                          resume_command=resume_command(args, world_size)), \
            stop_if_a_process_is_lost():
        for epoch in range(first_epoch, args.epochs + 1):
            epoch_start = time.perf_counter()
            train_loader = epoch_loader(train, sampler, epoch, steps_per_epoch, local_batch_size,
                                        args, rank, world_size, device, mean, std)
            with contextlib.nullcontext() if is_main else contextlib.redirect_stderr(no_output):
                train_loss, train_accuracy = training.train_one_epoch(
                    ddp_model, train_loader, loss_fn, optimizer, device, scheduler,
                    mixed_precision=not args.no_mixed_precision,
                    description=f"epoch {epoch}/{args.epochs}")
            train_loss, train_accuracy = mean_over_processes(
                train_loss, train_accuracy, steps_per_epoch * local_batch_size, device)
            # Evaluation gets the plain model, not the DDP wrapper: it exchanges nothing, and the
            # shares may differ in batches, which a DDP forward pass (that talks) must not.
            val_loss, val_accuracy = (training.evaluate(model, val_loader, loss_fn, device)
                                      if val_count else (0.0, 0.0))
            val_loss, val_accuracy = mean_over_processes(val_loss, val_accuracy, val_count,
                                                         device)
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                   "val_loss": val_loss, "val_accuracy": val_accuracy,
                   "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - epoch_start}
            # Every process has the same averaged numbers, so all decide alike (and all stop
            # together if the loss blew up); only rank 0 writes, the plain model's state_dict
            # (`model`, not ddp_model, whose names all start with "module."), in 05's layout.
            improved = run.end_epoch(row, max_loss=checkpointing.blown_up_loss(len(classes)))
            training_tools.print_epoch(row, args.epochs, improved)

    # ---- What the run produced (section 5) -----------------------------------------------------
    seconds = time.perf_counter() - run_start
    agree, smallest, largest = weights_agree(model, device)
    print(f"Sum of all weights: {largest:.6f} in every one of the {world_size} process(es)"
          if agree else f"Warning: the weights differ between processes (sums {smallest:.6f} "
          f"to {largest:.6f}); DDP should have kept them identical.")
    if args.dry_run:
        print(f"Dry run finished in {seconds:.1f} s; no files written. Next: the same command "
              "without --dry-run (and without --fake-data, to train on real images).")
    else:
        print(f"\nBest validation accuracy: {100 * run.best:.2f}%   training time: "
              f"{seconds:.0f} s with {world_size} process(es)")
    # The curves and the 06 command, by rank 0. run_in_some also makes every process wait until
    # all have finished, and only then leave the group: a process that left while another was
    # still sending would make that one fail.
    run_in_some(is_main and not args.dry_run,
                lambda: training_tools.report_training_run(run, args), device)
    common.section("Summary: what you just did")  # rank 0's output only (section 6)
    print("""\
- started one process per device with torchrun, each joining the process group by its rank
- gave every process its own share of each epoch with DistributedSampler and set_epoch
- trained 05's loop unchanged on a DistributedDataParallel model, which averages the gradients
- added up the metrics with all_reduce, let rank 0 alone write, and left the group cleanly""")
    print("\nThat is the last lesson: GUIDE.md's next steps say where to go from here.")


# %% Plumbing: the command line --------------------------------------------------------------------
def parse_args():
    """05's flags (training_tools.py) plus --sync-batch-norm, with this lesson's own folders. A
    mistake in them is reported by rank 0 alone (every process would say the same)."""
    saved_stderr = sys.stderr
    if os.environ.get("RANK", "0") != "0":  # torchrun's variable: see section 1
        sys.stderr = open(os.devnull, "w")  # until the flags are read: argparse prints there
    parser, flags = training_tools.training_parser(
        "Lesson 12: 05_train.py's training in several processes with DistributedDataParallel. "
        "Start it with torchrun, e.g. `torchrun --standalone --nproc_per_node=2 "
        "12_distributed.py`. --batch-size is the global batch, split evenly between the "
        "processes; unless given, it is 256 for the small model and 512 for the large one, and "
        "--lr is 0.6 x batch size / 512, as in 05_train.py.", model_sizes=models.MODEL_SIZES,
        checkpoint_dir="checkpoints/distributed/")
    flags.add_argument("--sync-batch-norm", action="store_true",
                       help="CUDA only: batch-norm statistics over the global batch, not each "
                            "process's share (section 4)")
    args = training_tools.parse_training_args(
        parser, lambda fake_data: DEFAULT_CHECKPOINT_DIR / "fake" if fake_data
        else DEFAULT_CHECKPOINT_DIR)
    sys.stderr = saved_stderr
    return args


def resume_command(args, world_size):
    """The torchrun command that resumes this run, for the message after Ctrl-C."""
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if processes_here != world_size:  # several machines: each has its own torchrun command
        return "the same torchrun command as before, on every machine, with --resume"
    return " ".join(["torchrun", "--standalone", f"--nproc_per_node={world_size}",
                     "12_distributed.py"] + [shlex.quote(word) for word in sys.argv[1:]
                                             if word != "--resume"] + ["--resume"])


if __name__ == "__main__":
    common.run_main(main)
