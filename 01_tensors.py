"""01 Tensors: the one data structure that everything in PyTorch is made of.

What you will learn
    - What PyTorch is: a library of N-dimensional arrays ("tensors") that run on a CPU or a GPU,
      plus automatic differentiation, and why it feels like plain Python ("define-by-run").
    - How to create tensors: from Python lists, from NumPy arrays, with factory functions
      (zeros, ones, full, arange, rand, randn, ...) and with the `*_like` functions.
    - What a tensor's shape, dtype and device are, and how to change them.
    - Indexing and slicing; reshaping and views (view, reshape, permute, unsqueeze, squeeze,
      flatten, contiguous); broadcasting; `*` versus `@`; reductions along a `dim`.
    - The bridge to NumPy in both directions, and which conversions share memory.
    - Moving tensors between the CPU and a GPU (an NVIDIA GPU through CUDA, or Apple's MPS).
    - Why all of this matters: a batch of images is simply a tensor of shape (N, C, H, W).

How to run it
    python 01_tensors.py                  # uses a GPU if there is one, else the CPU
    python 01_tensors.py --device cpu     # insist on one device: cpu, cuda or mps
    python 01_tensors.py --help           # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter, and change things as you go: the best
way to learn tensors is to predict what a line will print, then check.

Reads nothing and writes nothing: everything it shows is printed. It takes a few seconds on a CPU.
"""

# %% Setup ---------------------------------------------------------------------------------------
import time

import numpy as np
import torch

import common

# Plumbing, down to section 1, which you can skip: a mistake you can fix (such as --device cuda
# on a machine without an NVIDIA GPU) ends in one plain sentence instead of a traceback; then the
# command-line flags, the device, the random seed and three small printing helpers.
common.report_errors_plainly()

parser = common.make_parser("Lesson 1: tensors, printed section by section.",
                            device_purpose="where the device section computes")
args = common.parse_args(parser)  # in Jupyter, where there is no command line: the defaults
device = common.get_device(args.device)  # chosen now, so a wrong --device fails straight away

# Random tensors come from a random number generator; seeding it makes every run print the same
# "random" values, so what you see matches what the comments describe.
torch.manual_seed(args.seed)
# Print 3 digits after the point. This changes how tensors are printed, never their values.
torch.set_printoptions(precision=3)


def show(name, tensor):
    """Print a tensor's shape and dtype on one line, then its values."""
    print(f"{name}: shape {tuple(tensor.shape)}, dtype {tensor.dtype}")
    print(tensor)


def first_line(error):
    """The first line of an exception's message (PyTorch's messages can run on for a while)."""
    return str(error).splitlines()[0]


def same_memory(a, b):
    """True if two tensors look into the same block of memory (one is a view of the other)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# %% 1. What PyTorch is ---------------------------------------------------------------------------
# PyTorch is two things in one library:
#   1. A tensor library, much like NumPy: N-dimensional arrays of numbers and hundreds of fast
#      operations on them. The same code runs on the CPU or, with the data moved there, on a GPU.
#   2. Automatic differentiation ("autograd"): PyTorch can work out how a result changes when the
#      numbers that produced it change (its gradient). That is how a neural network learns; it is
#      the subject of 02_autograd.py.
# PyTorch is "define-by-run": each line computes its result the moment Python reaches it. There is
# no separate graph to declare first and execute later; the record that autograd needs is made on
# the fly while the operations run. So you can print any intermediate value, step through your
# model in a debugger, and use ordinary Python `if`s and `for` loops around tensor code. (On a
# GPU the work is queued and runs in the background, and Python waits for a value when it needs
# one, as in an `if`: the code reads the same.)
common.section("1. What PyTorch is")
print("PyTorch", torch.__version__, "with NumPy", np.__version__)
a = torch.tensor([1.0, 2.0, 3.0])
b = a * 10  # computed as this line runs, not declared now and run later
print("a * 10 =", b)
if b.sum() > 50:  # a plain Python `if` on a tensor's value works: the value already exists
    print("b.sum() is", b.sum().item(), "which is more than 50")


# %% 2. Creating tensors --------------------------------------------------------------------------
common.section("2. Creating tensors")
# From Python lists (nested lists give more dimensions). PyTorch infers the dtype, the type of
# every element: whole numbers become int64, numbers with a decimal point become float32, which
# is PyTorch's default floating-point type.
show("torch.tensor(list of ints)", torch.tensor([[1, 2, 3], [4, 5, 6]]))
show("torch.tensor(list of floats)", torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))

# From NumPy. NumPy's default float is float64 ("double precision"), and both conversions below
# keep it. Neural networks use float32: half the memory, much faster on GPUs, and precise enough
# for learning, so convert data from NumPy with .float() (section 3) before it meets a model.
# torch.from_numpy shares the array's memory while torch.tensor copies it; section 9 proves it.
array = np.array([[1.0, 2.0], [3.0, 4.0]])
print("the NumPy array's dtype:", array.dtype)
show("torch.from_numpy(array)", torch.from_numpy(array))
show("torch.tensor(array)", torch.tensor(array))

# Factory functions: you give the shape, PyTorch fills it (full also takes the value to fill in).
show("torch.zeros(2, 3)", torch.zeros(2, 3))
show("torch.ones(2, 3)", torch.ones(2, 3))
show("torch.full((2, 3), 7.0)", torch.full((2, 3), 7.0))
show("torch.arange(0, 10, 2)", torch.arange(0, 10, 2))  # like range(): the end is left out
show("torch.linspace(0, 1, 5)", torch.linspace(0, 1, 5))  # 5 evenly spaced, both ends included
show("torch.rand(2, 3)", torch.rand(2, 3))  # uniform random numbers in [0, 1)
show("torch.randn(2, 3)", torch.randn(2, 3))  # normal distribution: mean 0, std 1
show("torch.randint(0, 10, (2, 3))", torch.randint(0, 10, (2, 3)))  # int64 from 0 to 9
# torch.empty(2, 3) exists too. It is the fastest because it does not fill anything: the values
# are whatever bytes were in memory. Use it only when you overwrite every element yourself.

# The `*_like` functions make a new tensor with the same shape, dtype and device as a given one.
# Inside a function that receives some tensor, they spare you from spelling those three out.
template = torch.rand(2, 3, dtype=torch.float64)
show("torch.zeros_like(template)", torch.zeros_like(template))
show("torch.randn_like(template)", torch.randn_like(template))


# %% 3. Shapes and dtypes -------------------------------------------------------------------------
common.section("3. Shapes and dtypes")
x = torch.rand(2, 3, 4)
print("x.shape:", x.shape)  # a torch.Size, which is a tuple: index it, unpack it, compare it
print("x.shape[1] and x.size(1):", x.shape[1], x.size(1))  # the size of one dimension
print("x.ndim:", x.ndim)  # the number of dimensions (also called axes)
print("x.numel():", x.numel())  # the number of elements, 2 * 3 * 4
print("x.dtype:", x.dtype, "with", x.element_size(), "bytes per element")
print("x.device:", x.device)  # where its memory is: the CPU here, section 10 moves it

# The dtypes you will meet most: float32 for data, weights and activations; int64 ("long") for
# counts and indices, such as class labels (a label is the number of a class: 3 for "cat"); uint8
# for raw image pixels (0 to 255); bool for masks; float16 and bfloat16, 2 bytes a number instead
# of 4, which GPUs compute with faster and which training can use for most of its operations.
# Converting to another dtype makes a new tensor holding a converted copy of the data:
print("x.double().dtype:", x.double().dtype, "| x.half().dtype:", x.half().dtype,
      "| x.to(torch.bfloat16).dtype:", x.to(torch.bfloat16).dtype)
# Converting floats to integers cuts off the fraction (rounds towards zero); it does not round:
print("torch.tensor([1.7, -1.7]).long():", torch.tensor([1.7, -1.7]).long())

# Mixing dtypes in arithmetic gives the "wider" type (an int64 tensor plus a float, be it a Python
# number or a float32 tensor, is float32), and `/` is always true division, even between integer
# tensors; `//` rounds down.
counts = torch.tensor([3, 4, 5])
print("counts + 0.5:", counts + 0.5, "| counts / 2:", counts / 2, "| counts // 2:", counts // 2)
# Operations that combine two tensors the way a layer does, such as matrix multiplication, insist
# on one dtype. This is the error you get when float64 data from NumPy meets float32 weights:
try:
    torch.ones(2, 3, dtype=torch.float64) @ torch.ones(3, 2)
except RuntimeError as error:
    print("float64 @ float32 fails:", first_line(error))


# %% 4. Indexing and slicing ----------------------------------------------------------------------
common.section("4. Indexing and slicing")
# Indexing works like NumPy: one index (or slice) per dimension, separated by commas.
grid = torch.arange(12).reshape(3, 4)
show("grid", grid)
print("grid[0]        first row:", grid[0])
print("grid[:, 1]     second column:", grid[:, 1])
print("grid[-1]       last row:", grid[-1])
print("grid[1, 2]     one element, still a tensor (0 dimensions):", grid[1, 2])
print("grid[1, 2].item()   the same element as a Python number:", grid[1, 2].item())
show("grid[:2, 1:3]  rows 0-1, columns 1-2", grid[:2, 1:3])
show("grid[:, ::2]   every other column", grid[:, ::2])
# Unlike NumPy, a negative step such as grid[::-1] raises an error; flip the tensor instead:
show("grid.flip(0)   rows in reverse order", grid.flip(0))
# A boolean mask keeps the elements where it is True and returns them as a 1-D tensor:
show("grid > 6", grid > 6)
print("grid[grid > 6]:", grid[grid > 6])
# A list (or tensor) of indices picks those rows, in that order, repeats allowed:
show("grid[[2, 0, 0]]", grid[[2, 0, 0]])

# Plain indexing and slicing return a view: a new tensor object looking into the same memory.
# Writing into the view writes into grid. That saves copying, and surprises people once.
first_row = grid[0]
first_row[0] = 100
print("after first_row[0] = 100, grid[0, 0] is", grid[0, 0].item(), "(a slice is a view)")
# Masks and lists of indices ("advanced indexing") return copies instead, so this leaves grid be:
picked = grid[[0, 2]]
picked[0, 0] = -1
print("after picked[0, 0] = -1, grid[0, 0] is still", grid[0, 0].item(),
      "(a list of indices copies)")
# When you need a slice you can change on its own, ask for a copy: grid[0].clone().
grid[0, 0] = 0  # assigning through an index changes grid itself; this puts the 0 back


# %% 5. Reshaping and views -----------------------------------------------------------------------
common.section("5. Reshaping and views")
# A tensor is one block of memory plus a shape and "strides": for each dimension, how many
# elements to skip in memory to move one step along it. Reshaping usually only changes the shape
# and strides, so the result is a view that shares the memory and no data is copied.
numbers = torch.arange(6)
matrix = numbers.view(2, 3)
show("numbers.view(2, 3)", matrix)
print("numbers.view(3, -1).shape:", numbers.view(3, -1).shape, "(-1: work it out from the rest)")
print("matrix shares memory with numbers:", same_memory(matrix, numbers))
print("matrix.stride():", matrix.stride(), "(next row: skip 3 elements, next column: skip 1)")

# Transposing (t, transpose, permute) is a view as well: it swaps the strides, not the data.
# The elements are then no longer laid out row after row in memory: not "contiguous".
transposed = matrix.t()  # the same as matrix.transpose(0, 1) or matrix.permute(1, 0)
print("transposed.stride():", transposed.stride(), "| contiguous:", transposed.is_contiguous())
# view needs a shape that is compatible with the existing strides, so that the result can be
# described without moving any data. After a transpose that is often impossible:
try:
    transposed.view(6)
except RuntimeError as error:
    print("transposed.view(6) fails:", first_line(error))
# reshape returns a view when it can and a copy when it must, so never rely on either: if you
# need a copy, call .clone(); if you need a view, call .view and let it tell you when it cannot.
flat = transposed.reshape(6)
print("transposed.reshape(6):", flat, "| copied:", not same_memory(flat, transposed))
# .contiguous() copies the data into row-after-row order (it returns the tensor itself when it is
# contiguous already); view works again afterwards.
print("transposed.contiguous().view(6):", transposed.contiguous().view(6))

# Adding and removing dimensions of size 1, which you will do all the time:
image = torch.rand(3, 32, 32)  # one colour image: channels, height, width
print("image.shape:", image.shape)
print("image.unsqueeze(0).shape:", image.unsqueeze(0).shape, "(a batch of one image)")
print("image.unsqueeze(0).squeeze(0).shape:", image.unsqueeze(0).squeeze(0).shape)
# squeeze() with no argument removes every dimension of size 1. That can bite: a batch that
# happens to hold one sample loses its batch dimension too. Name the dimension you mean.
print("torch.zeros(1, 3, 1).squeeze().shape:", torch.zeros(1, 3, 1).squeeze().shape)
# permute reorders the dimensions: image files and NumPy store (height, width, channels),
# PyTorch wants (channels, height, width).
pixels_hwc = torch.rand(32, 32, 3)
print("pixels_hwc.permute(2, 0, 1).shape:", pixels_hwc.permute(2, 0, 1).shape)
# flatten joins dimensions into one; start_dim=1 keeps the first (batch) dimension apart.
print("torch.rand(8, 3, 32, 32).flatten(start_dim=1).shape:",
      torch.rand(8, 3, 32, 32).flatten(start_dim=1).shape)


# %% 6. Broadcasting ------------------------------------------------------------------------------
common.section("6. Broadcasting")
# Element-wise operations between tensors of different shapes work when the shapes "broadcast".
# Line the shapes up from the right; each pair of sizes must be equal, or one of them must be 1
# (or missing). A size-1 or missing dimension is stretched to match the other, without copying.
ones = torch.ones(3, 4)
row = torch.arange(4.0)  # shape (4,): lined up on the right, it is treated as (1, 4)
show("ones (3, 4) + row (4,)", ones + row)  # row is added to every row
column = torch.arange(3.0).unsqueeze(1)  # shape (3, 1)
show("column (3, 1) + row (4,)", column + row)  # every pair: (3, 1) and (1, 4) give (3, 4)
# Shapes (3, 4) and (3,) do not broadcast: lined up on the right, 4 meets 3.
try:
    ones + torch.arange(3.0)
except RuntimeError as error:
    print("(3, 4) + (3,) fails:", first_line(error))
# The fix is to say which dimension the 3 belongs to, by adding a size-1 dimension after it.
# Indexing with None does the same as unsqueeze.
print("(3, 4) + (3, 1) works:", (ones + torch.arange(3.0)[:, None]).shape)
# The classic silent bug: predictions of shape (N, 1) minus targets of shape (N,) broadcast to
# (N, N), every prediction against every target, with no error at all. A loss computed from that
# is wrong. Keep the shapes equal (targets.unsqueeze(1) or predictions.squeeze(1)).
predictions = torch.zeros(5, 1)
targets = torch.zeros(5)
print("(5, 1) - (5,) gives shape", tuple((predictions - targets).shape), "not (5,) or (5, 1)!")


# %% 7. Element-wise versus matrix multiplication ------------------------------------------------
common.section("7. Element-wise versus matrix multiplication")
left = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (2, 3)
same_shape = torch.tensor([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])  # (2, 3)
# `*` multiplies element by element (so do +, -, /, **, torch.exp, torch.sqrt, ...):
show("left * same_shape (element-wise)", left * same_shape)
# `@` is matrix multiplication (torch.matmul): (n, k) @ (k, m) gives (n, m). The inner sizes
# must match: each result element is the dot product of a row of the left and a column of the right.
right = torch.rand(3, 4)
product = left @ right
print(f"matmul: {tuple(left.shape)} @ {tuple(right.shape)} -> {tuple(product.shape)}")
print("product[0, 1] equals row 0 of left dot column 1 of right:",
      torch.allclose(product[0, 1], torch.dot(left[0], right[:, 1])))
try:
    left @ same_shape  # (2, 3) @ (2, 3): the inner sizes 3 and 2 differ
except RuntimeError as error:
    print("(2, 3) @ (2, 3) fails:", first_line(error))
print("left @ same_shape.T works: (2, 3) @ (3, 2) ->", tuple((left @ same_shape.T).shape))
# With more than two dimensions, @ multiplies matrix by matrix over the leading dimensions
# ("batched"), broadcasting them. Two 1-D tensors give their dot product, a 0-d tensor.
print("(10, 2, 3) @ (3, 4) ->", tuple((torch.rand(10, 2, 3) @ right).shape))
# This is what a fully connected layer computes: nn.Linear gives inputs @ weight.T + bias.

# In-place operations end in an underscore and change the tensor itself instead of returning a
# new one; `+=` and friends are in place as well. They save memory, but they overwrite values,
# and autograd (02_autograd.py) refuses some of them for that reason. Prefer the normal ones.
scaled = left.clone()
scaled.mul_(2)  # scaled is changed; left is not, because clone() made a copy
scaled += 1
print("left.clone(), then .mul_(2) and += 1:", scaled[0], "| left is unchanged:", left[0])


# %% 8. Reductions --------------------------------------------------------------------------------
common.section("8. Reductions: sum, mean, max and argmax along a dim")
# A reduction turns many numbers into fewer. Without `dim` it reduces everything to a single
# number; with `dim=d` it collapses dimension d, one result for each position along the others.
scores = torch.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])  # (2, 3)
show("scores", scores)
print("scores.sum():", scores.sum())  # every element: a 0-d tensor
print("scores.sum(dim=0):", scores.sum(dim=0), "shape", tuple(scores.sum(dim=0).shape),
      "(dim 0 collapsed: one sum per column)")
print("scores.sum(dim=1):", scores.sum(dim=1), "shape", tuple(scores.sum(dim=1).shape),
      "(dim 1 collapsed: one sum per row)")
# keepdim=True leaves the collapsed dimension in place with size 1, so that the result
# broadcasts back against the original, for example to divide every row by its own sum:
row_sums = scores.sum(dim=1, keepdim=True)
print("scores.sum(dim=1, keepdim=True).shape:", tuple(row_sums.shape))
show("scores / row_sums, each row now sums to 1", scores / row_sums)
print("scores.mean(dim=0):", scores.mean(dim=0))
# mean (and std) need a floating-point tensor; an integer tensor gives an error, not a rounding:
try:
    torch.tensor([1, 2]).mean()
except RuntimeError as error:
    print("mean of an int64 tensor fails:", first_line(error))
# max with a dim returns two tensors: the largest values and where they are (their indices).
values, indices = scores.max(dim=1)
print("scores.max(dim=1): values", values, "indices", indices)
print("scores.argmax(dim=1):", scores.argmax(dim=1), "(the indices alone)")
# This is exactly how a classifier's prediction is read: the model gives one score ("logit") per
# class for each image, shape (batch, classes); argmax over dim 1 picks the predicted class.
logits = torch.randn(4, 10)
labels = torch.tensor([3, 1, 4, 1])
predicted_classes = logits.argmax(dim=1)
accuracy = (predicted_classes == labels).float().mean()  # True/False -> 1.0/0.0, then average
print("predicted classes:", predicted_classes, "| labels:", labels,
      "| accuracy:", accuracy.item())


# %% 9. The NumPy bridge --------------------------------------------------------------------------
common.section("9. The NumPy bridge, both ways")
# NumPy to PyTorch. torch.from_numpy wraps the array's memory: nothing is copied, so a change on
# one side shows on the other. Cheap, but be aware of it.
shared_array = np.zeros(3)
wrapped = torch.from_numpy(shared_array)
shared_array[0] = 42.0  # change the array, then look at the tensor
print(f"after shared_array[0] = 42, the tensor holds {wrapped[0].item()}"
      f" -> from_numpy shares memory: {wrapped[0].item() == 42.0}")
# torch.tensor(array) always copies, so the tensor keeps the values it was made with.
# (torch.as_tensor shares when it can, and copies when the dtype or device must change.)
copied = torch.tensor(shared_array)
shared_array[1] = 7.0
print(f"after shared_array[1] = 7, the copy holds {copied[1].item()}"
      f" -> torch.tensor(array) copies: {copied[1].item() == 0.0}")
# Both kept NumPy's float64. .float() converts to float32, which makes a copy, so the float32
# tensor no longer shares memory with the array.
print("dtype:", wrapped.dtype, "-> wrapped.float().dtype:", wrapped.float().dtype)

# PyTorch to NumPy. .numpy() shares memory with a CPU tensor in the same way:
weights = torch.ones(3)
weights_array = weights.numpy()
weights.add_(1)  # change the tensor in place, then look at the array
print(f"after weights.add_(1), the array holds {weights_array.tolist()}"
      f" -> .numpy() shares memory: {bool(weights_array[0] == 2.0)}")
# .numpy() only works on a CPU tensor that does not require gradients. A GPU tensor must be
# copied back with .cpu() first; a tensor that is part of an autograd graph must be detached:
tracked = torch.ones(3, requires_grad=True)
try:
    tracked.numpy()
except RuntimeError as error:
    print("tracked.numpy() fails:", first_line(error))
# The safe recipe for any tensor is .detach().cpu().numpy() (on a CPU tensor .cpu() does
# nothing, so the array still shares memory). For one number use .item(), for lists .tolist().
print("tracked.detach().cpu().numpy():", tracked.detach().cpu().numpy())


# %% 10. Devices: CPU, CUDA and Apple MPS ---------------------------------------------------------
common.section("10. Devices: CPU, CUDA and Apple MPS")
# Every tensor lives on one device: the CPU's memory, an NVIDIA GPU's memory ("cuda"), or on a Mac
# the GPU that Apple's Metal drives ("mps"). common.get_device picks the best one there is
# (or the one --device asks for); this run uses the one printed below.
print("CUDA available:", torch.cuda.is_available(),
      "| MPS available:", torch.backends.mps.is_available(), "| this run uses:", device)
on_cpu = torch.randn(3, 3)
# tensor.to(device) returns a copy on that device and leaves the original where it was, so you
# must keep the result: x = x.to(device). (When the tensor is already on that device with that
# dtype, .to returns the very same tensor, and nothing is copied.)
on_device = on_cpu.to(device)
print("on_cpu.device:", on_cpu.device, "| on_cpu.to(device).device:", on_device.device)
# Creating a tensor directly on the device avoids the copy altogether:
ones_on_device = torch.ones(3, 3, device=device)
result = on_device @ ones_on_device  # computed on the device
# The operands of an operation must be on the same device; PyTorch does not move them for you
# (the one exception: a 0-d CPU tensor, a single number, may be combined with a GPU tensor).
if device.type != "cpu":
    try:
        on_cpu @ ones_on_device
    except RuntimeError as error:
        print("cpu tensor @", device.type, "tensor fails:", first_line(error))
# Results come back with .cpu() (or .to("cpu")), for printing, NumPy or saving.
print("result.cpu().device:", result.cpu().device)
# A model (an nn.Module) is different: model.to(device) moves its parameters in place and
# returns the same model, so `model.to(device)` on its own line is enough.
layer = torch.nn.Linear(3, 2)
returned = layer.to(device)
print("layer.to(device) returns the same layer:", returned is layer,
      "| its weight is now on", layer.weight.device)
# Two things you will meet later: Apple's MPS has no float64 (one more reason for float32), and
# a copy from the CPU to a CUDA GPU is faster, and with .to(device, non_blocking=True) can run
# while the GPU computes, when the CPU tensor is "pinned": kept in memory that the operating
# system promises not to move or swap to disk, so the GPU can read it directly. 03_data.py
# comes back to it.


def milliseconds_per_matmul(device, size=1024, repeats=5):
    """Time `size` x `size` matrix products on `device`, in milliseconds per product."""
    first = torch.randn(size, size, device=device)
    second = torch.randn(size, size, device=device)
    first @ second  # a warm-up: the first call pays one-off costs (loading kernels, libraries)
    # A GPU operation returns as soon as it is queued, so without synchronizing we would time
    # the queueing, not the work.
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        first @ second
    common.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


print(f"1024x1024 matmul on cpu: {milliseconds_per_matmul(torch.device('cpu')):.1f} ms per product")
if device.type != "cpu":
    device_ms = milliseconds_per_matmul(device)
    print(f"1024x1024 matmul on {device.type}: {device_ms:.2f} ms per product")


# %% 11. Why this matters: a batch of images is a tensor -----------------------------------------
common.section("11. Why this matters: a batch of images is a tensor")
# CIFAR-10, the data set of this guide, holds 32x32-pixel colour images: 3 channels (red, green,
# blue) of 32 rows of 32 pixels. PyTorch puts channels first, so one image is a tensor of shape
# (C, H, W) = (3, 32, 32) and a batch of N images is (N, C, H, W). Let's build one by hand.
# An image file decoded with PIL or NumPy gives (H, W, C) bytes from 0 to 255:
decoded = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
print("decoded image (H, W, C):", tuple(decoded.shape), decoded.dtype)
# permute to channels first, then turn the bytes into float32 in [0, 1]:
image = decoded.permute(2, 0, 1).float() / 255
print("as PyTorch wants it (C, H, W):", tuple(image.shape), image.dtype)
# torch.stack puts equally shaped tensors together along a new first dimension: a batch.
# (torch.cat joins along an existing dimension instead.) A DataLoader does this for you.
batch = torch.stack([image] + [torch.rand(3, 32, 32) for _ in range(7)])
print("batch (N, C, H, W):", tuple(batch.shape), "|", batch.numel(), "numbers,",
      batch.numel() * batch.element_size() // 1024, "KiB as float32")
# A reduction over dims (0, 2, 3) keeps only the channel dimension: one mean per colour.
channel_mean = batch.mean(dim=(0, 2, 3))
channel_std = batch.std(dim=(0, 2, 3))
print("per-channel mean:", channel_mean, "| per-channel std:", channel_std)
# Broadcasting normalizes every pixel of every image with its own channel's numbers, once the
# statistics have the shape (1, 3, 1, 1). This is what transforms.Normalize does (03_data.py).
normalized = (batch - channel_mean.view(1, 3, 1, 1)) / channel_std.view(1, 3, 1, 1)
print("after normalizing, per-channel std:", normalized.std(dim=(0, 2, 3)),
      f"and the largest |mean| is {normalized.mean(dim=(0, 2, 3)).abs().max().item():.1e}",
      "(zero up to rounding)")
# A fully connected layer wants one vector per image: flatten all but the batch dimension,
# multiply by a weight matrix, add a bias: 10 scores per image, one for each class.
features = normalized.flatten(start_dim=1)
weight = torch.randn(10, features.shape[1]) * 0.01
bias = torch.zeros(10)
logits = features @ weight.T + bias
print(f"flatten: {tuple(normalized.shape)} -> {tuple(features.shape)}; "
      f"features @ weight.T + bias: {tuple(features.shape)} @ {tuple(weight.T.shape)} "
      f"-> {tuple(logits.shape)}")
# A class label is an index into the list of class names; CIFAR-10's, from label 0 to 9
# (03_data.py keeps this list for the later lessons):
classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
guesses = logits.argmax(dim=1)
print("predicted classes (random weights, so random guesses):",
      [classes[index] for index in guesses.tolist()])
# To ask a model about one image, give it a batch of one: image.unsqueeze(0) is (1, 3, 32, 32).
print("one image as a batch:", tuple(image.unsqueeze(0).shape))


# %% Summary ---------------------------------------------------------------------------------------
common.section("Summary: what you just did")
print("""\
- made tensors from lists, NumPy arrays and factory functions; read their shape, dtype, device
- indexed, sliced and reshaped them, and saw which results are views sharing the same memory
- let broadcasting stretch shapes, told * from @, and reduced along a dim
- moved tensors to the device, and held a batch of images as one tensor (N, C, H, W)""")
print("\nThat is the whole toolkit. Next, 02_autograd.py: how PyTorch computes gradients.")
