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
activated), `python -m torch.distributed.run` is the same program.

Words this lesson uses (each is shown where it happens):
    process group  the processes of one run, connected so that they can exchange tensors
    rank           a process's number in the group; rank 0 prints and writes the files
    backend        the library that moves the tensors between them (NCCL or gloo)
    all_reduce     every process gives a tensor and gets back the sum over all of them
    broadcast      one process sends a tensor (or a Python object) to all the others
    barrier        a point that every process must reach before any goes on
    share          the part of each epoch's images that one process trains on (often
                   called its "shard")

Reads the data as 05_train.py does (03_data.py). Writes checkpoints/distributed/last.pt and
best.pt (checkpoints/distributed/fake/ with --fake-data), never 05's, in the same layout as 05's,
so 06-08 read them: `python 06_evaluate.py --checkpoint checkpoints/distributed/best.pt`. Also
outputs/distributed/history.json and training_curves.png.

The training step itself is 05_train.py's train_one_epoch, unchanged: DDP does its work inside
the model's forward and backward passes, so the loop of 05 needs no edit.
"""

# %% Setup ----------------------------------------------------------------------------------------
import atexit
import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

import checkpointing
import common

common.report_errors_plainly()  # a mistake you can fix ends in one sentence, not a traceback
data = common.import_script("03_data")  # the images, the statistics, InMemoryLoader
training = common.import_script("05_train")  # the training step, evaluation, optimizer, schedule

DEFAULT_CHECKPOINT_DIR = common.CHECKPOINT_DIR / "distributed"  # never 05's checkpoints/

parser = common.make_data_parser(
    "Lesson 12: 05_train.py's training in several processes with DistributedDataParallel. "
    "Start it with torchrun, e.g. `torchrun --standalone --nproc_per_node=2 12_distributed.py`. "
    "--batch-size is the global batch, split evenly between the processes; unless given, it is "
    "256 for the small model and 512 for the large one, and --lr is 0.6 x batch size / 512, as "
    "in 05_train.py.", batch_size=None)
parser.set_defaults(output_dir=common.OUTPUT_DIR / "distributed")  # 05's history stays as it is
flags = training.add_training_flags(parser)  # 05's flags, with the same defaults
flags.add_argument("--sync-batch-norm", action="store_true",
                   help="CUDA only: batch-norm statistics over the global batch, not each "
                        "process's share (section 4)")
flags.add_argument("--checkpoint-dir", type=Path,
                   help="where last.pt and best.pt are written (default: checkpoints/distributed/,"
                        " and checkpoints/distributed/fake/ with --fake-data)")
args = common.parse_args(parser)
training.check_training_flags(parser, args)
if args.checkpoint_dir is None:
    args.checkpoint_dir = DEFAULT_CHECKPOINT_DIR / "fake" if args.fake_data else \
        DEFAULT_CHECKPOINT_DIR


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
if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
    raise common.UserError(
        "this script trains in several processes that torchrun starts, so launch it with e.g. "
        "`torchrun --standalone --nproc_per_node=2 12_distributed.py --fake-data` (the number of "
        "GPUs, or 2 on a CPU; `python -m torch.distributed.run` if torchrun is not found).")
rank = int(os.environ["RANK"])
local_rank = int(os.environ["LOCAL_RANK"])
world_size = int(os.environ["WORLD_SIZE"])
is_main = rank == 0  # rank 0 alone prints, and writes checkpoints and figures

# Every process runs every line of this file, so a plain print would show each line N times.
# The others send their ordinary output (stdout) nowhere; their errors (stderr) still show,
# except during training, where their progress bars (also on stderr) are hidden (section 6).
if not is_main:
    sys.stdout = open(os.devnull, "w")

# The backend carries the messages between processes. NCCL (NVIDIA's library) moves tensors
# directly between GPUs, over NVLink where there is one; gloo works on the CPU, and everywhere.
device = common.get_device(args.device)
if device.type == "mps":
    raise common.UserError("torch.distributed has no backend for Apple's MPS; use --device cpu.")
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


# However the script ends from here on (finished, an error, Ctrl-C, sys.exit), leave the group
# cleanly, so that no process is left waiting for this one: atexit runs this at the very end.
@atexit.register
def leave_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()
        # The backend's own threads can still be letting go of the tensors of the last exchange
        # (an all_reduce returns as soon as its result is in). A thread that does so while Python
        # is shutting down aborts the process ("terminate called without an active exception": a
        # race in PyTorch, discussed in pytorch/pytorch#190489). Waiting a moment lets them finish.
        time.sleep(0.2)


signal.signal(signal.SIGTERM, training.stop_like_ctrl_c)  # torchrun stops workers with SIGTERM
common.seed_everything(args.seed)  # the same seed everywhere (and DDP copies rank 0's weights)
print(f"{world_size} process(es), backend {dist.get_backend()}, rank 0 on {device}")


# %% 2. One run, one folder: rank 0 decides -------------------------------------------------------
# Some steps must happen in one process only, while the others wait: if any of them fails, all
# must stop, or the others would wait forever (until torchrun ends them, with a long report).
def run_in_some(selected, action):
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


def open_run_and_load():
    lock, last_path = checkpointing.open_run(args.checkpoint_dir, args.resume, args.overwrite,
                                             args.dry_run)
    return lock, checkpointing.load_checkpoint(last_path, for_resume=True) if last_path else None


# Only rank 0 writes checkpoints, so only rank 0 locks the folder (held to the end of the run) and
# looks for the run to resume (checkpointing.open_run). It sends what it found to every process:
# on several machines the others may not even see this folder. broadcast_object_list pickles any
# Python object (here the checkpoint dict, its tensors on the CPU) and sends it from rank 0 to all.
# run_in_some returns None in the other processes, so they start with (None, None).
lock, resumed = run_in_some(is_main, open_run_and_load) or (None, None)
# broadcast_object_list fills a list in place: rank 0's item replaces everyone else's.
message = [resumed]
dist.broadcast_object_list(message, src=0)
resumed = message[0]
training.fill_in_batch_size_and_lr(args, resumed)  # 05's defaults (small model: 256, lr 0.3)

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
if args.batch_size % world_size:
    raise common.UserError(f"--batch-size {args.batch_size} must split evenly between the "
                           f"{world_size} processes; pass a multiple of {world_size}.")
local_batch_size = args.batch_size // world_size
print(f"Batch: {args.batch_size} images per step = {world_size} process(es) x "
      f"{local_batch_size}   peak lr: {args.lr}")

# Rank 0 of each machine reads (and if need be downloads) the data first; the others wait, then
# read the files it wrote. N processes downloading into one folder at once would overwrite each
# other's half-written files.
loaded = run_in_some(local_rank == 0,
                     lambda: data.load_train_and_val(args.data_dir, args.fake_data))
# The processes that waited (loaded is None there) now read the same files.
train, val, classes = loaded or data.load_train_and_val(args.data_dir, args.fake_data)
mean, std = data.normalization_statistics(train.images, args.data_dir, args.fake_data)
if args.dry_run:  # one global batch of each, every epoch: enough to check that everything runs
    train = data.Split(*(part[:args.batch_size] for part in train))
    val = data.Split(*(part[:args.batch_size] for part in val))

# DistributedSampler hands out indices: every epoch it shuffles all indices with a generator
# seeded with seed + epoch, so every process draws the same order without a word exchanged, and
# process r keeps the positions r, r + N, r + 2N, ... Its shares never overlap, and batch b of all
# processes together holds the same images as the b-th global batch of that order.
# drop_last=True drops the few images that do not split evenly. sampler.set_epoch(epoch) must be
# called at each epoch: without it, every epoch repeats the first epoch's order.
# With a Dataset and a DataLoader (03_data.py, sections 4-7), pass it as
# DataLoader(dataset, sampler=sampler, ...). Here the images are in memory, so each epoch the
# process takes its share of them and hands it to 03's InMemoryLoader, in the sampler's order
# (section 6).
# (It only needs to know how many images there are, so the labels stand in for a dataset.)
sampler = DistributedSampler(train.labels, num_replicas=world_size, rank=rank, shuffle=True,
                             seed=args.seed, drop_last=True)
# Every process must take the same number of steps: one with an extra batch would wait forever
# for the others to join its gradient exchange. So each keeps only full batches (05 drops the
# last, smaller batch too).
steps_per_epoch = len(sampler) // local_batch_size
if steps_per_epoch == 0:
    raise common.UserError(f"{len(train.labels)} training images are fewer than one batch of "
                           f"{args.batch_size}; pass a smaller --batch-size.")


# Validation: each process measures its own share (no shuffling; it need not be even), and
# section 5 adds up the results.
val_share = data.Split(val.images[rank::world_size], val.labels[rank::world_size])
val_loader = data.InMemoryLoader(*val_share, 2 * local_batch_size, device, mean, std)
print(f"Data: {len(train.labels):,} training images ({steps_per_epoch} steps per epoch) and "
      f"{len(val.labels):,} validation images, {len(classes)} classes")


# %% 4. The model, wrapped in DistributedDataParallel ---------------------------------------------
# The model, loss, optimizer and schedule are 05's. The optimizer holds the model's own parameters;
# DDP (below) wraps that same model and trains those same parameters.
model = training.make_model(args.model_size, len(classes), device)
# Batch-norm (04_model.py) normalises with the statistics of the batch it sees: under DDP, each
# process's share of it. That is usually fine, but small shares give noisy statistics; then
# SyncBatchNorm computes them over the whole global batch, at the price of one more exchange per
# layer. PyTorch implements it for GPUs only.
if args.sync_batch_norm:
    if device.type != "cuda":
        raise common.UserError("--sync-batch-norm works on CUDA GPUs only; leave it out on the "
                               "CPU.")
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters, new layers

loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
optimizer = training.make_optimizer(model, args.lr, args.weight_decay)
planned_epochs = resumed["config"]["epochs"] if resumed else args.epochs
scheduler = training.make_scheduler(optimizer, total_steps=planned_epochs * steps_per_epoch)
config = training.run_config(args, classes, mean, std, planned_epochs, steps_per_epoch)
# Resuming puts back the weights, the momentum and the schedule's position (05's start_or_resume),
# in every process, so that all continue from the same state.
first_epoch, best_val_accuracy, history = training.start_or_resume(
    resumed, args, config, model, optimizer, scheduler)

# DistributedDataParallel: at the start it copies rank 0's weights to every process. In backward()
# it averages each gradient over all processes (an all_reduce), in buckets of parameters, while the
# rest of the backward pass is still being computed, so the exchange costs little extra time.
# After backward() every process holds the same averaged gradients, its optimizer takes the same
# step, and the copies stay identical without ever sending weights. Batch-norm's running
# statistics are not gradients: each process updates its own from its share, and DDP copies rank
# 0's to the others at the start of each training forward pass. So they differ a little at the
# end of an epoch, when each has updated them once more; rank 0's are the ones saved.
ddp_model = DistributedDataParallel(model,
                                    device_ids=[local_rank] if device.type == "cuda" else None)


# %% 5. Metrics over all processes -----------------------------------------------------------------
def mean_over_processes(mean_loss, accuracy, count):
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


def evaluate_shard(model, loader, count):
    """05's evaluate on this process's share of the validation images, summed over all.

    It is given the plain model, not the DDP wrapper: evaluation exchanges nothing, and the shares
    may differ in batches, which a DDP forward pass (that talks to the others) must not.
    """
    loss, accuracy = training.evaluate(model, loader, loss_fn, device) if count else (0.0, 0.0)
    return mean_over_processes(loss, accuracy, count)


# %% 6. The epochs ---------------------------------------------------------------------------------
if first_epoch > args.epochs:
    print(f"Nothing to do: it already trained {first_epoch - 1} epochs; pass a larger --epochs.")
    sys.exit(0)
# Only rank 0 draws a progress bar: the others' bars would fight over the same terminal lines.
no_output = open(os.devnull, "w")
run_start, saved_epoch = time.perf_counter(), first_epoch - 1
try:
    for epoch in range(first_epoch, args.epochs + 1):
        epoch_start = time.perf_counter()
        # This process's share of the epoch, in the order all processes agree on (section 3).
        sampler.set_epoch(epoch)
        share = torch.tensor(list(sampler))[:steps_per_epoch * local_batch_size]
        # Random crops and flips come from torch's generator: a different seed for every process
        # and epoch, so the processes do not crop alike, and a resumed run draws the same crops.
        torch.manual_seed((args.seed + epoch) * world_size + rank)
        train_loader = data.InMemoryLoader(train.images[share], train.labels[share],
                                           local_batch_size, device, mean, std,
                                           augment=not args.no_augment)
        with contextlib.nullcontext() if is_main else contextlib.redirect_stderr(no_output):
            train_loss, train_accuracy = training.train_one_epoch(
                ddp_model, train_loader, loss_fn, optimizer, device, scheduler,
                mixed_precision=not args.no_mixed_precision,
                description=f"epoch {epoch}/{args.epochs}")
        train_loss, train_accuracy = mean_over_processes(
            train_loss, train_accuracy, steps_per_epoch * local_batch_size)
        val_loss, val_accuracy = evaluate_shard(model, val_loader, len(val_share.labels))
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
               "val_loss": val_loss, "val_accuracy": val_accuracy,
               "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - epoch_start}
        # Every process has the same averaged numbers, so all of them decide alike (and all stop
        # together if the loss has blown up; train_one_epoch's own check of each process's loss
        # agrees too, as the averaged gradients give every process the same weights, NaN or
        # not); only rank 0's line reaches the screen.
        improved, best_val_accuracy = training.record_epoch(history, row, args.epochs,
                                                            best_val_accuracy, len(classes))
        # Rank 0 writes, in 05's layout: the plain model's state_dict (`model`, not ddp_model,
        # whose names all start with "module."), so 06-08 load it as they load 05's.
        if is_main and not args.dry_run:
            training.save_checkpoints(model, optimizer, scheduler, epoch, best_val_accuracy,
                                      history, config, args.checkpoint_dir, improved)
            saved_epoch = epoch
except FloatingPointError as error:  # every process sees the same averaged loss: all stop
    if is_main:
        common.explain(training.divergence_error(error, epoch, args))
    sys.exit(1)
except KeyboardInterrupt:  # Ctrl-C reaches every process; rank 0 says how to go on
    if is_main:
        processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if processes_here == world_size:  # one machine: the command is known
            command = " ".join(["torchrun", "--standalone", f"--nproc_per_node={world_size}",
                                "12_distributed.py"] + [shlex.quote(word) for word in
                                                        sys.argv[1:] if word != "--resume"])
        else:  # several machines: each has its own torchrun command
            command = "the same torchrun command as before, on every machine, with"
        print(f"\nInterrupted. {args.checkpoint_dir / 'last.pt'} holds {saved_epoch} finished "
              f"epoch(s); continue with:\n  {command} --resume" if saved_epoch and not args.dry_run
              else "\nInterrupted before any epoch was saved.", file=sys.stderr)
    sys.exit(130)  # 128 + 2 (SIGINT's number): "stopped by Ctrl-C"


# %% 7. What the run produced ----------------------------------------------------------------------
seconds = time.perf_counter() - run_start
# The proof that DDP kept the copies identical: every process adds up all its weights, and
# all_reduce finds the largest and the smallest of those sums. Equal means equal everywhere.
weight_sum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
largest, smallest = weight_sum.clone(), weight_sum.clone()
dist.all_reduce(largest, op=dist.ReduceOp.MAX)
dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
print(f"Sum of all weights: {largest.item():.6f} in every one of the {world_size} process(es)"
      if largest.item() == smallest.item() else
      f"Warning: the weights differ between processes (sums {smallest.item():.6f} to "
      f"{largest.item():.6f}); DDP should have kept them identical.")
if args.dry_run:
    print(f"Dry run finished in {seconds:.1f} s; no files written. Next: the same command "
          "without --dry-run, with --epochs 10.")
elif is_main:
    print(f"\nBest validation accuracy: {100 * best_val_accuracy:.2f}%   training time: "
          f"{seconds:.0f} s with {world_size} process(es)")
# history.json, the plot and the 06 command, by rank 0. run_in_some also makes every process wait
# until all have finished, and only then leave the group (atexit, above): a process that left
# while another was still sending would make that one fail.
run_in_some(is_main and not args.dry_run, lambda: training.save_history(history, args))
