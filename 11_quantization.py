"""11 Quantization: the trained network in 8-bit integers, smaller and (in batches) faster on a CPU.

What you will learn
    - What int8 quantization is: each float32 number stored as a 1-byte integer plus a scale,
      and why weights get one scale per output channel ("per-channel") rather than one in all.
    - PyTorch's current route, PT2E ("PyTorch 2 export") quantization from the torchao package:
      torch.export -> prepare_pt2e with X86InductorQuantizer (the recipe for x86 CPUs that
      Inductor, torch.compile's back end, can run) -> calibrate -> convert_pt2e.
      (The older torch.ao.quantization "eager mode" API is deprecated and warns when used.)
    - What fusing a convolution with the batch-norm after it means, and why three of this
      network's seven batch-norms cannot be fused.
    - Calibration: running some training images through the model while "observers" (small
      modules that prepare_pt2e inserts) record each activation's range, so that its scale is
      measured rather than guessed.
    - Why the converted model is *slower* until torch.compile lowers it to real int8 kernels,
      and why int8 can still lose on single images on a CPU without 8-bit instructions.
    - What it buys: file size, CPU time per image (batch 1 and 256) and test accuracy, before
      and after, and how often the two models give the same answer.

How to run it
    pip install torchao                          # once: quantization lives in its own package
    python 05_train.py                           # first: training writes checkpoints/best.pt
    python 11_quantization.py                    # then this lesson: about 2 minutes on a 2-core CPU
    python 11_quantization.py --fake-data --dry-run   # after `05_train.py --fake-data`: a check
                                                 # of under a minute, no torch.compile or timing
    python 11_quantization.py --help             # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads the checkpoint that 05_train.py wrote (checkpoints/best.pt, or checkpoints/fake/best.pt
with --fake-data), some training images to calibrate with, and the test images. Writes
outputs/quantization/cifarnet_float32.pt2 and cifarnet_int8.pt2 (both torch.export programs) and
outputs/quantization.json (the numbers), or into --output-dir. A dry run writes nothing.
Quantized inference here is for CPUs: everything runs on the CPU, whatever GPU there is.
"""

# %% Setup ----------------------------------------------------------------------------------------
import io
import json
import logging
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch._inductor.config as inductor_config  # settings of torch.compile's back end

import checkpointing
import common

# A mistake you can fix (no checkpoint yet, torchao not installed) then ends in one plain
# sentence instead of a traceback.
common.report_errors_plainly()

parser = common.make_data_parser(
    "Lesson 11: int8 quantization of the trained network for CPU inference (needs torchao).",
    batch_size=256, seed_help=False,  # nothing here is random
    device_purpose="int8 inference here runs on the CPU: auto and cpu both mean the CPU")
parser.add_argument("--checkpoint", type=Path,
                    help="the checkpoint to quantize (default: checkpoints/best.pt, or "
                         "checkpoints/fake/best.pt with --fake-data)")
parser.add_argument("--calibration-images", type=common.positive_int, default=1024,
                    help="training images run through the model to measure activation ranges")
args = common.parse_args(parser)  # in Jupyter, where there is no command line: the defaults
if args.checkpoint is None:
    args.checkpoint = common.default_checkpoint_dir(args.fake_data) / "best.pt"
if args.device not in ("auto", "cpu"):
    raise common.UserError("int8 inference in this lesson runs on the CPU only; leave out "
                           f"--device {args.device}.")

# torchao is PyTorch's library for quantization and other low-precision formats. It is a
# separate package, not in requirements.txt, because only this lesson needs it.
# (Importing torchao 0.18 with torch 2.14 logs a warning about how torchao registers an Enum
# with torch.compile, meant for torchao's developers; the logging line below hides it.)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
try:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer
except ImportError:
    raise common.UserError(
        "this lesson needs torchao, PyTorch's quantization package, which is not installed: run "
        "`pip install torchao` (each torchao release supports the latest PyTorch releases; "
        "torchao 0.18 works with torch 2.14) and try again.") from None

data = common.import_script("03_data")  # the data pipeline: the same inputs as in training
lesson_start = time.perf_counter()

checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
config = checkpoint["config"]
# The float32 network as 05_train.py left it: eval mode, on the CPU, channels_last layout.
float_model = checkpointing.model_from_checkpoint(checkpoint, device="cpu")
classes = config["classes"]

# Calibration images come from the training part, never from the test set: the test set must
# not shape the model in any way, and quantization scales are part of the model. (The split
# shuffled the training images, so the first 1,024 are a mix of every class.)
train, _, _ = data.load_train_and_val(args.data_dir, args.fake_data)
test_images, test_labels, test_classes = data.load_split(args.data_dir, "test", args.fake_data)
if list(test_classes) != list(classes):
    raise common.UserError(
        f"the checkpoint was trained on the classes {classes}, but the test data has "
        f"{list(test_classes)}; quantize with the same data it was trained on.")
num_calibration = min(args.calibration_images, len(train.images))
if args.dry_run:  # one batch per phase
    num_calibration = min(num_calibration, args.batch_size)
    test_images, test_labels = test_images[:args.batch_size], test_labels[:args.batch_size]
# The same normalisation as in training (03_data.prepare_batch), with the checkpoint's numbers.
calibration_loader = data.InMemoryLoader(train.images[:num_calibration],
                                         train.labels[:num_calibration], args.batch_size, "cpu",
                                         config["mean"], config["std"])
test_loader = data.InMemoryLoader(test_images, test_labels, args.batch_size, "cpu",
                                  config["mean"], config["std"])
print(f"loaded {args.checkpoint}: a {config['model']['size']} CifarNet, epoch "
      f"{checkpoint['epoch']}; {num_calibration:,} calibration images, "
      f"{len(test_labels):,} test images")


def file_size(size):
    """A number of bytes as KiB (1 KiB = 1024 bytes), as text."""
    return f"{size / 1024:,.0f} KiB"


# %% 1. What int8 quantization is, and why per-channel ---------------------------------------------
common.section("1. What int8 quantization is, and why per-channel")
# Quantization stores a tensor's numbers as 8-bit integers q plus a float "scale" (and a "zero
# point" z, the integer that stands for 0.0), and reads them back as  value = scale * (q - z).
# "Symmetric" quantization fixes z at 0, so the range is centred on 0. An int8 holds one of 256 whole
# numbers (-128..127), so the scale is chosen to stretch those 256 steps over the tensor's range:
# a value is rounded to the nearest step, and anything outside the range is clipped to its end.
# A weight then takes 1 byte instead of 4, and the CPU multiplies 8-bit integers, which it can do
# several times more of per instruction than float32 multiplications.
#
# How many scales? One for the whole tensor ("per-tensor") lets the channel with the largest
# weights set the step for all of them; a channel whose weights are all small then uses only a
# few of the 256 steps. One scale per output channel ("per-channel") fits each filter's own
# range, at the cost of a handful of extra floats. Here is the difference on one real layer:
weight = float_model.blocks[2].conv2.weight.detach()  # (out_channels, in_channels, 3, 3)


def quantization_error(tensor, per_channel):
    """The mean |error| of storing `tensor` as symmetric int8 (zero point 0, steps -127..127),
    with one scale per output channel (dimension 0) or one scale for the whole tensor.

    (The quantizer below uses -128..127; leaving out -128 keeps this sketch symmetric.)
    """
    if per_channel:
        largest = tensor.abs().amax(dim=(1, 2, 3), keepdim=True)  # one per output channel
    else:
        largest = tensor.abs().max()
    scale = largest.clamp(min=1e-12) / 127  # the largest |weight| becomes +-127
    rounded = (tensor / scale).round().clamp(-127, 127)  # the int8 numbers
    return (rounded * scale - tensor).abs().mean().item()


per_tensor_error = quantization_error(weight, per_channel=False)
per_channel_error = quantization_error(weight, per_channel=True)
largest_per_channel = weight.abs().amax(dim=(1, 2, 3))
print(f"blocks.2.conv2.weight {tuple(weight.shape)}: the largest |weight| per output channel "
      f"ranges from {largest_per_channel.min().item():.3f} to "
      f"{largest_per_channel.max().item():.3f}")
print(f"mean |error| as int8, one scale for the tensor: {per_tensor_error:.2e}; one per "
      f"channel: {per_channel_error:.2e} ({per_tensor_error / per_channel_error:.1f}x smaller), "
      f"against a mean |weight| of {weight.abs().mean().item():.2e}")
# (The gain is large when the channels' ranges differ widely, as they do after real training;
# after one epoch on --fake-data they are still much alike, and per-channel gains little.)
# Activations (the outputs of each layer, computed anew for every image) get one scale per
# tensor, with a zero point, as uint8 (0..255): per-channel scales there would have to be applied
# inside the convolution's sums, which the fast kernels do not do. Their range cannot be read off
# the model either; it has to be measured on real images: that is calibration (section 3).


# %% 2. Export, and prepare: fusing each convolution with its batch-norm ---------------------------
common.section("2. torch.export, then prepare_pt2e: conv + batch-norm fused, observers added")
# PT2E quantization works on the graph that torch.export records (07_save_load.py, section 5):
# a list of ATen operations with the weights. The example batch has 8 images and dimension 0 is
# declared dynamic, so the graph accepts any batch size (batch 1 and 256 below).
# (.clone(): a slice shares its whole batch's memory, and the saved program keeps its example
# input, so a slice would put all 256 images into the files of section 5.)
example = next(iter(test_loader))[0][:8].clone()
batch_dimension = torch.export.Dim("batch", min=1)
exported = torch.export.export(float_model, (example,), dynamic_shapes=({0: batch_dimension},))


def operation_names(graph_module):
    """The names of the operations that a graph calls, in order, e.g. "quantize_per_tensor".

    torch.export records the model as a torch.fx graph: a list of "nodes", each an input, a
    weight ("get_attr") or a call of one operation ("call_function") on earlier nodes. An
    operation's full name is like "aten.convolution.default"; the middle part is its name.
    """
    names = [str(node.target).split(".") for node in graph_module.graph.nodes
             if node.op == "call_function"]
    return [parts[-2] if len(parts) >= 3 else parts[0] for parts in names]


# A "quantizer" says which operations to quantize and how; X86InductorQuantizer's default
# config is the recipe for x86 CPUs that torch.compile's back end (Inductor) knows how to run:
# int8 weights with per-channel scales, uint8 activations with one scale each.
quantizer = x86_inductor_quantizer.X86InductorQuantizer()
quantizer.set_global(x86_inductor_quantizer.get_default_x86_inductor_quantization_config())
# One layer stays in float32: the first convolution ("stem.0" is its name in the model). It is
# a common choice: with 3 input channels it does little of the work, and its input, the image,
# is what every later layer builds on. Here it is also a measured necessity: with torch 2.14 and
# torchao 0.18, torch.compile's int8 version of this layer gave other answers than the converted
# model it was compiled from (79% test accuracy instead of 85%), so section 7 checks the two
# against each other. None as its config means "do not quantize this module".
quantizer.set_module_name_qconfig("stem.0", None)
graph_module = exported.module()
batch_norms_before = sum("batch_norm" in name for name in operation_names(graph_module))
# prepare_pt2e does two things.
# 1 It fuses ("folds") each batch-norm into the convolution straight before it. In eval mode a
#   batch-norm is a fixed per-channel multiply-and-add,  y = a * x + b,  and a convolution is
#   linear, so the pair is one convolution with each output channel's filter multiplied by a and
#   a bias of b: the same function, one operation less, and one tensor to quantize instead of
#   two. That only works when nothing stands between the two. In 04_model.py's ConvBlock the
#   first convolution is followed by a max-pool and only then by norm1, and a per-channel
#   multiply does not pass through a max where a is negative (it turns maxima into minima), so
#   those three batch-norms stay in the graph, in float.
# 2 It inserts an "observer" after every tensor the quantizer marked: a small module that
#   watches the values flowing through and remembers their range. (They are all named
#   activation_post_process_<n>, also those that watch a weight.)
prepared = prepare_pt2e(graph_module, quantizer)
batch_norms_after = sum("batch_norm" in name for name in operation_names(prepared))
observer_inputs = [node.args[0] for node in prepared.graph.nodes if node.op == "call_module"
                   and node.target.startswith("activation_post_process")]
weight_observers = sum(1 for node in observer_inputs if node.op == "get_attr")
print(f"batch-norms in the exported graph: {batch_norms_before}; after prepare_pt2e: "
      f"{batch_norms_after} (the {batch_norms_before - batch_norms_after} that follow a "
      "convolution directly were folded into it)")
print(f"observers inserted: {len(observer_inputs)}: {weight_observers} on weights (6 "
      f"convolutions and the linear layer), {len(observer_inputs) - weight_observers} on "
      "activations (the inputs and outputs of the quantized operations)")


# %% 3. Calibration -------------------------------------------------------------------------------
common.section("3. Calibration: measure the range of every activation")
# Run training images through the prepared model. It computes in float32 as before; the observers
# record what they see. Which range is kept matters: the largest value ever seen lets one outlier
# stretch the steps for everything else, so X86InductorQuantizer's activation observer keeps a
# histogram and picks the range that loses least. A thousand images is plenty for a network this
# size; too few, or unrepresentative ones (all of one class), give ranges that clip real images.
start = time.perf_counter()
with torch.no_grad():
    for images, _ in calibration_loader:
        prepared(images)
print(f"{num_calibration:,} calibration images in {time.perf_counter() - start:.1f} s")


# %% 4. Convert -----------------------------------------------------------------------------------
common.section("4. convert_pt2e: int8 weights, and quantize/dequantize pairs")
# convert_pt2e turns each observer's range into a scale and zero point, stores each weight as
# int8, and writes into the graph a "quantize" (float -> int8) and a "dequantize" (int8 -> float)
# at every place that will be 8-bit. Note what the result is NOT: it does not compute in int8.
# Each convolution still gets float inputs (dequantized) and runs in float32; the pairs only
# describe where the int8 rounding happens. So the converted model already gives the int8
# model's answers (up to the last bits of rounding), and a back end can later replace each
# "dequantize -> convolution -> quantize" with one int8 convolution (section 6).
# (On this network convert takes half a minute, nearly all of it in a step meant for
# quantization-aware training, which looks for conv + batch-norm pairs to fold by exporting
# dozens of small patterns. It finds none here, but it runs whenever a batch-norm is left in the
# graph, as the three of section 2 are.)
start = time.perf_counter()
quantized_model = convert_pt2e(prepared)
print(f"converted in {time.perf_counter() - start:.1f} s")
int8_weights = {name: tensor for name, tensor in quantized_model.state_dict().items()
                if tensor.dtype == torch.int8}
print(f"{len(int8_weights)} weights stored as int8, e.g. a convolution's "
      f"{tuple(next(iter(int8_weights.values())).shape)}")
# The first quantize in the graph is the float stem's output, the input of the first int8
# convolution: its scale and zero point map the range calibration saw (GELU's outputs: a little
# below 0 up to a few units) onto uint8's 0..255. A quantize node's arguments are (the tensor,
# scale, zero point, lowest integer, highest integer, integer type).
first_quantize = next(node for node in quantized_model.graph.nodes
                      if str(node.target).startswith("quantized_decomposed.quantize_per_tensor"))
scale, zero_point, low, high = first_quantize.args[1:5]
print(f"the first int8 convolution's input: scale {scale:.4f}, zero point {zero_point}, so "
      f"{low}..{high} covers {scale * (low - zero_point):.2f} to "
      f"{scale * (high - zero_point):.2f}")
# Each activation is quantized once, and dequantized where it is used (an activation used by
# two operations gets two dequantizes); each int8 weight gets a dequantize too.
names = operation_names(quantized_model)
print(f"in the graph: {sum(name.startswith('quantize_per') for name in names)} quantize and "
      f"{sum(name.startswith('dequantize_per') for name in names)} dequantize operations")


# %% 5. File size ---------------------------------------------------------------------------------
common.section("5. File size: int8 weights take a quarter of the space")
# convert_pt2e leaves the float32 weights as unused attributes of the graph module. Drop them,
# or the saved file would hold both.
used_attributes = {node.target for node in quantized_model.graph.nodes if node.op == "get_attr"}
for name, _ in list(quantized_model.named_parameters()) + list(quantized_model.named_buffers()):
    if name not in used_attributes:
        owner, _, attribute = name.rpartition(".")
        delattr(quantized_model.get_submodule(owner), attribute)


def saved_bytes(program):
    """The bytes of torch.export.save(program), made in memory."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a note about how it groups tensors; nothing to act on
        warnings.simplefilter("ignore", UserWarning)
        torch.export.save(program, buffer)
    return buffer.getvalue()


# Both models as torch.export programs, the deployable format of 07_save_load.py: the float one
# recorded above, and the quantized graph exported again (convert_pt2e returns a GraphModule,
# and torch.export.save takes an ExportedProgram).
quantized_program = torch.export.export(quantized_model, (example,),
                                        dynamic_shapes=({0: batch_dimension},))
float_file = saved_bytes(exported)
int8_file = saved_bytes(quantized_program)
print(f"float32 program: {file_size(len(float_file))} | int8 program: "
      f"{file_size(len(int8_file))} ({len(float_file) / len(int8_file):.1f}x smaller)")
# Not 4x: scales, zero points, biases and the three unfused batch-norms stay float32, and each
# file also holds the graph and the example batch of 8 images (96 KiB) it was exported with.
float_path = args.output_dir / "quantization" / "cifarnet_float32.pt2"
int8_path = args.output_dir / "quantization" / "cifarnet_int8.pt2"
if not args.dry_run:
    common.write_atomically(float_path, lambda file: file.write(float_file))
    common.write_atomically(int8_path, lambda file: file.write(int8_file))
    print(f"saved {float_path} and {int8_path}")


# %% 6. Lowering with torch.compile, and speed ---------------------------------------------------
common.section("6. The speed appears only after torch.compile lowers the graph")
# Up to here the int8 model is a float model with extra rounding steps: slower than the original.
# torch.compile's back end, Inductor, "lowers" the graph to machine code: it recognises each
# dequantize -> convolution -> quantize pattern and calls one int8 convolution of oneDNN (Intel's
# library of fast CPU kernels, which PyTorch ships) for it, and fuses the remaining float steps
# into loops of its own. Its "freezing" setting tells it the weights will never change, so it
# can fold them into the compiled code and repack them once into the layout the int8 kernels
# read fastest; the int8 convolutions need it. The first call of each batch shape compiles
# (seconds); every later call runs the compiled code.


def seconds_per_image(model, batch_size, repeats):
    """The median time of `repeats` calls of model on one batch, divided by the batch size.

    The median, not the mean: a busy machine makes a few calls slow, and those should not count.
    Random images are as good as real ones here: the work does not depend on the pixel values.
    """
    images = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        model(images)  # the first call compiles, or fills caches: not timed
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / batch_size


latency = {}
if args.dry_run:
    print("Dry run: torch.compile and the timings are skipped (they take a minute or two).")
    float_predictor, int8_predictor = float_model, quantized_model
else:
    # Freezing is set in Inductor's config, as torchao's guide does: passing it to one
    # torch.compile call as options={"freezing": True} fails for the int8 convolutions here.
    inductor_config.freezing = True
    # Two notes that PyTorch 2.14 prints while compiling, addressed to its own developers (one
    # about how it copies the int8 weights' zero points, one that no CUDA runtime was found
    # on a machine without a GPU); nothing to act on here.
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # dynamic=False: one compiled version per batch shape, each specialised to its size.
    float_predictor = torch.compile(float_model, dynamic=False)
    int8_predictor = torch.compile(quantized_model, dynamic=False)
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()} instructions, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'model':34}{'batch 1':>14}{'batch 256':>14}   (milliseconds per image)")
    for label, model in [("float32, eager", float_model), ("int8 quantize/dequantize, eager",
                                                          quantized_model),
                         ("float32, torch.compile", float_predictor),
                         ("int8, torch.compile", int8_predictor)]:
        latency[label] = {batch_size: seconds_per_image(model, batch_size, repeats)
                          for batch_size, repeats in [(1, 100), (256, 10)]}
        print(f"{label:34}{1000 * latency[label][1]:>14.3f}{1000 * latency[label][256]:>14.3f}")
    for batch_size in (1, 256):
        ratio = latency["float32, torch.compile"][batch_size] / latency["int8, torch.compile"][
            batch_size]
        print(f"batch {batch_size}: int8 is " + (f"{ratio:.2f}x as fast as" if ratio >= 1 else
                                                 f"{1 / ratio:.2f}x slower than")
              + " compiled float32")
    # How much int8 gains depends on the CPU. Recent Intel and AMD CPUs have instructions that
    # multiply-add 8-bit integers in one step (AVX512-VNNI, AVX-VNNI, and Intel's AMX): there
    # int8 can run several times faster than float32. A CPU with only AVX2 emulates them with
    # more steps, and a network as small as this one spends much of its time outside the
    # convolutions (batch-norm, GELU, pooling, quantize steps), so expect far less there. On a
    # 2-core AVX2 machine, int8 was 1.26x (2 threads) to 1.46x (1 thread) as fast as compiled
    # float32 in batches of 256; on single images it was level (1 thread) or 2x slower (2
    # threads), where the extra quantize steps cost more than the smaller multiplications save.
    # So measure on the CPU you will deploy on, at the batch size and thread count you will use.


# %% 7. Accuracy, before and after -----------------------------------------------------------------
common.section("7. Test accuracy before and after, and how often the answers agree")


def predict(model, loader):
    """The predicted class of every image of `loader`, in order, as an int64 tensor."""
    with torch.no_grad():
        return torch.cat([model(images).argmax(dim=1) for images, _ in loader])


float_predictions = predict(float_predictor, test_loader)
int8_predictions = predict(int8_predictor, test_loader)
float_accuracy = (float_predictions == test_labels).float().mean().item()
int8_accuracy = (int8_predictions == test_labels).float().mean().item()
agreement = (float_predictions == int8_predictions).float().mean().item()
print(f"test accuracy on {len(test_labels):,} images: float32 {100 * float_accuracy:.2f}%, "
      f"int8 {100 * int8_accuracy:.2f}% ({100 * (int8_accuracy - float_accuracy):+.2f} points)")
# (One image is 0.01 points of 10,000: a difference of a few hundredths, either way, is noise.)
print(f"the two models give the same answer for {100 * agreement:.2f}% of the images "
      f"({(float_predictions != int8_predictions).sum().item()} differ)")
if config.get("data") == "fake":
    print("(Random images with random labels: accuracy means nothing here; the agreement does.)")
if not args.dry_run:
    # Lowering is a translation, and translations can be wrong: compare the compiled int8 model
    # with the converted model it came from (the reference: same rounding, plain PyTorch
    # operations). They should agree on all but a few images whose top two scores are a
    # rounding error apart.
    lowered_agreement = (predict(quantized_model, test_loader) == int8_predictions).float()
    lowered_agreement = lowered_agreement.mean().item()
    print(f"torch.compile's int8 model and the converted model agree on "
          f"{100 * lowered_agreement:.2f}% of the images")
    if lowered_agreement < 0.99:
        print("Warning: that is too few; the compiled int8 model is not computing what the "
              "converted one does. Try keeping more layers in float (section 2) or another "
              "torch/torchao version, and trust the converted model's answers.")
# What to look at: a drop of a few tenths of a point is the usual price of post-training int8.
# Larger drops come from too little or unrepresentative calibration data, or from layers that
# do not tolerate 8 bits; the fixes are better calibration, keeping those layers in float
# (quantizer.set_module_name_qconfig(name, None), as for the stem), or quantization-aware
# training (prepare_qat_pt2e),
# which trains with the rounding in place so the weights learn to live with it.

if args.dry_run:
    print("\nDry run: one batch per phase, no torch.compile, so no files were written.")
    print("Next: the full lesson, python 11_quantization.py (after a real 05_train.py run).")
else:
    results = {
        "checkpoint": str(args.checkpoint), "epoch": checkpoint["epoch"],
        "model_size": config["model"]["size"], "data": config.get("data"),
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "calibration_images": num_calibration,
        "file_bytes": {"float32": len(float_file), "int8": len(int8_file)},
        "milliseconds_per_image": {label: {f"batch_{size}": 1000 * seconds
                                           for size, seconds in by_size.items()}
                                   for label, by_size in latency.items()},
        "test_images": len(test_labels),
        "test_accuracy": {"float32": float_accuracy, "int8": int8_accuracy},
        "prediction_agreement": agreement,
        "compiled_matches_converted": lowered_agreement,
    }
    results_path = args.output_dir / "quantization.json"
    text = json.dumps(results, indent=2)
    common.write_atomically(results_path, lambda file: file.write(text.encode()))
    print(f"\nNumbers: {results_path}")
    print(f"To use the int8 program elsewhere: `import torchao` (it defines the quantize "
          f"operations), then torch.export.load('{int8_path}').module() is a model to call.")
    print("Next: python 12_distributed.py, training on several processes or GPUs.")
print(f"Finished in {time.perf_counter() - lesson_start:.0f} s.")
