"""10 Sequences: an LSTM that learns to write text, one character at a time.

What you will learn
    - How text becomes numbers (a vocabulary), and batches of sequences whose targets are the
      inputs shifted by one character, with the shape of every tensor printed.
    - What an LSTM (nn.LSTM) adds to 04_model.py's networks: a hidden state that carries what it
      has read from one character to the next and from one batch to the next; why that state is
      detached between batches and reset at the start of every pass.
    - Cross-entropy at every position of every sequence, and gradient clipping.
    - Perplexity (exp of the mean loss) on held-out text, and generating text with a temperature.

How to run it (or one `# %%` cell at a time in VS Code or Jupyter; --help lists the flags)
    python 10_sequences.py                      # a minute or two on a 2-core CPU
    python 10_sequences.py --dry-run            # one batch of everything, no files, seconds
    python 10_sequences.py --epochs 30 --resume # go on from the last finished epoch
    python 10_sequences.py --text my_book.txt --checkpoint-dir checkpoints/my_book

Reads texts/pytorch_notes.txt (or --text, up to 50 MB): this repository's own prose, about
120,000 characters, so the model learns to write like these lessons. Writes checkpoints/sequences/
(never 05's files): last.pt and history.json every epoch, best.pt when the held-out perplexity
improves. Ctrl-C keeps every finished epoch and prints the command that goes on. Each cell
defines what it teaches, then uses it under `if __name__ == "__main__":`: an import only defines.
"""

# %% Setup ---------------------------------------------------------------------------------------
import contextlib
import hashlib
import math
import time
from pathlib import Path

import torch
from torch import nn

import checkpointing
import common

DEFAULT_TEXT = common.REPO_DIR / "texts" / "pytorch_notes.txt"
DEFAULT_PROMPT = "The model"  # what the samples start from (section 7)
EMBEDDING_DIM = 64  # numbers per character fed to the LSTM (section 3)
EVALUATION_STREAMS = 8  # parallel streams through the held-out text (section 2)
MAX_TEXT_BYTES = 50 * 2**20  # the largest --text read (the default text is 0.12 MB)
# What every epoch adds to the history, and the name on this script's checkpoints (section 8).
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_perplexity", "seconds")
CHECKPOINT_KIND = "10_sequences next-character LSTM"

# Plumbing, down to section 1, which a first read can skip: the flags (each number within a range
# that makes sense; --help lists them), the device, the seed and the run's folder.
NUMBER_FLAGS = [  # flag, type, default, (lowest, highest) allowed, help
    ("--epochs", int, 20, (1, 10_000), "passes over the training text"),
    ("--batch-size", int, 32, (1, 4096), "sequences per batch (streams through the text)"),
    ("--sequence-length", int, 100, (1, 10_000), "characters per sequence"),
    ("--hidden-size", int, 256, (1, 4096), "numbers in the LSTM's hidden state"),
    ("--num-layers", int, 1, (1, 16), "LSTM layers stacked on each other"),
    ("--dropout", float, 0.2, (0, 0.9), "share of the LSTM's outputs zeroed in training"),
    ("--lr", float, 3e-3, (1e-6, 1), "Adam's learning rate"),
    ("--max-grad-norm", float, 1.0, (1e-3, 1e3), "the largest gradient norm kept (section 5)"),
    ("--temperature", float, 0.8, (0.01, 100), "samples: below 1 safer, above 1 wilder"),
    ("--sample-length", int, 300, (1, 100_000), "characters written after every epoch"),
    ("--held-out-fraction", float, 0.1, (0.01, 0.9), "share of the text kept out of training"),
]
if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (a missing --text): one sentence
    parser = common.make_parser("Lesson 10: a next-character LSTM trained on a text.",
                                device_purpose="where the LSTM trains")
    for flag, kind, default, _, help_text in NUMBER_FLAGS:
        parser.add_argument(flag, type=kind, default=default, help=help_text)
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="the UTF-8 text to learn")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="what every sample starts from")
    parser.add_argument("--checkpoint-dir", type=Path, default=common.CHECKPOINT_DIR / "sequences",
                        help="where last.pt, best.pt and history.json are written")
    parser.add_argument("--resume", action="store_true", help="go on from --checkpoint-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run kept there")
    parser.add_argument("--dry-run", action="store_true", help="one batch of all; no files")
    args = common.parse_args(parser)
    for flag, _, _, (lowest, highest), _ in NUMBER_FLAGS:
        if not lowest <= getattr(args, flag[2:].replace("-", "_")) <= highest:  # nan too
            parser.error(f"{flag} must be between {lowest} and {highest}")
    device = common.get_device(args.device)  # chosen now, so a wrong --device fails straight away
    common.seed_everything(args.seed)
    # The run's folder (section 8): locked, never silently replaced, read back with --resume.
    run = checkpointing.TrainingRun(args.checkpoint_dir, args.resume, args.overwrite,
                                    args.dry_run, history_keys=HISTORY_KEYS, monitor="val_loss",
                                    mode="min", kind=CHECKPOINT_KIND, device=device)
    print(f"Device: {device}")


# %% 1. Characters as numbers: a vocabulary -----------------------------------------------------
def read_text(path, max_bytes=MAX_TEXT_BYTES):
    """The text of the UTF-8 file `path`; anything else (no file, a folder, a pipe, a device such
    as /dev/zero, over `max_bytes`, empty, not UTF-8) is a UserError."""
    path, text = Path(path), ""
    if path.is_file():  # checked before opening: a pipe would wait, /dev/zero never ends
        with contextlib.suppress(OSError, UnicodeDecodeError), open(path, "rb") as file:
            text = file.read(max_bytes + 1).decode("utf-8")  # never more than that
    if not 0 < len(text.encode("utf-8")) <= max_bytes:
        raise common.UserError(f"cannot learn from --text {path}: it must be a UTF-8 text file, "
                               f"not empty and at most {max_bytes:,} bytes.")
    return text


class Vocabulary:
    """The characters of a text, each with an index: 0, 1, 2, ... in sorted order (the same
    every run). A network computes with numbers, so text goes in as indices and comes out as
    scores, one per index; the vocabulary translates both ways."""

    def __init__(self, text):
        self.characters = sorted(set(text))  # index -> character
        self.index_of = {character: index for index, character in enumerate(self.characters)}

    def __len__(self):
        return len(self.characters)

    def encode(self, text):
        """`text` as an int64 tensor of indices (int64: what nn.Embedding and the loss take).
        A character that is not in the vocabulary is a ValueError."""
        unknown = sorted(set(text) - self.index_of.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([self.index_of[character] for character in text], dtype=torch.long)

    def decode(self, indices):
        """The text that a sequence of indices (a tensor or a list) stands for."""
        return "".join(self.characters[index] for index in torch.as_tensor(indices).tolist())


if __name__ == "__main__":
    common.section("1. Characters as numbers: a vocabulary")
    text = read_text(args.text)
    # From the whole text, held-out part included: it lists the symbols the model can write and
    # learns nothing, so nothing leaks into training (words would need a rule for unknown ones).
    vocabulary = Vocabulary(text)
    if args.prompt == DEFAULT_PROMPT and not set(DEFAULT_PROMPT) <= set(text):
        args.prompt = text[0]  # the samples of section 7 need a start made of known characters
    if not args.prompt or not set(args.prompt) <= set(text):
        raise common.UserError(f"--prompt {args.prompt!r} must be characters of the text.")
    print(f"text: {args.text} ({len(text):,} characters)")
    print(f"vocabulary: {len(vocabulary)} characters: {''.join(vocabulary.characters)!r}")
    example = text[:12]  # the first characters of the text, and their indices
    print(f"{example!r} -> {vocabulary.encode(example).tolist()} -> "
          f"{vocabulary.decode(vocabulary.encode(example))!r}")
    encoded = vocabulary.encode(text)
    # Held-out text: the last 10%, in one piece (characters picked at random would sit between
    # training ones): perplexity on it (section 6) measures text never read, not text by heart.
    split = int(len(encoded) * (1 - args.held_out_fraction))
    train_encoded, held_out_encoded = encoded[:split], encoded[split:]
    if len(train_encoded) < 2 * args.batch_size or len(held_out_encoded) < 2 * EVALUATION_STREAMS:
        raise common.UserError(f"{args.text} is too short for streams of 2 characters or more "
                               "(section 2); pass a longer --text or a smaller --batch-size.")
    if args.dry_run:  # one batch of each (section 2 makes the batches)
        train_encoded = train_encoded[:args.batch_size * (args.sequence_length + 1)]
        held_out_encoded = held_out_encoded[:EVALUATION_STREAMS * (args.sequence_length + 1)]
    print(f"characters of training text: {len(train_encoded):,}   of held-out text: "
          f"{len(held_out_encoded):,}" + ("  (--dry-run: one batch each)" if args.dry_run else ""))


# %% 2. Batches: inputs, and targets shifted by one ----------------------------------------------
class SequenceLoader:
    """Batches of (inputs, targets) from one long encoded text, in order, for a recurrent model.

    The text is cut into `batch_size` equal streams, the rows of a (batch_size, steps) tensor:
    with 32 streams, row 0 is the first 32nd of the text, row 1 the second, and so on. Batch k
    takes columns k*L to (k+1)*L of every row (L = sequence_length) as inputs, and the same
    columns moved one character to the right as targets. So row i of batch k+1 continues row i
    of batch k, and the hidden state can be carried across (section 5). Like a DataLoader it is
    iterated over once per epoch and has a len(); it never shuffles, which would break that.

    Args:
        encoded: an int64 tensor of character indices (Vocabulary.encode); too short to give
            every stream two characters, it is a ValueError.
        batch_size: how many streams, that is sequences per batch.
        sequence_length: characters per sequence (the last batch can be shorter).
    """

    continues_rows = True  # the promise train_one_epoch checks before it carries the state over

    def __init__(self, encoded, batch_size, sequence_length):
        steps = len(encoded) // batch_size  # characters per stream; the few left over are dropped
        if steps < 2:
            raise ValueError(f"{len(encoded)} characters are too few for {batch_size} streams")
        self.streams = encoded[:batch_size * steps].view(batch_size, steps)
        self.sequence_length = sequence_length

    def __len__(self):
        # The last character of a stream is only ever a target, never an input: hence the - 1.
        return math.ceil((self.streams.shape[1] - 1) / self.sequence_length)

    def __iter__(self):
        last_input = self.streams.shape[1] - 1
        for start in range(0, last_input, self.sequence_length):
            end = min(start + self.sequence_length, last_input)
            yield self.streams[:, start:end], self.streams[:, start + 1:end + 1]


if __name__ == "__main__":
    common.section("2. Batches: inputs, and targets shifted by one")
    train_loader = SequenceLoader(train_encoded, args.batch_size, args.sequence_length)
    # Only 8 held-out streams: each starts from an empty state, and 8 make fewer cold starts.
    held_out_loader = SequenceLoader(held_out_encoded, EVALUATION_STREAMS, args.sequence_length)
    print(f"training streams: {tuple(train_loader.streams.shape)} (streams, characters each)   "
          f"batches per epoch: {len(train_loader)}")
    inputs, targets = next(iter(train_loader))
    print(f"one batch: inputs {tuple(inputs.shape)}  targets {tuple(targets.shape)}  "
          f"(sequences, characters), dtype {inputs.dtype}")
    # The model reads inputs[i, t] and must predict targets[i, t] = inputs[i, t + 1], the next
    # character: every position is a prediction to learn from (32 x 100 = 3,200 per batch).
    print(f"inputs[0, :40]:  {vocabulary.decode(inputs[0, :40])!r}")
    print(f"targets[0, :40]: {vocabulary.decode(targets[0, :40])!r}")


# %% 3. The model: an embedding, an LSTM, a linear layer -----------------------------------------
class CharacterLSTM(nn.Module):
    """Scores for the next character at every position of a batch of sequences.

    Args:
        vocabulary_size: how many characters there are (the embedding's rows, the output size).
        embedding_dim: numbers per character fed to the LSTM.
        hidden_size: numbers in the LSTM's hidden state.
        num_layers: LSTMs stacked on each other, each reading the outputs of the one below.
        dropout: share of outputs zeroed at random in training, after each LSTM layer.

    Called as model(inputs, hidden=None) on int64 indices (batch, time), it returns scores
    (batch, time, vocabulary_size), one logit per character, and the hidden state to pass on.
    """

    def __init__(self, vocabulary_size, embedding_dim=EMBEDDING_DIM, hidden_size=256,
                 num_layers=1, dropout=0.0):
        super().__init__()
        # An embedding is a learned table with one row of embedding_dim numbers per character
        # (index 7 picks row 7): a one-hot vector times a matrix, without the one-hot vector.
        self.embedding = nn.Embedding(vocabulary_size, embedding_dim)
        # The LSTM reads the sequence one step at a time, combining each new input with its state
        # from the step before (h, the "hidden state", which it also outputs, and c, the "cell
        # state", its longer-term memory) through learned gates that decide what to forget, store
        # and output. The same weights serve every step, so any length can be read. batch_first:
        # (batch, time, features), as everywhere in these lessons (the default puts time first).
        # nn.LSTM's own dropout acts only between stacked layers, hence 0 for a single layer.
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)  # after the last layer: makes memorising harder
        # The same linear layer scores every position: hidden_size numbers in, one score per
        # character of the vocabulary out (04_model.py's classifier, applied at every step).
        self.head = nn.Linear(hidden_size, vocabulary_size)

    def forward(self, inputs, hidden=None):
        embedded = self.embedding(inputs)  # (batch, time) -> (batch, time, embedding_dim)
        # hidden=None starts from zeros. outputs: h at every step (batch, time, hidden_size);
        # hidden: (h, c) after the last step, each (num_layers, batch, hidden_size), batch second.
        outputs, hidden = self.lstm(embedded, hidden)
        scores = self.head(self.dropout(outputs))  # (batch, time, vocabulary_size)
        return scores, hidden


if __name__ == "__main__":
    common.section("3. The model: an embedding, an LSTM, a linear layer")
    model = CharacterLSTM(len(vocabulary), EMBEDDING_DIM, args.hidden_size, args.num_layers,
                          args.dropout).to(device)
    print(model)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    inputs, targets = inputs.to(device), targets.to(device)
    embedded = model.embedding(inputs)
    outputs, (h, c) = model.lstm(embedded)
    scores, hidden = model(inputs)
    print(f"inputs {tuple(inputs.shape)} -> embedding {tuple(embedded.shape)} -> LSTM outputs "
          f"{tuple(outputs.shape)} -> scores {tuple(scores.shape)}")
    print(f"hidden state after the last step: h {tuple(h.shape)}, c {tuple(c.shape)} "
          "(layers, sequences, hidden size)")


# %% 4. A loss at every position ----------------------------------------------------------------
def sequence_loss(loss_fn, scores, targets):
    """`loss_fn` (e.g. nn.CrossEntropyLoss()) over every position of every sequence.

    CrossEntropyLoss takes scores (rows, classes) and targets (rows,), as in 05_train.py where a
    row was an image. Here a row is one position of one sequence: (batch, time, vocabulary)
    becomes (batch x time, vocabulary), (batch, time) becomes (batch x time,), and the mean is
    over every character of the batch. reshape, not view: it also takes non-contiguous tensors.
    """
    return loss_fn(scores.reshape(-1, scores.shape[-1]), targets.reshape(-1))


if __name__ == "__main__":
    common.section("4. A loss at every position")
    loss_fn = nn.CrossEntropyLoss()
    print(f"scores {tuple(scores.shape)} -> {tuple(scores.reshape(-1, len(vocabulary)).shape)}  "
          f"targets {tuple(targets.shape)} -> {tuple(targets.reshape(-1).shape)}")
    loss = sequence_loss(loss_fn, scores, targets)
    # An untrained model spreads its bets evenly over the vocabulary: a loss near
    # ln(vocabulary size), the loss of guessing.
    print(f"loss of the untrained model: {loss.item():.3f}   "
          f"ln({len(vocabulary)}) = {math.log(len(vocabulary)):.3f}")


# %% 5. Through time: a detached hidden state, clipped gradients ---------------------------------
def detach_hidden(hidden):
    """The same hidden state, cut off from the graph of the batch that computed it: an LSTM's
    (h, c) pair, or the single tensor of an nn.GRU or nn.RNN."""
    if isinstance(hidden, tuple):
        return tuple(state.detach() for state in hidden)
    return hidden.detach()


if __name__ == "__main__":
    common.section("5. Through time: a detached hidden state, clipped gradients")
    # Row i of the next batch continues row i of this one, so the model should start it from
    # the state it ended this one with: it then knows what it was in the middle of. But that
    # state still points into this batch's graph (02_autograd.py): the next backward() would
    # follow it into this batch, whose graph is already freed, and fail (kept, every batch would
    # reach back through all before it). detach() keeps the values and cuts the link: gradients
    # reach back one sequence at most ("truncated backpropagation through time").
    # The mistake, shown on one batch and then the same batch again from its state as it is:
    scores, hidden = model(inputs)
    sequence_loss(loss_fn, scores, targets).backward()
    scores, _ = model(inputs, hidden)  # `hidden` not detached: the mistake
    try:
        sequence_loss(loss_fn, scores, targets).backward()
    except RuntimeError as error:
        print("without detach, the second backward() fails:", str(error).split(".")[0])
    model.zero_grad()
    scores, _ = model(inputs, detach_hidden(hidden))
    sequence_loss(loss_fn, scores, targets).backward()
    print("with detach_hidden(hidden), it works")
    # And a reset: each epoch starts the streams again from their beginnings, where the state
    # left at their ends is wrong: hidden=None (zeros), as for evaluating and writing text.
    # Gradient clipping. The gradient goes back through the same weights once per step, 100
    # times for a sequence of 100: like a number multiplied by itself 100 times, it can shrink to
    # nothing (the LSTM's gates are built against that) or grow enormous and throw the weights
    # far away. clip_grad_norm_ measures the norm of all the gradients together (the square root
    # of the sum of their squares) and, above max_norm, scales them all down to it: same
    # direction, shorter step. Untrained gradients are small, as here: it is for later spikes.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=args.max_grad_norm)
    print(f"gradient norm of this batch: {norm.item():.3f}  (scaled down to at most "
          f"{args.max_grad_norm} when above it)")
    model.zero_grad()


# %% 6. Training and evaluating: the seven steps --------------------------------------------------
# These follow 05_train.py's train_one_epoch and evaluate step by step, with the same names, and
# differ where a recurrent model does: a hidden state carried over, scores with a time axis.
def check_loader(loader, loss_fn):
    """Refuse a summed loss, and a loader whose rows may not go on from batch to batch."""
    if getattr(loss_fn, "reduction", "mean") != "mean":  # the sums below need a mean, not a sum
        raise ValueError(f"loss_fn must return the mean, not reduction={loss_fn.reduction!r}")
    if not getattr(loader, "continues_rows", False):
        raise ValueError(f"{type(loader).__name__} lacks continues_rows = True: the hidden state "
                         "is carried over only if row i of a batch continues row i of the last.")


def train_one_epoch(model, loader, loss_fn, optimizer, device, max_grad_norm=1.0):
    """Train a recurrent `model` on every batch of `loader` once, in order.

    Args:
        model: an nn.Module called as model(inputs, hidden) -> (scores, hidden), with scores of
            shape (batch, time, vocabulary), e.g. CharacterLSTM; already on `device`.
        loader: yields int64 (inputs, targets) of shape (batch, time) whose row i goes on from
            row i of the batch before, and says so: continues_rows = True, as SequenceLoader.
        loss_fn: e.g. nn.CrossEntropyLoss(), returning the mean over its rows.
        optimizer: a torch.optim optimizer over the model's parameters.
        device: where the model is: "cpu", "cuda", "mps" or a torch.device.
        max_grad_norm: gradients are scaled down to at most this norm before each step.

    Returns:
        The mean loss per character; a FloatingPointError if it became NaN or infinite.
    """
    check_loader(loader, loss_fn)
    model.train()  # training mode: dropout is on
    loss_sum = torch.zeros((), device=device)  # kept on the device: no wait for a GPU per step
    seen = 0
    hidden = None  # a fresh (zero) state: every stream starts again at its beginning
    for inputs, targets in loader:  # 1. Get a batch from the loader
        # 2. Move the batch to the model's device.
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if hidden is not None:
            hidden = detach_hidden(hidden)  # keep the state, not the last batch's graph
        # 3. Zero the gradients: backward() adds to each .grad, so last step's must go first.
        optimizer.zero_grad()
        scores, hidden = model(inputs, hidden)  # 4. Forward pass: scores at every position
        loss = sequence_loss(loss_fn, scores, targets)  # 5. Loss: the mean over all of them
        loss.backward()  # 6. Backward pass: d(loss)/d(weight) into every .grad
        # ... then clipping (section 5), between computing the gradients and using them.
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()  # 7. Update every weight from its (clipped) gradient
        loss_sum += loss.detach() * targets.numel()  # bookkeeping: the batch's mean back to a sum
        seen += targets.numel()
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the training loss became {mean_loss}")
    return mean_loss


def evaluate(model, loader, loss_fn, device):
    """The mean loss per character of `model` on every batch of `loader`, without training it;
    the arguments are those of train_one_epoch. perplexity() of it reads as a number of choices."""
    check_loader(loader, loss_fn)
    model.eval()  # evaluation mode: dropout is off
    loss_sum = torch.zeros((), device=device)
    seen = 0
    hidden = None
    with torch.no_grad():  # no training here: no graph, so there is nothing to detach either
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            scores, hidden = model(inputs, hidden)
            loss_sum += sequence_loss(loss_fn, scores, targets) * targets.numel()
            seen += targets.numel()
    return loss_sum.item() / seen


def perplexity(mean_loss):
    """exp(mean loss per character); inf, not an OverflowError, for a loss too large for exp."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf


if __name__ == "__main__":
    common.section("6. Training and evaluating: the seven steps, and perplexity")
    # Perplexity reads as a number of choices: at 5, the model is as unsure as if it picked among
    # 5 equally likely characters; 1 is perfect. Baselines to beat: a uniform guess (the
    # vocabulary size), and each character's frequency in the training text (counts + 1, none 0).
    counts = torch.bincount(train_encoded, minlength=len(vocabulary)).double() + 1
    frequencies_loss = -(counts / counts.sum())[held_out_encoded].log().mean().item()
    print(f"perplexity on the held-out text of a uniform guess: {len(vocabulary)}; of character "
          f"frequencies alone: {perplexity(frequencies_loss):.1f}")
    # Adam rather than 05's SGD: it adapts every weight's step to the size of its gradients, the
    # usual choice for recurrent networks, and needs no warm-up or schedule at 1e-3 to 3e-3.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)


# %% 7. Generating text, with a temperature ------------------------------------------------------
def generate(model, vocabulary, prompt, length, temperature=1.0, device="cpu", seed=None):
    """`length` new characters written by `model` after `prompt`, one at a time.

    The model reads the prompt, which sets its hidden state; then, again and again, its scores
    for the next character are divided by `temperature` and turned into probabilities with
    softmax, a character is drawn from them, and it is fed back in as the next input.

    Args:
        model, vocabulary: e.g. CharacterLSTM, on `device`, and the Vocabulary it learned.
        prompt: the text to start from (at least one character, all in the vocabulary).
        length: how many characters to write.
        temperature: above 0. Dividing the scores by 1 keeps the model's probabilities; by less
            than 1 sharpens them (the likely characters win more often: safer, more repetitive
            text); by more than 1 flattens them (more surprises, more mistakes).
        device: where the model is.
        seed: draw with a generator of its own, seeded: repeatable, and training's random
            numbers are left alone (None: draw from those).

    Returns:
        A string of `length` characters, all from the vocabulary (the prompt not included).
    """
    if not temperature > 0 or not prompt:
        raise ValueError("the temperature must be above 0, and the prompt not empty")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()  # no dropout while writing
    written = []
    with torch.no_grad():
        scores, hidden = model(vocabulary.encode(prompt).unsqueeze(0).to(device))  # (1, time)
        for _ in range(length):
            # The scores after the last character read, as probabilities, drawn on the CPU in
            # float32 so that a seed draws the same numbers on every device. The largest score is
            # subtracted first: the same probabilities, and no temperature can overflow them.
            last = scores[0, -1].float().cpu()
            probabilities = torch.softmax((last - last.max()) / temperature, dim=-1)
            next_index = torch.multinomial(probabilities, num_samples=1, generator=generator)
            written.append(next_index.item())
            scores, hidden = model(next_index.view(1, 1).to(device), hidden)
    model.train(was_training)  # back to the mode it was in
    return vocabulary.decode(written)


if __name__ == "__main__":
    common.section("7. Generating text, with a temperature")
    # Untrained, the model writes noise: every character about as likely as any other.
    sample_length = 40 if args.dry_run else args.sample_length
    untrained = generate(model, vocabulary, args.prompt, min(sample_length, 80), args.temperature,
                         device, seed=args.seed)
    print(f"the untrained model: {args.prompt + untrained!r}")


# %% 8. The training run ------------------------------------------------------------------------
if __name__ == "__main__":
    common.section("8. Training")
    # What every checkpoint records: the model's sizes and vocabulary (to rebuild it) and the
    # settings --resume must keep; the text by a SHA-256 fingerprint of its contents, not its path.
    config = {
        "model": {"vocabulary_size": len(vocabulary), "embedding_dim": EMBEDDING_DIM,
                  "hidden_size": args.hidden_size, "num_layers": args.num_layers,
                  "dropout": args.dropout},
        "vocabulary": "".join(vocabulary.characters), "text": str(args.text),
        "text_fingerprint": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "held_out_fraction": args.held_out_fraction, "batch_size": args.batch_size,
        "sequence_length": args.sequence_length, "lr": args.lr,
        "max_grad_norm": args.max_grad_norm, "seed": args.seed}
    # Epoch 1 for a new run. A resumed one is checked first (the checkpoint's parts, and its
    # settings against these), then its weights and Adam's running averages are put back.
    first_epoch = run.start(config, may_change=("text",), model=model, optimizer=optimizer)
    num_epochs = 1 if args.dry_run else args.epochs
    if first_epoch > num_epochs:
        print(f"Nothing to train: it already has {first_epoch - 1} epochs; pass a larger --epochs.")
    run_start = time.perf_counter()
    # Ctrl-C (or SIGTERM) stops with the command that goes on; a diverged loss is one sentence.
    with run.stop_cleanly(advice=f"try a lower learning rate, e.g. --lr {args.lr / 3:.2g}"):
        for epoch in range(first_epoch, num_epochs + 1):
            # Re-seeded every epoch: epoch N gets the same dropout, resumed or not.
            torch.manual_seed(args.seed + epoch)
            epoch_start = time.perf_counter()
            train_loss = train_one_epoch(model, train_loader, loss_fn, optimizer, device,
                                         args.max_grad_norm)
            # (The training loss is at first the higher: averaged over an epoch in which the model
            # was still learning, with dropout; the held-out loss comes after, without dropout.)
            val_loss = evaluate(model, held_out_loader, loss_fn, device)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "val_perplexity": perplexity(val_loss),
                   "seconds": time.perf_counter() - epoch_start}
            # Saves best.pt (if the held-out loss fell), last.pt and history.json. A loss ten
            # times that of guessing (ln of the vocabulary size) means the weights blew up.
            improved = run.end_epoch(row, max_loss=checkpointing.blown_up_loss(len(vocabulary)))
            print(f"epoch {epoch:>3}/{num_epochs}  train loss {train_loss:.3f}  |  held-out loss "
                  f"{val_loss:.3f}, perplexity {row['val_perplexity']:6.2f}  |  "
                  f"{row['seconds']:5.1f} s" + ("  *best" if improved else ""))
            # A sample after every epoch: watch it go from noise to words to something like prose.
            print("  " + repr(args.prompt + generate(model, vocabulary, args.prompt, sample_length,
                                                     args.temperature, device, args.seed + epoch)))
    if first_epoch <= num_epochs:
        print(f"\nheld-out perplexity: {row['val_perplexity']:.2f} after epoch {epoch} (best "
              f"{perplexity(run.best):.2f}), {time.perf_counter() - run_start:.0f} s of training")
    if not args.dry_run:
        print(f"Checkpoints: {run.last_path}, {run.best_path} and {run.history_path}")
    # What to look at, on the default text: held-out perplexity from about 17 after epoch 1 to
    # about 5.3 after 20, samples from noise to words to lines like these comments; later, the
    # training loss falls faster than the held-out loss (learning by heart), and best.pt keeps
    # the best held-out epoch. Below, the last model at three temperatures, from one seed.
    for temperature in (0.5, 1.0, 1.5):
        print(f"\ntemperature {temperature}:")
        print(repr(args.prompt + generate(model, vocabulary, args.prompt,
                                          min(sample_length, 200), temperature, device, args.seed)))


# %% Summary ---------------------------------------------------------------------------------------
if __name__ == "__main__":
    common.section("Summary: what you just did")
    print("""\
- turned a text into numbers (a vocabulary) and into batches of streams, targets shifted by one
- built an LSTM (embedding, nn.LSTM, linear head) and took the loss at every position
- carried the hidden state from batch to batch, detached, and clipped the gradients
- trained with 05's seven steps, measured held-out perplexity, wrote at several temperatures""")
    print("\nDry run finished: every section ran on one batch; no files written." if args.dry_run
          else "\nNext: GUIDE.md's next steps (a bigger LSTM, nn.GRU, Transformers), then "
               "11_quantization.py: the CIFAR-10 network in 8-bit integers.")
