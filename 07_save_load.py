"""07 Saving and loading: state_dicts, whole models, checkpoints, safe loading and export.

What you will learn
    - The state_dict, the recommended way to save a model: an ordered dict from each parameter's
      and buffer's name to its tensor. You save the numbers; your code rebuilds the network.
    - Why `torch.save(model)` (the whole object) is fragile: the file names the class by where
      its code lives, and loading it means letting pickle run code.
    - What a full training checkpoint holds (model, optimizer, scheduler, epoch, history,
      config) and how `python 05_train.py --resume` uses it to carry on where it stopped.
    - Why `torch.load(..., weights_only=True)` is the safe way to load, shown on a harmless file
      that it refuses.
    - Exporting the trained network with `torch.export`, so that it runs without this project's
      Python code: saved, reloaded and checked against the original on a batch.
    - How big each of these files is, and why.

How to run it
    python 05_train.py                          # first: training writes checkpoints/best.pt
    python 07_save_load.py                      # then this lesson, under a minute on a CPU
    python 07_save_load.py --checkpoint checkpoints/last.pt --device cpu
    python 07_save_load.py --help               # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads the checkpoint that 05_train.py wrote (checkpoints/best.pt unless you pass --checkpoint).
Writes three files into outputs/export/ (or --output-dir): cifarnet_state_dict.pt (the weights),
cifarnet_whole_model.pt (the pickled model object) and cifarnet_exported.pt2 (torch.export).
"""

# %% Setup ----------------------------------------------------------------------------------------
import io
import logging
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import checkpointing
import common

# Plumbing, down to section 1, which you can skip: a mistake you can fix (no checkpoint yet, a
# --device this machine lacks) ends in one plain sentence instead of a traceback; then the
# command-line flags, the device, the checkpoint and two small helpers.
common.report_errors_plainly()

parser = common.make_parser(
    "Lesson 7: saving, loading, resuming and exporting a trained model.",
    device_purpose="where the reloaded weights and the resumed model go (the export itself "
                   "always runs on the CPU)", seed_help=False)
parser.add_argument("--checkpoint", type=Path, default=common.CHECKPOINT_DIR / "best.pt",
                    help="the checkpoint written by 05_train.py")
parser.add_argument("--output-dir", type=Path, default=common.OUTPUT_DIR / "export",
                    help="where the saved and exported files are written")
args = common.parse_args(parser)  # in Jupyter, where there is no command line: the defaults

device = common.get_device(args.device)  # chosen now, so a wrong --device fails straight away
# checkpointing.load_checkpoint is torch.load(path, weights_only=True) plus a plain sentence for
# each way it can fail (no file yet, a truncated file, a dict without what 05_train.py saves, ...).
# Section 4 shows why weights_only. for_resume: also check what resuming reads (section 3).
checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu", for_resume=True)

torch.manual_seed(0)  # the random test batch below is the same in every run


def file_size(path):
    """A file's size in KiB or MiB (1 KiB = 1024 bytes), as text."""
    size = Path(path).stat().st_size
    return f"{size / 1024:.1f} KiB" if size < 1024**2 else f"{size / 1024**2:.2f} MiB"


def max_difference(first, second):
    """The largest absolute difference between two tensors, as a Python float."""
    return (first.float().cpu() - second.float().cpu()).abs().max().item()


# A batch of 8 random "images" to compare models on. Two models that compute the same function
# give the same outputs on any input, so random numbers test that as well as real photos would.
batch = torch.randn(8, 3, 32, 32)  # the network takes 32x32 colour images
config = checkpoint["config"]
model_module = common.import_script("04_model")  # where the network, CifarNet, is defined
build_model = model_module.build_model
print(f"loaded {args.checkpoint} ({file_size(args.checkpoint)}): a {config['model']['size']} "
      f"CifarNet with {config['model']['num_classes']} classes, saved after epoch "
      f"{checkpoint['epoch']}")


# %% 1. The state_dict: a model's numbers, by name ------------------------------------------------
common.section("1. The state_dict: a model's numbers, by name")
# A model's state_dict is an OrderedDict that maps the name of every parameter and buffer to its
# tensor; the names follow the attributes of 04_model.py ("blocks.0.conv1.weight" is the weight
# of conv1 in the first block). 05_train.py saved it under the checkpoint's "model" key. Loading
# weights is always two steps: build the network with your code, then copy the tensors in.
model = build_model(**config["model"])  # fresh, random weights
# load_state_dict is strict: every name must be there, with the same shape, or it raises a
# RuntimeError (here it would mean that the checkpoint was edited, or written by another
# version of 04_model.py). What it returns lists the names that were missing or left over.
try:
    result = model.load_state_dict(checkpoint["model"])  # now the trained ones
except RuntimeError:
    raise common.UserError(f"the weights in {args.checkpoint} do not fit the model its config "
                           f"names ({config['model']}); was it written by another version of "
                           "04_model.py? Train again with `python 05_train.py`.") from None
model.eval()  # loading weights does not change the mode; inference needs eval (see below)
print("load_state_dict returned:", result)  # here no names missing or left over

state_dict = model.state_dict()
print(f"model.state_dict() is an {type(state_dict).__name__} of {len(state_dict)} tensors; "
      "the first five and the last one:")
names = list(state_dict)
for name in names[:5] + names[-1:]:
    tensor = state_dict[name]
    print(f"  {name:36} {str(tuple(tensor.shape)):16} {tensor.dtype}")
# Two kinds of entries. Parameters are what the optimizer trains (weights, biases). Buffers are
# numbers the model keeps but does not learn by gradient: here batch-norm's running mean and
# variance of each channel, and a count of the batches it has seen. Eval mode uses these running
# statistics instead of the current batch's, which is why a model must be put in eval mode
# (model.eval()) before it predicts, and why the buffers are saved with the parameters.
parameter_names = {name for name, _ in model.named_parameters()}
buffer_names = [name for name in state_dict if name not in parameter_names]
print(f"{len(parameter_names)} parameters and {len(buffer_names)} buffers, "
      f"such as {buffer_names[0]!r}")

# Save just the state_dict: a file of tensors and names, nothing else. torch.save takes a path
# or an open file; we give it a file from common.write_atomically, which writes into a temporary
# file and renames it over the old one only once it is complete. A full disk or a crash then
# leaves the previous good file (or none), never a truncated one; a failure is one sentence.
state_dict_path = args.output_dir / "cifarnet_state_dict.pt"
common.write_atomically(state_dict_path, lambda file: torch.save(model.state_dict(), file))
print(f"saved the state_dict to {state_dict_path} ({file_size(state_dict_path)})")

# Load it back, onto --device. map_location says where the tensors go: a file saved on a GPU
# remembers "cuda:0", and without map_location it could not be loaded on a machine without one.
reloaded = build_model(**config["model"]).to(device)
reloaded.load_state_dict(torch.load(state_dict_path, map_location=device, weights_only=True))
reloaded.eval()
with torch.no_grad():  # no training here, so no graph for backward (02_autograd.py)
    original_output = model(batch)
    reloaded_output = reloaded(batch.to(device))
# The same weights on the same CPU give exactly the same numbers (a difference of 0). A GPU adds
# numbers up in another order, and an NVIDIA GPU may compute convolutions in TensorFloat-32 (a
# faster format that keeps about 3 significant digits of each number, where float32 keeps 7),
# so there expect a difference of up to about 1e-3: the same model, not the same rounding.
print(f"original (cpu) vs reloaded ({device.type}): max |difference| of the outputs "
      f"{max_difference(original_output, reloaded_output):.2e}")

# The weights only fit the network they came from. Strict loading catches a mismatch, for
# example a classifier with one more class; that is why the checkpoint's config records the
# model's size and number of classes.
wrong_model = build_model(config["model"]["size"],
                          num_classes=config["model"]["num_classes"] + 1)
try:
    wrong_model.load_state_dict(state_dict)
except RuntimeError as error:
    # The message's first line is a heading; the second says what does not fit.
    print("into a model with one more class:", str(error).splitlines()[1].strip())


# %% 2. Saving the whole model, and why not to ----------------------------------------------------
common.section("2. Saving the whole model with torch.save(model), and why not to")
# torch.save(model) pickles the whole object. It looks simpler: no need to rebuild the network
# before loading. But pickle does not store a class's code, only where to import it from: the
# module's name and the class's name (type(model).__module__ and type(model).__qualname__).
whole_model_path = args.output_dir / "cifarnet_whole_model.pt"
common.write_atomically(whole_model_path, lambda file: torch.save(model, file))
print(f"saved the whole model to {whole_model_path} ({file_size(whole_model_path)}); it refers "
      f"to its class as {type(model).__module__}.{type(model).__qualname__}")
# So the file is tied to this source code. Here a fresh Python that cannot import 04_model tries
# to load it: it starts in the system's temporary folder, and -E makes it ignore PYTHONPATH, so
# it finds no 04_model.py.
load_command = f"import torch; torch.load({str(whole_model_path.resolve())!r}, weights_only=False)"
attempt = subprocess.run([sys.executable, "-E", "-c", load_command],
                         cwd=tempfile.gettempdir(), capture_output=True, text=True)
print("loading it where 04_model cannot be imported fails:",
      attempt.stderr.strip().splitlines()[-1])
# Rename 04_model.py or move CifarNet to another file, and loading fails the same way even in
# this project. Edit the class (rename an attribute) and the loaded object no longer matches the
# code. And loading means letting pickle import and call whatever the file names, which needs
# weights_only=False, the unsafe setting of section 4. Do it only with a file you made yourself,
# as here, where 04_model can be imported:
whole_model = torch.load(whole_model_path, map_location="cpu", weights_only=False)
with torch.no_grad():
    difference = max_difference(model(batch), whole_model(batch))
print(f"loaded it back as a {type(whole_model).__name__}; "
      f"max |difference| of the outputs {difference:.2e}")
# A state_dict has none of these problems: it holds only tensors and names, any version of your
# code with the same layers can load it, and weights_only=True accepts it.


# %% 3. A full checkpoint, and resuming training --------------------------------------------------
common.section("3. A full checkpoint, and resuming training")
# To continue training later (after a crash, or on another machine) the weights are not enough.
# 05_train.py saves a dict with everything the training loop needs to carry on.
print("the checkpoint's keys:", list(checkpoint))
print(f"  epoch: {checkpoint['epoch']} (epochs finished)")
print(f"  best_val_accuracy: {checkpoint['best_val_accuracy']:.4f}")
history = checkpoint["history"]
print(f"  history: one list per measure ({', '.join(history)}), "
      f"one entry per epoch, {len(history['epoch'])} so far")
# An optimizer's state_dict has two parts: "state", what it keeps for each parameter (SGD's
# momentum buffer), and "param_groups", its settings. 05_train.py uses two groups, so that
# weight decay applies to the weights of the convolutions and the linear layer only.
optimizer_state = checkpoint["optimizer"]
print(f"  optimizer: a momentum buffer for each of {len(optimizer_state['state'])} parameters, "
      f"and {len(optimizer_state['param_groups'])} parameter groups:")
for number, group in enumerate(optimizer_state["param_groups"]):
    print(f"    group {number}: {len(group['params'])} parameters, lr={group['lr']:.4g}, "
          f"momentum={group['momentum']}, nesterov={group['nesterov']}, "
          f"weight_decay={group['weight_decay']}")
# The scheduler's state_dict is what 05's schedule (a LambdaLR) keeps. "last_epoch" counts the
# calls of scheduler.step(); 05 calls it once per batch, so despite its name it counts batches.
# "lr_lambdas" would hold the function that gives the learning rate at each step, but a function
# is code, and code is not saved: hence None, one per parameter group. The entries not printed
# (such as "_get_lr_called_within_step") are PyTorch's own bookkeeping.
scheduler_state = checkpoint["scheduler"]
print(f"  scheduler: {len(scheduler_state)} entries, of which these matter:")
for key, meaning in [("last_epoch", "scheduler.step() calls so far: batches, here"),
                     ("base_lrs", "each group's peak learning rate"),
                     ("_last_lr", "each group's learning rate now"),
                     ("lr_lambdas", "the schedule's function: code, which is not saved")]:
    value = scheduler_state[key]
    if key == "_last_lr":
        value = [float(f"{lr:.4g}") for lr in value]  # 0.00030000000000000024 -> 0.0003
    print(f"    {key}: {value} ({meaning})")
print("  config:")
for key, value in config.items():
    print(f"    {key}: {value}")

# Resuming, the way `python 05_train.py --resume` does it:
#   1 build the model, the optimizer and the scheduler exactly as a fresh run would,
#   2 load each one's state_dict, which overwrites the fresh starting values,
#   3 go on from the next epoch, keeping the history and the best accuracy so far.
# Forget the optimizer and SGD's momentum restarts from zero; forget the scheduler and the
# learning rate jumps back to the start of its schedule. Either makes the resumed run differ.
training = common.import_script("05_train")  # to build the optimizer and schedule as it does
resumed_model = build_model(**config["model"]).to(device)
# The same optimizer as 05_train.py, made by its own function: optimizer.load_state_dict checks
# that the parameter groups match in number and size, and refuses the state otherwise.
optimizer = training.make_optimizer(resumed_model, config["lr"], config["weight_decay"])
# The scheduler's state_dict holds where the schedule is, not its function (lr_lambdas, above).
# So the scheduler is rebuilt with the same function and the same length as in training:
# epochs x batches per epoch, both recorded in the config.
total_steps = config["epochs"] * config["steps_per_epoch"]
scheduler = training.make_scheduler(optimizer, total_steps=total_steps)
try:
    resumed_model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])  # also moves the momentum onto the device
    scheduler.load_state_dict(checkpoint["scheduler"])
except (RuntimeError, ValueError, KeyError, TypeError):  # an edited or foreign checkpoint
    raise common.UserError(f"{args.checkpoint} does not fit the model and optimizer it names; "
                           "train again with `python 05_train.py`.") from None
start_epoch = checkpoint["epoch"] + 1
history = checkpoint["history"]
best_val_accuracy = checkpoint["best_val_accuracy"]
resumed_model.train()  # training mode again: batch-norm uses batch statistics and updates its own
num_epochs = config["epochs"]
if start_epoch <= num_epochs:
    print(f"resumed on {device.type}: the next epoch is {start_epoch} of {num_epochs}, "
          f"the learning rate goes on from {scheduler.get_last_lr()[0]:.4g} "
          f"(step {scheduler.last_epoch} of {total_steps})")
else:
    print(f"this run had finished all its {num_epochs} epochs; a resumed run would have "
          f"nothing left to do (the learning rate ended at {scheduler.get_last_lr()[0]:.4g})")
# The training loop would now run `for epoch in range(start_epoch, num_epochs + 1):`, appending
# to history and saving a new checkpoint after each epoch, exactly as in 05_train.py. (05 also
# re-seeds the random generators at each epoch, so a resumed run draws the same batches as an
# uninterrupted one.)


# %% 4. Loading safely: weights_only=True ---------------------------------------------------------
common.section("4. Loading safely: weights_only=True")
# A .pt file is a pickle, and unpickling can call any function the file names: that is how
# section 2 rebuilt a CifarNet. A file from the internet could name os.system instead. With
# weights_only=True, torch.load only accepts tensors, numbers, strings, lists, dicts and a few
# other plain types, and refuses anything else before it runs. It has been torch.load's default
# since PyTorch 2.6, but say it anyway: the code then means the same on every version.


class Greeting:
    """A harmless stand-in for a malicious object: unpickling it calls print()."""

    def __reduce__(self):
        # __reduce__ tells pickle how to rebuild an object: "call this function with these
        # arguments". A real attack would put a dangerous function here.
        return print, ("    >>> this line was printed by torch.load: loading the file ran code",)


def refusal_reason(error):
    """The part of torch.load's long weights_only message that names what it refused."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if match:
        return f"the file asks to call or import {match.group(1)}, which is not allowed"
    return str(error).strip().splitlines()[-1]  # other PyTorch versions word it differently


untrusted_file = io.BytesIO()  # a file in memory; torch.save and torch.load accept those too
torch.save({"weights": torch.zeros(3), "greeting": Greeting()}, untrusted_file)
untrusted_file.seek(0)
try:
    torch.load(untrusted_file, weights_only=True)
except pickle.UnpicklingError as error:
    print("weights_only=True refused the file:", refusal_reason(error))
untrusted_file.seek(0)
print("weights_only=False loads it, and runs what it asks for:")
torch.load(untrusted_file, weights_only=False)  # never do this with a file you did not make

# The whole model of section 2 is refused for the same reason: it asks to import CifarNet.
try:
    torch.load(whole_model_path, weights_only=True)
except pickle.UnpicklingError as error:
    print("the whole-model file with weights_only=True:", refusal_reason(error))
# The checkpoint and the state_dict hold only data, so weights_only=True loads them, as every
# script of this project does. If you trust a file that holds one of your own classes, allow
# just that class: `with torch.serialization.safe_globals([MyClass]): torch.load(...)`.


# %% 5. Exporting for deployment: torch.export ----------------------------------------------------
common.section("5. Exporting for deployment: torch.export")
# Both ways above need this project's Python code (04_model.py) to rebuild the network. For
# deployment you want a file that holds the computation itself. torch.export runs forward() once
# on an example batch and records every tensor operation into a graph, with the weights.
#
# The export runs on the CPU, where results are exact and repeatable. The model must be in eval
# mode: the graph records what forward() did, so batch-norm stays in eval mode for good.
#
# The example batch has 8 images, but the exported program should accept any batch size, so we
# declare dimension 0 dynamic with a named Dim.
export_model = model.cpu().eval()
batch_size = torch.export.Dim("batch", min=1)
exported = torch.export.export(export_model, (batch,), dynamic_shapes=({0: batch_size},))
# The example needs at least 2 images. A dimension of size 1 is a special case for PyTorch (it
# can broadcast, so code may take another path for it), and export fixes such a dimension at 1;
# with the Dim saying "any size", it then refuses to export at all:
logging.disable(logging.ERROR)  # older PyTorch (2.6) also logs the failure with a traceback
try:
    torch.export.export(export_model, (batch[:1],), dynamic_shapes=({0: batch_size},))
except Exception as error:  # torch._dynamo.exc.UserError, and a long message
    print("exporting from an example batch of 1 fails:", str(error).split(" For more")[0])
logging.disable(logging.NOTSET)
# (Without dynamic_shapes the same export works, but the program accepts batches of 1 only.)
# Each node of the graph that calls an ATen operation names it, e.g. "aten.conv2d.default".
operations = sorted({str(node.target) for node in exported.graph.nodes
                     if node.op == "call_function" and str(node.target).startswith("aten.")})
print("the exported graph runs:", ", ".join(operations))
# Those are ATen operations, PyTorch's own library of tensor functions: no CifarNet class, no
# Python code of ours. The .pt2 file holds that graph and the weights.
exported_path = args.output_dir / "cifarnet_exported.pt2"
common.write_atomically(exported_path, lambda file: torch.export.save(exported, file))
print(f"saved the exported program to {exported_path} ({file_size(exported_path)})")

# Loading it needs only PyTorch, not 04_model.py. .module() turns the program back into
# something you call like a model. It cannot switch to train mode: the graph is fixed.
loaded_program = torch.export.load(exported_path)
exported_model = loaded_program.module()
with torch.no_grad():
    original_output = export_model(batch)
    exported_output = exported_model(batch)
    difference = max_difference(original_output, exported_output)
    single_difference = max_difference(export_model(batch[:1]), exported_model(batch[:1]))
print(f"exported vs original, a batch of {len(batch)}: max |difference| {difference:.2e} "
      "(must be below 1e-5)")
print(f"exported vs original, a batch of 1: max |difference| {single_difference:.2e}")
# Where the .pt2 file goes next:
#   - Python services load it with torch.export.load, as above, or compile it with torch.compile.
#   - AOTInductor compiles it ahead of time into a package that C++ can run without Python
#     (torch._inductor.aoti_compile_and_package), and ExecuTorch runs it on phones.
# Two other routes you will meet:
#   - TorchScript (torch.jit.script / torch.jit.trace, then torch.jit.save) was the way to do this
#     before torch.export. It still exists but is deprecated: recent PyTorch releases warn when
#     you call it. Prefer torch.export for new code.
#   - ONNX, a format that many runtimes read (ONNX Runtime, TensorRT, OpenVINO). With the onnx and
#     onnxscript packages installed (not needed by this project), one line writes it:
#       torch.onnx.export(export_model, (batch,), "cifarnet.onnx", dynamo=True)
#     and onnxruntime runs it with no PyTorch at all.


# %% 6. File sizes --------------------------------------------------------------------------------
common.section("6. File sizes")
# A float32 number takes 4 bytes, so the weights alone set the size of every file.
weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in state_dict.values())
print(f"the model's parameters and buffers take {weight_bytes / 1024**2:.2f} MiB in memory")
for label, path in [("state_dict", state_dict_path), ("whole model", whole_model_path),
                    ("exported program", exported_path), ("full checkpoint", args.checkpoint)]:
    print(f"  {label:17} {file_size(path):>10}  {path}")
# What to look at: the state_dict, the whole model and the exported program are all about the
# size of the weights (plus a little structure). The checkpoint is about twice that, because
# SGD keeps one momentum tensor per parameter, as large as the parameter itself.


# %% Summary ---------------------------------------------------------------------------------------
common.section("Summary: what you just did")
print("""\
- saved a model's state_dict and loaded it into a model built by code: the recommended way
- saw why torch.save(model) ties the file to where the class's code lives
- read a full checkpoint (model, optimizer, scheduler, epoch, ...) and restored it as --resume does
- watched weights_only=True refuse a file that would have run code when loaded
- exported the network with torch.export: a .pt2 program that runs without 04_model.py""")
print("\nNext, 08_predict.py: classify your own images with the trained model.")
