"""11 Quantization: the trained network in 8-bit integers, smaller and (in batches) faster on a CPU.

What you will learn
    - The idea, on a handful of numbers: each float32 number (4 bytes) kept as one byte, a whole
      number q, plus two numbers shared by the whole tensor, a "scale" (the size of one step) and
      a "zero point" (the q that stands for 0.0): value = scale * (q - zero_point).
    - Why a layer's weights get one scale per output channel ("per-channel"), on a real layer.
    - The four steps that quantize a whole network with torchao, PyTorch's quantization package:
      record its computation as a graph (torch.export), prepare it (mark what becomes 8-bit, add
      "observers" that watch values go by), calibrate (run images through it, so that the
      observers measure each value's range) and convert (scales and int8 weights into the graph).
    - Why the converted model is not faster yet, and how torch.compile makes it fast.
    - What it buys: file size, CPU time per image (batch 1 and 256) and test accuracy, before
      and after, and how often the two models give the same answer.

How to run it
    pip install torchao                          # once: quantization lives in its own package
    python 05_train.py                           # first: training writes checkpoints/best.pt
    python 11_quantization.py                    # then this lesson: about 2 minutes on a 2-core CPU
    python 11_quantization.py --fake-data --dry-run   # after `05_train.py --fake-data`: a check
                                                 # of about a minute, no torch.compile or timing
    python 11_quantization.py --help             # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads the checkpoint that 05_train.py wrote (checkpoints/best.pt, or checkpoints/fake/best.pt
with --fake-data), some training images to calibrate with, and the test images. Writes, at the
end and only then, one folder: outputs/quantization/ (or quantization/ in --output-dir) with
cifarnet_float32.pt2 and cifarnet_int8.pt2 (both torch.export programs) and quantization.json
(the numbers). It refuses to replace an earlier run's folder unless you pass --overwrite. A dry
run writes nothing. Quantized inference here is for CPUs: everything runs on the CPU.
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

# Plumbing, down to section 1, which you can skip: a mistake you can fix (no checkpoint yet,
# torchao not installed, an --output-dir that is a file) ends in one plain sentence instead of a
# traceback; then the command-line flags, the checks of the output folder and the imports.
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
parser.add_argument("--overwrite", action="store_true",
                    help="replace the results of an earlier run in <output-dir>/quantization")
args = common.parse_args(parser)  # in Jupyter, where there is no command line: the defaults
if args.checkpoint is None:
    args.checkpoint = common.default_checkpoint_dir(args.fake_data) / "best.pt"
if args.device not in ("auto", "cpu"):
    raise common.UserError("int8 inference in this lesson runs on the CPU only; leave out "
                           f"--device {args.device}.")
# The results are written at the end, after minutes of work: check the folder now.
results_dir = args.output_dir / "quantization"
RESULT_FILES = ("cifarnet_float32.pt2", "cifarnet_int8.pt2", "quantization.json")
if not args.dry_run:
    common.check_can_write(results_dir, "--output-dir")
    earlier = [name for name in RESULT_FILES if (results_dir / name).exists()]
    if earlier and not args.overwrite:
        raise common.UserError(f"{results_dir} already holds the results of an earlier run "
                               f"({earlier[0]}); pass --overwrite to replace them, or choose "
                               "another --output-dir.")

# torchao is not in requirements.txt, because only this lesson needs it. (Importing torchao
# 0.18 with torch 2.14 logs a warning meant for torchao's developers; the logging line hides it.)
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


# %% 1. The idea: a number as one byte, a scale and a zero point ----------------------------------
common.section("1. The idea: a number as one byte, a scale and a zero point")
# A float32 number takes 4 bytes. Quantization keeps each number of a tensor as 1 byte instead:
# a whole number q, here from 0 to 255 (uint8), that stands for the value
#     value = scale * (q - zero_point)
# The scale is the size of one step from one q to the next; the zero point is the q that stands
# for 0.0, so that 0.0 (common in a network) is kept exactly. Both are chosen from the range the
# numbers cover, and both are shared by the whole tensor. Say the numbers lie between -1 and 2:
# 255 steps must cover a range of 3, so each step is 3 / 255, and 0.0 is 85 steps above -1.
values = torch.tensor([-1.0, -0.62, 0.0, 0.25, 0.77, 1.234, 2.0, 2.5])
low, high = -1.0, 2.0
scale = (high - low) / 255
zero_point = round(-low / scale)
# To store: divide by the scale, round to the nearest step, shift by the zero point, and clip
# what falls outside 0..255 to its end. To read back: the formula above.
stored = ((values / scale).round() + zero_point).clamp(0, 255)
read_back = scale * (stored - zero_point)
print(f"range {low} to {high}: scale = 3 / 255 = {scale:.5f}, zero point = {zero_point}")
print(f"{'value':>8}{'q (1 byte)':>12}{'read back':>11}{'error':>9}")
for value, q, back in zip(values.tolist(), stored.tolist(), read_back.tolist()):
    print(f"{value:8.3f}{q:12.0f}{back:11.4f}{back - value:9.4f}")
# What to look at: every error is at most half a step (scale / 2 = 0.0059), and 0.0 comes back
# exactly; only 2.5, outside the range, is clipped to 2.0. That is the trade in choosing the
# range: a wider one clips less, but makes every step, and so every rounding error, larger.
# The quantized network of section 5 does exactly this, with an operation of its own:
builtin = torch.ops.quantized_decomposed.quantize_per_tensor(values, scale, zero_point, 0, 255,
                                                             torch.uint8)
print("quantized_decomposed.quantize_per_tensor stores the same whole numbers:",
      torch.equal(builtin.float(), stored))
# Weights are stored a little differently: as int8 (-128..127) with the zero point fixed at 0
# ("symmetric"), so the scale is simply the largest |weight| / 127. And the multiplications of a
# layer can then run on 8-bit integers, which a CPU does several times more of per instruction
# than float32 multiplications: the source of the speed of section 7.


# %% The trained network and the images (plumbing, which you can skip) ----------------------------
checkpoint = checkpointing.load_checkpoint(args.checkpoint, device="cpu")
config = checkpoint["config"]
# The float32 network as 05_train.py left it: eval mode, on the CPU, channels_last layout.
float_model = checkpointing.model_from_checkpoint(checkpoint, device="cpu")
classes = config["classes"]
# Calibration images come from the training part, never from the test set: the test set must
# not shape the model in any way, and quantization scales are part of the model. (The split
# shuffled the training images, so the first 1,024 are a mix of every class.)
train, _, _ = data.load_train_and_val(args.data_dir, args.fake_data, args.classes)
test_images, test_labels, test_classes = data.load_split(args.data_dir, "test", args.fake_data,
                                                         args.classes)
if list(test_classes) != list(classes):
    raise common.UserError(
        f"the checkpoint was trained on the classes {classes}, but the test data has "
        f"{list(test_classes)}; quantize with the same data it was trained on.")
# The example batch that section 3 records the network with: 8 test images, whatever the
# --batch-size (the same normalisation as in training, 03_data.prepare_batch).
example = data.prepare_batch(test_images[:8], "cpu", config["mean"], config["std"])
num_calibration = min(args.calibration_images, len(train.images))
if args.dry_run:  # one batch per phase
    num_calibration = min(num_calibration, args.batch_size)
    test_images, test_labels = test_images[:args.batch_size], test_labels[:args.batch_size]
calibration_loader = data.InMemoryLoader(train.images[:num_calibration],
                                         train.labels[:num_calibration], args.batch_size, "cpu",
                                         config["mean"], config["std"])
test_loader = data.InMemoryLoader(test_images, test_labels, args.batch_size, "cpu",
                                  config["mean"], config["std"])
print(f"\nloaded {args.checkpoint}: a {config['model']['size']} CifarNet, epoch "
      f"{checkpoint['epoch']}; {num_calibration:,} calibration images, "
      f"{len(test_labels):,} test images")


def file_size(size):
    """A number of bytes as KiB (1 KiB = 1024 bytes), as text."""
    return f"{size / 1024:,.0f} KiB"


# %% 2. Weights: one scale per output channel -----------------------------------------------------
common.section("2. Weights: one scale per output channel")
# How many scales for a layer's weights? One for the whole tensor ("per-tensor") lets the channel
# with the largest weights set the step for all of them; a channel whose weights are all small
# then uses only a few of the 256 steps. One scale per output channel ("per-channel") fits each
# filter's own range, at the cost of a handful of extra floats. Here is the difference on one
# layer of the trained network:
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
# tensor, with a zero point, as uint8, as in section 1: per-channel scales there would have to be
# applied inside the convolution's sums, which the fast kernels do not do. Their range cannot be
# read off the model either; it has to be measured on real images: that is calibration.


# %% 3. Export, and prepare: the network as a graph, ready to observe -----------------------------
common.section("3. torch.export, then prepare_pt2e: conv + batch-norm fused, observers added")
# Section 1 did by hand, for one tensor, what these four steps do for every tensor of a network:
#   1 torch.export records the network's computation as a graph (07_save_load.py, section 5);
#   2 prepare_pt2e marks what becomes 8-bit, and adds observers that will watch the values;
#   3 calibration runs images through it: the observers note each tensor's range (section 4);
#   4 convert_pt2e turns each range into a scale and a zero point, as in section 1 (section 5).
# ("PT2E" is the name of this route: PyTorch 2 export.) The example batch has 8 images, and
# dimension 0 is declared dynamic, so that the graph accepts any batch size.
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
# config is the recipe for x86 CPUs that torch.compile can run fast: int8 weights with one scale
# per output channel, uint8 activations with one scale each (sections 1 and 2).
quantizer = x86_inductor_quantizer.X86InductorQuantizer()
quantizer.set_global(x86_inductor_quantizer.get_default_x86_inductor_quantization_config())
# One layer stays in float32: the first convolution ("stem.0" is its name in the model). It is
# a common choice: with 3 input channels it does little of the work, and its input, the image,
# is what every later layer builds on. Here it is also a measured necessity: with torch 2.14 and
# torchao 0.18, torch.compile's int8 version of this layer gave other answers than the converted
# model it was compiled from (79% test accuracy instead of 85%), so section 8 checks the two
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


# %% 4. Calibration -------------------------------------------------------------------------------
common.section("4. Calibration: measure the range of every activation")
# Run training images through the prepared model. It computes in float32 as before; the observers
# record what they see. Which range is kept matters (section 1's trade): the largest value ever
# seen lets one outlier stretch the steps for everything else, so X86InductorQuantizer's
# activation observer keeps a histogram and picks the range that loses least. A thousand images
# is plenty for a network this size; too few, or unrepresentative ones (all of one class), give
# ranges that clip real images.
start = time.perf_counter()
with torch.no_grad():
    for images, _ in calibration_loader:
        prepared(images)
print(f"{num_calibration:,} calibration images in {time.perf_counter() - start:.1f} s")


# %% 5. Convert -----------------------------------------------------------------------------------
common.section("5. convert_pt2e: int8 weights, and quantize/dequantize pairs")
# convert_pt2e turns each observer's range into a scale and zero point, stores each weight as
# int8, and writes into the graph a "quantize" (float -> int8) and a "dequantize" (int8 -> float)
# at every place that will be 8-bit. Note what the result is NOT: it does not compute in int8.
# Each convolution still gets float inputs (dequantized) and runs in float32; the pairs only
# describe where the int8 rounding happens. So the converted model already gives the int8
# model's answers (up to the last bits of rounding), and torch.compile can later replace each
# "dequantize -> convolution -> quantize" with one int8 convolution (section 7). On this network
# convert takes from seconds to a minute (see "Going further" at the end for why).
start = time.perf_counter()
quantized_model = convert_pt2e(prepared)
print(f"converted in {time.perf_counter() - start:.1f} s")
int8_weights = {name: tensor for name, tensor in quantized_model.state_dict().items()
                if tensor.dtype == torch.int8}
print(f"{len(int8_weights)} weights stored as int8, e.g. a convolution's "
      f"{tuple(next(iter(int8_weights.values())).shape)}")
# The first quantize in the graph is the float stem's output, the input of the first int8
# convolution: its scale and zero point map the range calibration saw (GELU's outputs: a little
# below 0 up to a few units) onto uint8's 0..255, exactly as in section 1. A quantize node's
# arguments are (the tensor, scale, zero point, lowest integer, highest integer, integer type).
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


# %% 6. File size ---------------------------------------------------------------------------------
common.section("6. File size: a quarter for the weights, less for the whole file")
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
# and torch.export.save takes an ExportedProgram). They are written to disk at the very end.
quantized_program = torch.export.export(quantized_model, (example,),
                                        dynamic_shapes=({0: batch_dimension},))
float_file = saved_bytes(exported)
int8_file = saved_bytes(quantized_program)
print(f"float32 program: {file_size(len(float_file))} | int8 program: "
      f"{file_size(len(int8_file))} ({len(float_file) / len(int8_file):.1f}x smaller)")
# Not 4x: scales, zero points, biases and the three unfused batch-norms stay float32, and each
# file also holds the graph and the example batch of 8 images (96 KiB) it was exported with.


# %% 7. Lowering with torch.compile, and speed ---------------------------------------------------
common.section("7. The speed appears only after torch.compile lowers the graph")
# Up to here the int8 model is a float model with extra rounding steps: slower than the original.
# torch.compile translates ("lowers") the graph into machine code, and there it replaces each
# dequantize -> convolution -> quantize with one convolution that multiplies 8-bit integers.
# The first call of each batch shape compiles (seconds); every later call runs the compiled code.


def seconds_per_image(model, batch_size, repeats):
    """The median time of `repeats` calls of model on one batch, divided by the batch size.

    The median, not the mean: a busy machine makes a few calls slow, and those should not count.
    Random images are as good as real ones here: the work does not depend on the pixel values.
    """
    images = torch.randn(batch_size, *example.shape[1:])
    images = images.contiguous(memory_format=torch.channels_last)
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
    # "Freezing" lets the compiler treat the weights as constants, which the int8 convolutions
    # need; two notes that PyTorch prints while compiling are for its own developers. (Both are
    # explained under "Going further", at the end.)
    inductor_config.freezing = True
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
    # What to look at: the eager int8 row is the slowest (rounding steps, no int8 arithmetic);
    # compiled, int8 beats float32 in large batches. How much, and whether it wins on single
    # images, depends on the CPU's instructions and the thread count (see "Going further"; on a
    # 2-core CPU without 8-bit multiply-add instructions: 1.26x at batch 256, slower at batch 1).
    # So measure on the CPU you will deploy on, at the batch size you will use.


# %% 8. Accuracy, before and after -----------------------------------------------------------------
common.section("8. Test accuracy before and after, and how often the answers agree")


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
lowered_agreement = None
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
              "converted one does. Try keeping more layers in float (section 3) or another "
              "torch/torchao version, and trust the converted model's answers.")
# What to look at: a drop of a few tenths of a point is the usual price of post-training int8.
# Larger drops come from too little or unrepresentative calibration data, or from layers that
# do not tolerate 8 bits; the fixes are better calibration, keeping those layers in float
# (quantizer.set_module_name_qconfig(name, None), as for the stem), or quantization-aware
# training (prepare_qat_pt2e), which trains with the rounding in place so the weights learn to
# live with it.


# %% Saving the results (plumbing, which you can skip) --------------------------------------------
# Everything is written now, at the end, in one folder, so that a run stopped half-way (Ctrl-C,
# a crash) leaves an earlier run's results untouched. A run with --overwrite first removes the
# earlier files, and writes quantization.json, which describes the two programs, last: a folder
# never holds one run's programs beside another run's numbers.
if args.dry_run:
    print("\nDry run: one batch per phase, no torch.compile, so no files were written.")
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
    contents = dict(zip(RESULT_FILES, [float_file, int8_file,
                                       json.dumps(results, indent=2).encode()]))
    try:
        for name in RESULT_FILES:
            (results_dir / name).unlink(missing_ok=True)
    except OSError as error:
        raise common.UserError(f"could not remove the earlier {results_dir / name} "
                               f"({error.strerror}); remove it yourself and run again.") from None
    for name, content in contents.items():
        common.write_atomically(results_dir / name, lambda file, content=content:
                                file.write(content))
    print(f"\nSaved in {results_dir}: {', '.join(RESULT_FILES)}")


# %% Summary --------------------------------------------------------------------------------------
common.section("Summary: what you just did")
print("""\
- stored numbers as one byte each, with a scale and a zero point, and read them back
- saw why a layer's weights get one scale per output channel
- quantized the whole network: export, prepare, calibrate on training images, convert
- compared file size and test accuracy, float32 against int8, and (without --dry-run) the
  speed once torch.compile has turned the int8 graph into int8 arithmetic""")
if args.dry_run:
    print("\nNext: the full lesson, python 11_quantization.py (after a real 05_train.py run).")
else:
    print(f"\nTo use the int8 program elsewhere: `import torchao` (it defines the quantize "
          f"operations), then torch.export.load('{results_dir / RESULT_FILES[1]}').module() is a "
          "model to call.")
    print("Next: python 12_distributed.py, training on several processes or GPUs.")
print(f"Finished in {time.perf_counter() - lesson_start:.0f} s.")


# %% Going further: the compiler and the CPU ------------------------------------------------------
# Details that the lesson uses but a first read does not need.
# - torch.compile's back end, Inductor, calls oneDNN (Intel's library of fast CPU kernels, which
#   PyTorch ships) for each int8 convolution, and fuses the remaining float steps into loops of
#   its own. Its "freezing" setting tells it the weights will never change, so it can fold them
#   into the compiled code and repack them once into the layout the int8 kernels read fastest;
#   the int8 convolutions need it. It is set in Inductor's config, as torchao's guide does:
#   passing options={"freezing": True} to one torch.compile call fails for them here.
# - The notes it prints while compiling, hidden above: one about how it copies the int8
#   weights' zero points, one that no CUDA runtime was found on a machine without a GPU.
# - How much int8 gains depends on the CPU: instructions that multiply 8-bit integers and add
#   them into 32-bit totals in one step (AVX512-VNNI, AVX-VNNI, Intel's AMX) make int8 several
#   times faster than float32; with only AVX2 it gains far less, and can lose on single images
#   (GUIDE.md, "Next steps", has the numbers). quantization.json records this CPU's
#   instructions ("cpu_capability") beside the timings.
# - convert_pt2e's half minute goes nearly all to a step meant for quantization-aware training,
#   which looks for conv + batch-norm pairs to fold by exporting dozens of small patterns. It
#   finds none here, but it runs whenever a batch-norm is left in the graph, as the three of
#   section 3 are.
