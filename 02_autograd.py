"""02 Autograd: how PyTorch computes gradients, and how a model learns from them.

What you will learn
    - `requires_grad`, and how every operation on such a tensor is recorded, as it runs, in a
      graph that you can inspect (`grad_fn`, `is_leaf`).
    - `backward()` and `.grad`: PyTorch finds that the slope of y = x**2 + 3x + 1 at x = 2 is 7.
    - Why gradients add up until you zero them, and how to stop recording with `torch.no_grad()`
      and `detach()`.
    - Gradient descent: taking small steps against the gradient makes a result smaller, and
      what steps that are too large do instead (swing back and forth, or blow up).
    - Fitting a straight line to noisy points (linear regression) twice: first with parameters
      and an update written by hand, then with `nn.Linear`, `nn.MSELoss` and `torch.optim.SGD`,
      in the same numbered steps as the training loop of 05_train.py.
    - Choosing a loss for the question a model answers (a number, yes or no, one of many
      classes), the dtype and shape of its targets, and why models output logits, not
      probabilities.

How to run it
    python 02_autograd.py                 # a few seconds on a CPU
    python 02_autograd.py --lr 1.0        # too large a learning rate: x swings forever in
                                          # section 7, and the losses of 8 and 9 grow to inf
    python 02_autograd.py --help          # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads nothing and writes nothing: everything it shows is printed.
"""

# %% Setup ---------------------------------------------------------------------------------------

import math

import torch
from torch import nn

import common

# Plumbing, down to section 1, which you can skip: a mistake you can fix (such as --device cuda
# on a machine without an NVIDIA GPU) ends in one plain sentence instead of a traceback; then the
# command-line flags, the device and the random seed.
common.report_errors_plainly()

parser = common.make_parser("Lesson 2: autograd, and a line fitted with it.",
                            device_purpose="where the models of sections 9 and 10 train",
                            seed_help="random seed (the data points and the model's starting "
                                      "weights)")
parser.add_argument("--lr", type=common.positive_float, default=0.1,
                    help="learning rate: the step size of every gradient-descent loop here")
args = common.parse_args(parser)  # in Jupyter, where there is no command line: the defaults
device = common.get_device(args.device)  # chosen now, so a wrong --device fails straight away

torch.manual_seed(args.seed)  # the same seed gives the same data, the same start, the same output
torch.set_printoptions(precision=4)  # how tensors are printed, not their values


def first_line(error):
    """The first line of an exception's message (PyTorch's messages can run on for a while)."""
    return str(error).splitlines()[0]


# %% 1. requires_grad -----------------------------------------------------------------------------
common.section("1. requires_grad: asking PyTorch to keep track")
# Training a network means asking, for every weight: if I nudge this number, how does the loss
# change? That rate of change is the gradient. Autograd answers the question for every tensor
# created with requires_grad=True, which is how the weights of a model are created.
x = torch.tensor(2.0, requires_grad=True)
print("x:", x)
print("x.requires_grad:", x.requires_grad, "| x.is_leaf:", x.is_leaf,
      "(made by you, not computed from other tensors)")
print("x.grad:", x.grad, "(nothing yet: gradients appear after backward())")
# Only floating-point (and complex) tensors can require gradients: a slope needs values that can
# change a little, so torch.tensor(2, requires_grad=True), an integer, raises an error.


# %% 2. How operations record a graph -------------------------------------------------------------
common.section("2. How operations record a graph")
# Every operation on a tensor that requires gradients runs as usual and also leaves a note of
# what it did, in the result's grad_fn. Those notes, linked together, form the graph that
# backward() will walk. It is built while the code runs: change the code (an `if`, a loop that
# runs a different number of times) and the next run records a different graph.
y = x**2 + 3 * x + 1
print("y = x**2 + 3*x + 1 =", y)  # 4 + 6 + 1 = 11, and the printout names the last operation
print("y.grad_fn:", type(y.grad_fn).__name__, "| y.is_leaf:", y.is_leaf,
      "| y.requires_grad:", y.requires_grad, "(inherited from x)")


def print_graph(function, depth=0):
    """Print the backward graph below a grad_fn, one operation per line, inputs indented."""
    name = type(function).__name__
    if name == "AccumulateGrad":  # the end of a path: a leaf tensor, whose .grad gets filled
        leaf = function.variable
        about = f"holding {leaf.item()}" if leaf.numel() == 1 else f"of shape {tuple(leaf.shape)}"
        name += f" (adds into .grad of the leaf tensor {about})"
    print("    " + "    " * depth + name)
    for next_function, _ in function.next_functions:
        if next_function is not None:  # None: an input that needs no gradient, like the 1
            print_graph(next_function, depth + 1)


print("the graph recorded for y, from y back to x:")
print_graph(y.grad_fn)
# Read it from the bottom up and it is the forward computation: x**2 (PowBackward0) and 3*x
# (MulBackward0) are added (AddBackward0), then 1 is added (the top AddBackward0). x appears
# twice, once under each path; remember that for section 4.


# %% 3. backward() and .grad ----------------------------------------------------------------------
common.section("3. backward() and .grad")
# y.backward() walks the graph from y back to the leaves, applying the chain rule at each
# operation, and stores dy/dx in x.grad. By hand: the derivative of x**2 + 3x + 1 is 2x + 3,
# which at x = 2 is 2*2 + 3 = 7. The 2x comes through the x**2 path, the 3 through the 3*x path.
y.backward()
print(f"dy/dx at x = {x.item()}: {x.grad.item()}")
print(f"by hand: dy/dx = 2x + 3 = 2*{x.item():g} + 3 = {2 * x.item() + 3:g}")
# To save memory, backward() frees the intermediate values that the graph kept (here x itself,
# saved by x**2 to compute 2x). A second y.backward() therefore fails. Pass retain_graph=True
# if you really need to go backward twice; in training you never do, because every step runs a
# fresh forward pass that records a fresh graph.
try:
    y.backward()
except RuntimeError as error:
    print("a second y.backward() fails:", first_line(error).split(" (")[0])


# %% 4. Gradients accumulate until you zero them --------------------------------------------------
common.section("4. Gradients accumulate until you zero them")
# backward() does not overwrite .grad, it adds to it. That is how x got 2x + 3 in section 3:
# the two paths to x each brought their share, and the shares were added. The same rule means
# that a second backward pass adds a second 7 on top of the first.


def f(value):
    """The function of sections 2 to 5: value**2 + 3*value + 1."""
    return value**2 + 3 * value + 1


print("after the first backward: x.grad =", x.grad.item())
f(x).backward()  # a fresh forward pass (a fresh graph), then backward again
print("after a second backward, without zeroing: x.grad =", x.grad.item(), "(7 + 7)")
# So before each backward pass of a training loop, the old gradients must be cleared, or every
# step would follow the sum of all gradients so far. optimizer.zero_grad() does it for a model;
# by default it sets .grad to None, which saves memory and counts as zero at the next backward.
x.grad.zero_()  # in place (the trailing underscore): fill x.grad with zeros
f(x).backward()
print("after x.grad.zero_() and one more backward: x.grad =", x.grad.item())
# (Adding up is a feature: with too little memory for a large batch, you can run backward on a
# few small batches and step once, and the gradients add up to those of the large batch.)


# %% 5. Gradients of vectors: backward needs one number --------------------------------------------
common.section("5. Gradients of a sum and of a mean")
# backward() with no argument needs a result that is a single number, which a loss always is.
# For a tensor of results, first reduce them to one number: a sum or a mean.
v = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
try:
    (v**2).backward()
except RuntimeError as error:
    print("(v**2).backward() fails:", first_line(error))
(v**2).sum().backward()
print("v:", v.detach(), "| gradient of (v**2).sum(): v.grad =", v.grad, "(that is 2v)")
v.grad = None  # the other way to clear a gradient, the one optimizer.zero_grad() uses
(v**2).mean().backward()
print("gradient of (v**2).mean(): v.grad =", v.grad, "(2v / 3)")
# A mean divides every gradient by the number of elements. That is why losses are usually
# averaged over the batch: the size of the gradient, and so a good learning rate, then hardly
# depends on the batch size.


# %% 6. torch.no_grad() and detach() --------------------------------------------------------------
common.section("6. torch.no_grad() and detach()")
# Recording costs memory and time. Inside `with torch.no_grad():` nothing is recorded, and results
# do not require gradients. Use it whenever you only want numbers: evaluating a model, and
# changing the weights themselves, as in the next section.
with torch.no_grad():
    doubled = x * 2
print("x * 2 under no_grad: requires_grad", doubled.requires_grad, "| grad_fn", doubled.grad_fn)
# (Later lessons also call model.eval() before evaluating. That is something else: a few kinds of
# layers compute differently while a model trains and while it predicts, and model.eval()
# switches them to predicting; it does not stop the recording. Evaluation code uses both.
# torch.inference_mode() is a stricter, slightly faster no_grad.)

# Changing a leaf that requires gradients in place, outside no_grad, is refused: autograd would
# have to record the change as one more operation, and the weight would no longer be a leaf but
# the result of a computation. A weight update is not part of the model's computation, so it
# belongs under no_grad. (PyTorch's message says "Variable": an old name for a tensor.)
try:
    x -= 0.1 * x.grad
except RuntimeError as error:
    print("x -= 0.1 * x.grad outside no_grad fails:", first_line(error))
# detach() returns a tensor with the same values (sharing memory) that is cut off from the
# graph. Use it to keep a value for logging or plotting, or before .numpy(); for a single number
# .item() gives a plain Python float.
tripled = x * 3
print("x * 3:", tripled, "| (x * 3).detach():", tripled.detach(),
      "| requires_grad after detach:", tripled.detach().requires_grad)


# %% 7. Gradient descent on one number ------------------------------------------------------------
common.section("7. Gradient descent: step against the gradient")
# The gradient points in the direction in which y grows fastest. A small step the other way makes
# y smaller: x_new = x - lr * dy/dx, where the learning rate lr sets the step size. Repeat, and x
# walks towards the minimum of y, which for x**2 + 3x + 1 is at x = -1.5 (where 2x + 3 = 0).
with torch.no_grad():
    x.fill_(2.0)  # start again from x = 2 (fill_ is in place, hence the no_grad)
for step in range(51):
    y = f(x)
    x.grad = None
    y.backward()
    if step < 4 or step % 10 == 0:  # every one of the first steps, then every tenth
        print(f"step {step:2d}: x = {x.item():8.4f}, y = {y.item():8.4f}, "
              f"dy/dx = {x.grad.item():8.4f}")
    with torch.no_grad():  # the update itself must not be recorded
        x -= args.lr * x.grad
print("the minimum is at x = -1.5, where y = -1.25")
# How large may lr be? Here dy/dx = 2x + 3 = 2 * (x + 1.5): twice x's distance from the minimum.
# So each step multiplies that distance by (1 - 2 * lr): 0.8 with lr 0.1, so x walks in, 20%
# closer at each step. Above lr 0.5 the factor is negative: x jumps past the minimum to the other
# side. At lr 1 the factor is -1: each jump lands exactly as far out on the other side. Above 1
# each jump lands further out than the last, and x flies off. The first steps, from x = 2, with
# five learning rates:
print(f"each step multiplied x's distance from -1.5 by 1 - 2*lr = {1 - 2 * args.lr:g}")
print("the first six values of x with other learning rates:")
for lr, what_happens in [(0.1, "walks in, 20% closer each step"),
                         (0.5, "lands on the minimum in one step"),
                         (0.9, "jumps past it, less far each time: settles"),
                         (1.0, "jumps exactly as far past it: swings forever"),
                         (1.1, "jumps further past it each time: flies off")]:
    value = torch.tensor(2.0, requires_grad=True)
    values = []
    for _ in range(6):
        values.append(value.item())
        f(value).backward()
        with torch.no_grad():
            value -= lr * value.grad
        value.grad = None
    print(f"  lr {lr:3}: " + " ".join(f"{number:6.2f}" for number in values) + "  " + what_happens)
# Try --lr 1.0: x swings between 2 and -5 forever (the printed steps 10, 20, ... are even ones,
# so they all show x = 2). How large is too large depends on how steeply the loss curves: the
# losses of sections 8 and 9 curve more steeply, and there steps blow up above lr 0.75 or so, so
# with --lr 1.0 those losses grow to inf, while section 10's loss, gentler, still falls.


# %% 8. Linear regression, by hand ----------------------------------------------------------------
common.section("8. Fitting a line by hand")
# Now the same idea on a real (small) learning problem. We make 1,000 noisy points around the line
# y = 2x - 1 and ask gradient descent to find the weight (2) and the bias (-1) from the points.
num_samples = 1000
true_weight, true_bias = 2.0, -1.0
noise_std = 0.05
# Shape (1000, 1): one row per sample, one column per input feature. That is the layout nn.Linear
# expects (batch, features). The targets get the same shape as the predictions will have, so
# that prediction - target is element by element (see broadcasting in 01_tensors.py).
inputs = torch.rand(num_samples, 1) * 4 - 2  # uniform in [-2, 2)
targets = true_weight * inputs + true_bias + noise_std * torch.randn(num_samples, 1)
print("inputs:", tuple(inputs.shape), "| targets:", tuple(targets.shape))
# With noise, the data cannot pin down 2 and -1 exactly. The best any method can do is the
# least-squares line, which linear algebra gives directly: the reference to compare with.
design = torch.cat([inputs, torch.ones_like(inputs)], dim=1)  # columns: x and 1
best_weight, best_bias = torch.linalg.lstsq(design, targets).solution.flatten().tolist()
print(f"least squares (the best fit to these points): weight={best_weight:.4f} "
      f"bias={best_bias:.4f}")
print(f"the noise alone costs a mean squared error of about {noise_std}**2 = {noise_std**2:.4f}")

# The model is prediction = weight * x + bias, with two parameters that require gradients. They
# start at zero; gradient descent does the rest. The loss is the mean squared error (MSE).
weight = torch.zeros(1, requires_grad=True)
bias = torch.zeros(1, requires_grad=True)
num_steps = 100
for step in range(num_steps):
    predictions = inputs * weight + bias  # (1000, 1) * (1,) + (1,) -> (1000, 1): broadcasting
    loss = ((predictions - targets) ** 2).mean()
    loss.backward()
    if step == 0:
        # Check autograd against calculus: for L = mean((w*x + b - y)**2) the derivatives are
        # dL/dw = mean(2 * error * x) and dL/db = mean(2 * error), with error = prediction - y.
        error = predictions.detach() - targets
        print("autograd's gradients equal the formulas mean(2*error*x) and mean(2*error):",
              torch.allclose(weight.grad, (2 * error * inputs).mean())
              and torch.allclose(bias.grad, (2 * error).mean()))
    if step % 20 == 0 or step == num_steps - 1:
        print(f"step {step:3d}: loss {loss.item():.5f}, weight {weight.item():.4f}, "
              f"bias {bias.item():.4f}")
    with torch.no_grad():  # update the parameters without recording it
        weight -= args.lr * weight.grad
        bias -= args.lr * bias.grad
    weight.grad = None  # clear the gradients for the next step (section 4)
    bias.grad = None
print(f"by hand: weight={weight.item():.4f} bias={bias.item():.4f} "
      f"(true: weight={true_weight} bias={true_bias})")


# %% 9. Linear regression, the PyTorch way --------------------------------------------------------
common.section("9. Fitting a line with nn.Linear, nn.MSELoss and torch.optim.SGD")
# The same fit with the building blocks every PyTorch model uses:
#   - nn.Linear(1, 1) holds a weight of shape (1, 1) and a bias of shape (1,), both created with
#     requires_grad=True and random starting values, and computes inputs @ weight.T + bias;
#   - nn.MSELoss() computes the mean squared error;
#   - torch.optim.SGD does the update we wrote by hand (param -= lr * param.grad, for every
#     parameter it was given) in step(), and clears the gradients in zero_grad().
# And one change that real training always makes: each step sees a small random batch of the
# points, not all of them. Each step is then cheaper, and only one batch at a time has to be on
# the GPU.
model = nn.Linear(in_features=1, out_features=1)
model.to(device)  # for a module, .to moves the parameters in place (01_tensors.py, section 10)
loss_fn = nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
for name, parameter in model.named_parameters():
    print(f"{name}: shape {tuple(parameter.shape)}, starts at {parameter.item():.4f}, "
          f"requires_grad {parameter.requires_grad}")
print("training on", device)

batch_size = 100
num_epochs = 10  # an epoch is one pass over all the points: 10 batches of 100 here
for epoch in range(1, num_epochs + 1):
    order = torch.randperm(num_samples)  # a new random order every epoch ("shuffling")
    epoch_loss = 0.0
    for start in range(0, num_samples, batch_size):
        # 1 get a batch (03_data.py hands this job to a DataLoader)
        batch_indices = order[start:start + batch_size]
        batch_inputs, batch_targets = inputs[batch_indices], targets[batch_indices]
        # 2 move the batch to the device, where the model is
        batch_inputs, batch_targets = batch_inputs.to(device), batch_targets.to(device)
        # 3 zero the gradients (or they would add up over the steps, section 4)
        optimizer.zero_grad()
        # 4 forward pass: calling the model runs its forward() and records the graph
        predictions = model(batch_inputs)
        # 5 loss: one number that says how wrong the predictions are
        loss = loss_fn(predictions, batch_targets)
        # 6 backward pass: fills .grad of every parameter
        loss.backward()
        # 7 optimizer.step(): every parameter takes a step against its gradient
        optimizer.step()
        epoch_loss += loss.item() * len(batch_indices)  # .item(): a plain number, no graph
    print(f"epoch {epoch:2d}: mean loss {epoch_loss / num_samples:.5f}")

learned_weight = model.weight.item()
learned_bias = model.bias.item()
print(f"learned: weight={learned_weight:.4f} bias={learned_bias:.4f} "
      f"(true: weight={true_weight} bias={true_bias})")
print(f"least squares:   weight={best_weight:.4f} bias={best_bias:.4f}")
# What to look at: the loss falls to about the noise level and stays there, and both fits agree
# with the least-squares line to a few thousandths; that line itself is off the true one by about
# as much, because of the noise. The loop above is the training loop of 05_train.py; only the
# model (a CNN), the loss (one made for choosing among classes) and the data (images) will change.


# %% 10. Choosing a loss --------------------------------------------------------------------------
common.section("10. Choosing a loss: a number, yes or no, one of many")
# The loss states the question the model answers. Section 9 asked "which number?" and used the
# mean squared error. Now a yes/no question: is a point (x, y) above the line y = 2x - 1?
# The model outputs one number per point, a logit: any real number, above 0 for "yes" (the
# larger, the surer), below 0 for "no". The sigmoid, 1 / (1 + e**-logit), turns it into the
# probability of "yes", between 0 and 1. nn.BCEWithLogitsLoss (binary cross-entropy) takes the
# logits and scores each point by -log(the probability given to the right answer): near 0 when
# the model was sure and right, large when it was sure and wrong.
points = torch.rand(num_samples, 2) * 4 - 2  # 1,000 points (x, y) in the square [-2, 2)^2
labels = (points[:, 1] > 2 * points[:, 0] - 1).float().unsqueeze(1)  # 1.0 yes, 0.0 no; (1000, 1)
model = nn.Linear(in_features=2, out_features=1).to(device)  # 2 inputs, x and y; one logit
loss_fn = nn.BCEWithLogitsLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
points, labels = points.to(device), labels.to(device)
for step in range(201):  # all 1,000 points in every step, as in section 8
    optimizer.zero_grad()
    loss = loss_fn(model(points), labels)
    loss.backward()
    optimizer.step()
    if step % 50 == 0:
        print(f"step {step:3d}: loss {loss.item():.4f}")
with torch.no_grad():
    logits = model(points)
# A logit above 0 means a probability above 0.5: "yes". Accuracy is the fraction answered right.
accuracy = ((logits > 0).float() == labels).float().mean().item()
print(f"yes/no classifier: final accuracy {accuracy:.3f} on the points it learned from")
print("probability of 'yes' for the first 3 points:", torch.sigmoid(logits[:3]).flatten().cpu(),
      "| labels:", labels[:3].flatten().cpu())

# Each loss wants its targets in its own form. For "which of several classes?", the model gives
# one logit per class, nn.CrossEntropyLoss turns them into probabilities that add up to 1 (a
# "softmax": e**logit_i / the sum of e**logit_j over all classes) and scores -log(the
# probability of the right class). Its target is a class index per
# sample: the number of the class in a list of class names, 0 for the first. Here 2 samples and
# 3 classes, both answered right, so a small loss.
class_logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])  # (N, number of classes)
class_indices = torch.tensor([0, 2])  # sample 0 is of class 0, sample 1 of class 2
class_loss = nn.CrossEntropyLoss()(class_logits, class_indices)
for name, target in [("MSELoss", targets), ("BCEWithLogitsLoss", labels),
                     ("CrossEntropyLoss", class_indices)]:
    print(f"{name:17s} targets: {target.dtype}, shape {tuple(target.shape)}")
print(f"cross-entropy of the 2 samples: {class_loss.item():.4f}")
try:  # a common first mistake: yes/no labels left as integers
    loss_fn(logits, labels.long())
except RuntimeError as error:
    print("BCEWithLogitsLoss with int64 targets fails:", first_line(error),
          "(the fix: labels.float())")

# Why the model ends in logits, and not in a sigmoid with nn.BCELoss after it (or a softmax,
# a log and nn.NLLLoss, for classes): in float32, sigmoid(20) rounds to exactly 1.0. For a "no"
# point (target 0) the loss, -log(1 - sigmoid), becomes -log(0) = inf; nn.BCELoss clamps it at
# 100, and the gradient through the rounded sigmoid is 0, so a model that is sure and wrong gets
# no push to change. BCEWithLogitsLoss works from the logit itself: for target 0 the same loss
# is log(1 + e**logit), which it computes as logit + log(1 + e**-logit), a form in which nothing
# rounds away; its gradient is sigmoid(logit) - target, here a full 1. CrossEntropyLoss does the
# same for classes.


def sigmoid_then_bce(logit, target):
    """The way that loses precision: a probability first, then nn.BCELoss on it."""
    return nn.BCELoss()(torch.sigmoid(logit), target)


print("a 'no' point (target 0): loss (its gradient with respect to the logit)")
for logit in (2.0, 20.0, 40.0):
    row = f"logit {logit:2.0f}: exact {math.log1p(math.exp(logit)):7.4f}"
    for name, function in [("BCEWithLogitsLoss", nn.BCEWithLogitsLoss()),
                           ("sigmoid then BCELoss", sigmoid_then_bce)]:
        logit_tensor = torch.tensor(logit, requires_grad=True)
        loss = function(logit_tensor, torch.tensor(0.0))
        loss.backward()
        row += f" | {name} {loss.item():8.4f} ({logit_tensor.grad.item():.4f})"
    print(row)

print("\nwhich loss for which question (N: the number of samples; the model outputs plain "
      "numbers or logits):")
for question, loss_name, target_form in [
        ("question", "loss", "targets"),
        ("a number (a price, a temperature)", "MSELoss, or L1Loss / HuberLoss *",
         "float, the output's shape"),
        ("yes or no (spam or not?)", "BCEWithLogitsLoss", "float 0./1., the logits' shape"),
        ("one of many classes (CIFAR-10, in 05)", "CrossEntropyLoss", "int64 class indices, (N,)"),
        ("several labels at once (multi-label)", "BCEWithLogitsLoss, on each label",
         "float 0./1., (N, labels)")]:
    print(f"  {question:38s} {loss_name:33s} {target_form}")
print("  * less pulled by a few points far off the rest")
# What to look at: the classifier's loss falls and its accuracy ends near 1 (a straight boundary
# is all it needs); the targets' dtypes; and the last two rows of the logit table, where the
# sigmoid route reports 100 instead of the true loss and gives a gradient of 0.


# %% Summary ---------------------------------------------------------------------------------------
common.section("Summary: what you just did")
print("""\
- autograd recorded y = x**2 + 3x + 1 as a graph while it ran; backward() gave dy/dx = 7
- gradients add up until you zero them; no_grad() and detach() stop the recording
- gradient descent walked x down to the minimum, with a learning rate small enough
- a line was fitted by hand, then with nn.Linear, nn.MSELoss, SGD and the 7 steps of 05's loop
- a loss for each kind of question, and why a classifier outputs logits, not probabilities""")
print("\nNext, 03_data.py: loading CIFAR-10 images in batches.")
