"""10 Sequences: an LSTM that learns to write text, one character at a time.

What you will learn
    - How text becomes numbers: a vocabulary gives every character an index.
    - How a long text is cut into batches of sequences whose targets are the inputs shifted by
      one character, with the shape of every tensor printed.
    - What an LSTM (nn.LSTM) adds to the networks of 04_model.py: a hidden state that carries
      what it has read so far from one character to the next, and from one batch to the next;
      why that state is detached between batches and reset at the start of every pass.
    - Cross-entropy at every position of every sequence: reshaping (batch, time, vocabulary)
      scores into the (rows, classes) that nn.CrossEntropyLoss takes.
    - Gradient clipping (torch.nn.utils.clip_grad_norm_), and why recurrent networks need it.
    - Generating text with a temperature, and perplexity (exp of the mean loss) on held-out text.
    - Where nn.GRU and nn.Transformer fit (the last section).

How to run it
    python 10_sequences.py                      # about 2 minutes on a 2-core CPU
    python 10_sequences.py --dry-run            # one batch of everything, no files, seconds
    python 10_sequences.py --epochs 30 --resume # go on from the last finished epoch
    python 10_sequences.py --text my_book.txt --checkpoint-dir checkpoints/my_book
    python 10_sequences.py --help               # every flag and its default
Or run it one `# %%` cell at a time in VS Code or Jupyter.

Reads texts/pytorch_notes.txt (or --text: any UTF-8 text file). That file is this
repository's own prose, about 120,000 characters: the docstrings and comments of its scripts
and the README, gathered into one text when this lesson was written. So the model learns to
write something that looks like these lessons. Writes checkpoints/sequences/last.pt (after
every epoch) and best.pt (whenever the held-out perplexity improves); 05_train.py's
checkpoints/best.pt is never touched, and 06-08 refuse these files in one sentence, because they
hold a text model, not an image classifier. Ctrl-C keeps every finished epoch: add --resume to
the same command to go on.

The functions defined here (the batching, the model, train_one_epoch, evaluate, generate) can be
imported with common.import_script("10_sequences"): each cell below first defines what it teaches
and then shows it in use under `if __name__ == "__main__":`, which is true only when you run this
file yourself (or in Jupyter); an import runs only the definitions.
"""

# %% Setup ---------------------------------------------------------------------------------------
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import checkpointing
import common

DEFAULT_TEXT = common.REPO_DIR / "texts" / "pytorch_notes.txt"
# Its own folder: a text model must never land on 05_train.py's checkpoints/best.pt.
DEFAULT_CHECKPOINT_DIR = common.CHECKPOINT_DIR / "sequences"
DEFAULT_PROMPT = "The model"  # what the samples start from (section 8)
EMBEDDING_DIM = 64  # numbers per character fed to the LSTM (section 3)
EVALUATION_STREAMS = 8  # parallel streams for the held-out text (section 2 says why so few)
# What this script writes into every checkpoint, so that it recognises its own (section 9).
CHECKPOINT_KIND = "10_sequences next-character LSTM"

if __name__ == "__main__":
    common.report_errors_plainly()  # a mistake you can fix (a missing --text): one sentence
    parser = common.make_parser(
        "Lesson 10: a next-character LSTM trained on a text, with samples and perplexity.",
        device_purpose="where the LSTM trains",
        seed_help="random seed (the starting weights, dropout and the samples)")
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT,
                        help="the UTF-8 text file to learn from")
    parser.add_argument("--epochs", type=common.positive_int, default=20,
                        help="passes over the training text")
    parser.add_argument("--batch-size", type=common.positive_int, default=32,
                        help="sequences per batch (parallel streams through the text)")
    parser.add_argument("--sequence-length", type=common.positive_int, default=100,
                        help="characters per sequence: how far back the gradient reaches")
    parser.add_argument("--hidden-size", type=common.positive_int, default=256,
                        help="numbers in the LSTM's hidden state")
    parser.add_argument("--num-layers", type=common.positive_int, default=1,
                        help="LSTM layers stacked on each other")
    parser.add_argument("--dropout", type=float, default=0.2,
                        help="share of the LSTM's outputs zeroed at random in training")
    parser.add_argument("--lr", type=common.positive_float, default=3e-3,
                        help="Adam's learning rate")
    parser.add_argument("--max-grad-norm", type=common.positive_float, default=1.0,
                        help="gradients are scaled down to at most this norm (section 6)")
    parser.add_argument("--temperature", type=common.positive_float, default=0.8,
                        help="for the samples: below 1 safer, above 1 wilder (section 8)")
    parser.add_argument("--sample-length", type=common.positive_int, default=300,
                        help="characters generated after every epoch")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help="the text every sample starts from (the default becomes the text's "
                             "first character where the text lacks one of its letters)")
    parser.add_argument("--held-out-fraction", type=float, default=0.1,
                        help="share of the text, at its end, kept out of training to measure "
                             "perplexity")
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR,
                        help="where last.pt and best.pt are written")
    parser.add_argument("--resume", action="store_true",
                        help="continue from last.pt in --checkpoint-dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --checkpoint-dir")
    parser.add_argument("--dry-run", action="store_true",
                        help="one short batch of everything and a short sample; writes no files")
    args = common.parse_args(parser)
    if not 0 <= args.dropout < 1:
        parser.error("--dropout must be at least 0 and less than 1")
    if not 0 < args.held_out_fraction < 1:
        parser.error("--held-out-fraction must be between 0 and 1")
    device = common.get_device(args.device)  # chosen now, so a wrong --device fails straight away
    common.seed_everything(args.seed)
    print(f"Device: {device}")


# %% 1. Characters as numbers: a vocabulary -----------------------------------------------------
def read_text(path):
    """The text of the UTF-8 file `path`; a missing or unreadable file is a UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise common.UserError(f"there is no text file at {path}; pass --text with a UTF-8 text "
                               "file to learn from.") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError):
        raise common.UserError(f"{path} is not a readable UTF-8 text file; pass --text with "
                               "one.") from None
    if not text:
        raise common.UserError(f"{path} is empty; pass --text with a text to learn from.")
    return text


class Vocabulary:
    """The characters a text uses, each with an index: 0, 1, 2, ... in sorted order.

    A network computes with numbers, so text goes in as indices and comes out as scores, one per
    index; the vocabulary translates both ways.
    """

    def __init__(self, characters):
        self.characters = list(characters)  # index -> character
        self.index_of = {character: index for index, character in enumerate(self.characters)}

    @classmethod
    def from_text(cls, text):
        """The vocabulary of every distinct character in `text` (sorted: the same every run)."""
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.characters)

    def encode(self, text):
        """`text` as an int64 tensor of indices (int64: what nn.Embedding and the loss take).

        Raises:
            ValueError: a character of `text` is not in the vocabulary.
        """
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
    # The vocabulary is taken from the whole text, held-out part included: it is the list of
    # symbols the model can write, not something learned, so nothing about the held-out text
    # leaks into training. (A model over words would need a rule for unknown words; one over
    # characters rarely meets an unknown one.)
    vocabulary = Vocabulary.from_text(text)
    if args.prompt == DEFAULT_PROMPT and not set(DEFAULT_PROMPT) <= set(text):
        args.prompt = text[0]  # the samples of section 8 need a start made of known characters
    print(f"text: {args.text} ({len(text):,} characters)")
    print(f"vocabulary: {len(vocabulary)} characters: {''.join(vocabulary.characters)!r}")
    example = text[:12]  # the first characters of the text, and their indices
    print(f"{example!r} -> {vocabulary.encode(example).tolist()} -> "
          f"{vocabulary.decode(vocabulary.encode(example))!r}")
    encoded = vocabulary.encode(text)
    # Held-out text: the last 10% of it, in one piece. Not characters picked at random: each
    # would sit between training characters, and the model would be tested on text it has
    # (almost) read. Perplexity on held-out text (section 7: how many characters the model is,
    # in effect, choosing between at each step) says how well it predicts text it has never
    # seen, which is the point; on its training text, a big enough model can learn the
    # text by heart.
    split = int(len(encoded) * (1 - args.held_out_fraction))
    train_encoded, held_out_encoded = encoded[:split], encoded[split:]
    if args.dry_run:  # one batch of each (section 2 makes the batches)
        train_encoded = train_encoded[:args.batch_size * (args.sequence_length + 1)]
        held_out_encoded = held_out_encoded[:EVALUATION_STREAMS * (args.sequence_length + 1)]
    print(f"training text: {len(train_encoded):,} characters   held-out text: "
          f"{len(held_out_encoded):,} characters" + ("  (--dry-run: cut to one batch)"
                                                     if args.dry_run else ""))


# %% 2. Batches: inputs, and targets shifted by one ----------------------------------------------
class SequenceLoader:
    """Batches of (inputs, targets) from one long encoded text, in order, for a recurrent model.

    The text is cut into `batch_size` equal streams, one per row of a (batch_size, steps)
    tensor: with 32 streams, row 0 is the first 32nd of the text, row 1 the second, and so on.
    Batch k takes columns k*L to (k+1)*L of every row (L = sequence_length) as inputs, and the
    same columns moved one character to the right as targets. So row i of batch k+1 continues
    row i of batch k, and the model's hidden state can be carried across (section 5). Like a
    DataLoader it can be iterated over once per epoch and has a len(); unlike 05's loaders it
    never shuffles, which would break that continuity.

    Args:
        encoded: an int64 tensor of character indices (Vocabulary.encode).
        batch_size: how many streams, that is sequences per batch.
        sequence_length: characters per sequence (the last batch can be shorter).

    Raises:
        ValueError: the text is too short to give every stream two characters.
    """

    def __init__(self, encoded, batch_size, sequence_length):
        steps = len(encoded) // batch_size  # characters per stream; the few left over are dropped
        if steps < 2:
            raise ValueError(f"{len(encoded)} characters cannot make {batch_size} streams of at "
                             "least 2 characters")
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


def make_loader(encoded, batch_size, sequence_length, what, advice):
    """SequenceLoader, with a text that is too short as a UserError: "the `what` has only ...
    characters, too few for ... streams; `advice`."""
    try:
        return SequenceLoader(encoded, batch_size, sequence_length)
    except ValueError:
        raise common.UserError(f"the {what} has only {len(encoded)} characters, too few for "
                               f"{batch_size} streams; {advice}.") from None


if __name__ == "__main__":
    common.section("2. Batches: inputs, and targets shifted by one")
    train_loader = make_loader(train_encoded, args.batch_size, args.sequence_length,
                               "training text", "pass a longer --text or a smaller --batch-size")
    # The held-out text is read in only 8 streams: each stream starts with an empty hidden
    # state, which knows nothing yet, and with 8 rather than 32 there are fewer such cold starts
    # in a text this short.
    held_out_loader = make_loader(held_out_encoded, EVALUATION_STREAMS, args.sequence_length,
                                  "held-out text",
                                  "pass a longer --text or a larger --held-out-fraction")
    print(f"training streams: {tuple(train_loader.streams.shape)} (streams, characters each)   "
          f"batches per epoch: {len(train_loader)}")
    inputs, targets = next(iter(train_loader))
    print(f"one batch: inputs {tuple(inputs.shape)}  targets {tuple(targets.shape)}  "
          f"(sequences, characters), dtype {inputs.dtype}")
    # The model reads inputs[i, t] and must predict targets[i, t], which is inputs[i, t + 1]:
    # the character that comes next. Every position of every sequence is one prediction to
    # learn from (with the default sizes, 32 x 100 = 3,200 per batch), not one per sequence.
    print(f"inputs[0, :40]:  {vocabulary.decode(inputs[0, :40])!r}")
    print(f"targets[0, :40]: {vocabulary.decode(targets[0, :40])!r}")
    print(f"held-out streams: {tuple(held_out_loader.streams.shape)}   "
          f"batches: {len(held_out_loader)}")


# %% 3. The model: an embedding, an LSTM, a linear layer -----------------------------------------
class CharacterLSTM(nn.Module):
    """Scores for the next character at every position of a batch of sequences.

    Args:
        vocabulary_size: how many characters there are (the embedding's rows, the output size).
        embedding_dim: numbers per character fed to the LSTM.
        hidden_size: numbers in the LSTM's hidden state.
        num_layers: LSTMs stacked on each other, each reading the outputs of the one below.
        dropout: share of outputs zeroed at random in training, after each LSTM layer.

    Input: int64 indices (batch, time), and optionally the hidden state from the previous call.
    Output: (scores, hidden): scores (batch, time, vocabulary_size), one logit per character,
    and the hidden state after the last character, to pass to the next call.
    """

    def __init__(self, vocabulary_size, embedding_dim=EMBEDDING_DIM, hidden_size=256,
                 num_layers=1, dropout=0.0):
        super().__init__()
        # An embedding is a learned table with one row of embedding_dim numbers per character;
        # index 7 picks row 7. It is what multiplying a one-hot vector by a matrix would give,
        # without building the mostly-zero one-hot vectors.
        self.embedding = nn.Embedding(vocabulary_size, embedding_dim)
        # The LSTM reads the sequence one step at a time. At each step it combines the new input
        # with its state from the step before (h, the "hidden state", which it also outputs, and
        # c, the "cell state", its longer-term memory) through learned gates that decide what to
        # forget, what to store and what to output. The same weights serve every step, so it
        # reads sequences of any length. batch_first=True: inputs are (batch, time, features),
        # like everything else in these lessons (the default is (time, batch, features)).
        # nn.LSTM's own dropout acts only between stacked layers, hence 0 for a single layer.
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)  # after the last layer: makes memorising harder
        # The same linear layer scores every position: hidden_size numbers in, one score per
        # character of the vocabulary out (04_model.py's classifier, applied at every step).
        self.head = nn.Linear(hidden_size, vocabulary_size)

    def forward(self, inputs, hidden=None):
        embedded = self.embedding(inputs)  # (batch, time) -> (batch, time, embedding_dim)
        # hidden=None starts from zeros. outputs: h at every step, (batch, time, hidden_size);
        # hidden: (h, c) after the last step, each (num_layers, batch, hidden_size): batch_first
        # applies to the inputs and outputs only, never to h and c.
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

    CrossEntropyLoss takes scores of shape (rows, classes) and targets of shape (rows,), as in
    05_train.py where a row was an image. Here a row is one position of one sequence, so
    (batch, time, vocabulary) becomes (batch x time, vocabulary) and (batch, time) becomes
    (batch x time,); the mean is then over every character of the batch. reshape, not view:
    it also works when a tensor is not laid out contiguously in memory.
    """
    return loss_fn(scores.reshape(-1, scores.shape[-1]), targets.reshape(-1))


if __name__ == "__main__":
    common.section("4. A loss at every position")
    loss_fn = nn.CrossEntropyLoss()
    print(f"scores {tuple(scores.shape)} -> {tuple(scores.reshape(-1, len(vocabulary)).shape)}  "
          f"targets {tuple(targets.shape)} -> {tuple(targets.reshape(-1).shape)}")
    # (CrossEntropyLoss also accepts (batch, classes, time), so
    # loss_fn(scores.transpose(1, 2), targets) gives the same number; flattening is the usual way.)
    loss = sequence_loss(loss_fn, scores, targets)
    # An untrained model spreads its bets evenly over the vocabulary: a loss near
    # ln(vocabulary size), the loss of guessing.
    print(f"loss of the untrained model: {loss.item():.3f}   "
          f"ln({len(vocabulary)}) = {math.log(len(vocabulary)):.3f}")


# %% 5. The hidden state between batches: carry it over, detached ------------------------------
def detach_hidden(hidden):
    """The same hidden state, cut off from the graph of the batch that computed it.

    Works for an LSTM's (h, c) pair and for the single tensor of an nn.GRU or nn.RNN.
    """
    if isinstance(hidden, tuple):
        return tuple(state.detach() for state in hidden)
    return hidden.detach()


if __name__ == "__main__":
    common.section("5. The hidden state between batches: carry it over, detached")
    # Row i of the next batch continues row i of this one, so the model should start it with
    # the state it ended this one with: it then knows what it was in the middle of. But that
    # state is the result of this batch's computation and still points into this batch's graph
    # (02_autograd.py). The next backward() would follow it back into this batch, whose graph
    # backward() has already freed, and fail; and even with the graph kept, every batch would
    # go back through all the batches before it, slower and slower. detach() keeps the values
    # and cuts the link: gradients reach back at most one sequence (--sequence-length steps),
    # which is called truncated backpropagation through time.
    # What the mistake looks like: one batch, then a second one started from the first one's
    # state as it is. (The second batch is the same one again: any batch shows it.)
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
    # And a reset: at the start of every epoch the streams start again from their beginnings,
    # so the state left at their ends describes the wrong text; it is dropped (hidden=None is a
    # state of zeros). Generating and evaluating start fresh for the same reason.


# %% 6. Gradient clipping ------------------------------------------------------------------------
if __name__ == "__main__":
    common.section("6. Gradient clipping")
    # The gradient of a recurrent network goes back through the same weights once per step: 100
    # times for a sequence of 100. Like multiplying by the same number 100 times, it can shrink
    # to nothing (the LSTM's gates were designed against that) or grow enormous. One enormous
    # gradient is enough to throw the weights far away and undo the training so far.
    # clip_grad_norm_ measures the norm of all the gradients together (the square root of the
    # sum of their squares) and, if it is above max_norm, scales them all down to that norm: the
    # direction is kept, only the step is shorter. It returns the norm measured before clipping.
    # An untrained model's gradients are small, as here; clipping is for the rare spikes that
    # come later in training, and changes nothing on the steps it leaves alone.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=args.max_grad_norm)
    print(f"gradient norm of section 5's last batch: {norm.item():.3f}  (scaled down to at most "
          f"{args.max_grad_norm} when above it)")
    model.zero_grad()


# %% 7. Training and evaluating: the seven steps --------------------------------------------------
# These follow 05_train.py's train_one_epoch and evaluate step by step, with the same names and
# numbers. They are written again here because a recurrent model takes and returns a hidden
# state, which must be carried from batch to batch, and because its scores have a time axis.
def train_one_epoch(model, loader, loss_fn, optimizer, device, max_grad_norm=1.0,
                    description="training"):
    """Train a recurrent `model` on every batch of `loader` once, in order.

    Args:
        model: an nn.Module called as model(inputs, hidden) -> (scores, hidden), with scores of
            shape (batch, time, vocabulary), e.g. CharacterLSTM; already on `device`.
        loader: yields (inputs, targets), both int64 (batch, time), where row i of a batch
            continues row i of the batch before (SequenceLoader).
        loss_fn: e.g. nn.CrossEntropyLoss(), returning the mean over its rows.
        optimizer: a torch.optim optimizer over the model's parameters.
        device: where the model is: "cpu", "cuda", "mps" or a torch.device.
        max_grad_norm: gradients are scaled down to at most this norm before each step.
        description: the label of the progress bar.

    Returns:
        (mean loss, accuracy) per character over this epoch: accuracy is how often the
        highest-scoring character was the right one.

    Raises:
        FloatingPointError: the loss became NaN or infinite: training diverged.
    """
    device = torch.device(device)
    model.train()  # training mode: dropout is on
    loss_sum = torch.zeros((), device=device)  # kept on the device: no wait for a GPU per step
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    hidden = None  # a fresh (zero) state: every stream starts again at its beginning
    progress = tqdm(loader, desc=description, unit="batch", leave=False, disable=None)
    for step, (inputs, targets) in enumerate(progress):  # 1. Get a batch from the loader
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
        # ... then clipping (section 6), between computing the gradients and using them.
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()  # 7. Update every weight from its (clipped) gradient

        # ---- Bookkeeping: the running loss and accuracy, the progress bar ---------------------
        loss_sum += loss.detach() * targets.numel()  # the batch's mean back to a sum
        correct += (scores.argmax(dim=-1) == targets).sum()
        seen += targets.numel()
        if step % 10 == 0:
            running_loss = loss_sum.item() / seen
            if not math.isfinite(running_loss):
                raise FloatingPointError(f"the training loss became {running_loss}")
            progress.set_postfix(loss=f"{running_loss:.3f}")
    if seen == 0:
        raise ValueError("the loader gave no batch")
    mean_loss = loss_sum.item() / seen
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the training loss became {mean_loss}")
    return mean_loss, correct.item() / seen


def evaluate(model, loader, loss_fn, device):
    """Mean loss and accuracy per character of `model` on every batch of `loader`, without
    training it.

    Args:
        model, loader, loss_fn, device: as for train_one_epoch.

    Returns:
        (mean loss, accuracy), averaged over characters. exp(mean loss) is the perplexity.
    """
    device = torch.device(device)
    model.eval()  # evaluation mode: dropout is off
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    hidden = None
    with torch.no_grad():  # no training here: no graph, so there is nothing to detach either
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            scores, hidden = model(inputs, hidden)
            loss_sum += sequence_loss(loss_fn, scores, targets) * targets.numel()
            correct += (scores.argmax(dim=-1) == targets).sum()
            seen += targets.numel()
    if seen == 0:
        raise ValueError("the loader gave no batch")
    return loss_sum.item() / seen, correct.item() / seen


def unigram_perplexity(train_encoded, held_out_encoded, vocabulary_size):
    """The perplexity on the held-out text of a "unigram model": one that only knows how often
    each character occurs in the training text (and counts every character once more, so none
    has chance 0), whatever came before it."""
    counts = torch.bincount(train_encoded, minlength=vocabulary_size).double() + 1
    probabilities = counts / counts.sum()
    return math.exp(-probabilities[held_out_encoded].log().mean().item())


if __name__ == "__main__":
    common.section("7. Training and evaluating: the seven steps, and perplexity")
    # Perplexity = exp(mean loss per character). It reads as a number of choices: a perplexity
    # of 5 means the model is, on average, as unsure as if it picked among 5 equally likely
    # characters. Guessing uniformly scores the vocabulary size; lower is better; 1 is perfect.
    # Two baselines to beat, so that the numbers below mean something:
    print(f"perplexity on the held-out text of a uniform guess: {len(vocabulary)}; of character "
          f"frequencies alone: "
          f"{unigram_perplexity(train_encoded, held_out_encoded, len(vocabulary)):.1f}")
    # Adam rather than 05's SGD: it adapts the step size of every weight to the size of its
    # gradients, the usual choice for recurrent networks, and works at its common 1e-3 to 3e-3
    # without the warm-up and schedule that 05 needed.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)


# %% 8. Generating text, with a temperature ------------------------------------------------------
def generate(model, vocabulary, prompt, length, temperature=1.0, device="cpu", generator=None):
    """`length` new characters written by `model` after `prompt`, one at a time.

    The model reads the prompt, which sets its hidden state; then, again and again, its scores
    for the next character are divided by `temperature` and turned into probabilities with
    softmax, a character is drawn from them, and it is fed back in as the next input.

    Args:
        model: e.g. CharacterLSTM, on `device`.
        vocabulary: the Vocabulary the model was trained with.
        prompt: the text to start from (at least one character, all in the vocabulary).
        length: how many characters to write.
        temperature: above 0. Dividing the scores by 1 keeps the model's probabilities; by less
            than 1 sharpens them (the likely characters win more often: safer, more repetitive
            text); by more than 1 flattens them (more surprises, more mistakes).
        device: where the model is.
        generator: an optional torch.Generator (on the CPU) for repeatable draws.

    Returns:
        A string of `length` characters, all from the vocabulary (the prompt not included).
    """
    if temperature <= 0:
        raise ValueError("the temperature must be above 0")
    if not prompt:
        raise ValueError("the prompt must have at least one character")
    device = torch.device(device)
    was_training = model.training
    model.eval()  # no dropout while writing
    written = []
    with torch.no_grad():
        scores, hidden = model(vocabulary.encode(prompt).unsqueeze(0).to(device))  # (1, time)
        for _ in range(length):
            # The scores after the last character read, as probabilities. Drawing happens on the
            # CPU in float32, so that the same seed draws the same random numbers on every
            # device (the text is then nearly the same: a GPU's scores differ in the last digits).
            probabilities = torch.softmax(scores[0, -1].float().cpu() / temperature, dim=-1)
            next_index = torch.multinomial(probabilities, num_samples=1, generator=generator)
            written.append(next_index.item())
            scores, hidden = model(next_index.view(1, 1).to(device), hidden)
    model.train(was_training)  # back to the mode it was in
    return vocabulary.decode(written)


def sample(model, vocabulary, prompt, length, temperature, device, seed):
    """generate(), with a prompt not in the vocabulary as a UserError, and its own seeded
    generator: a sample is repeatable and does not change the random numbers of training."""
    try:
        return generate(model, vocabulary, prompt, length, temperature, device,
                        torch.Generator().manual_seed(seed))
    except ValueError as error:
        raise common.UserError(f"cannot start a sample from --prompt {prompt!r} ({error}); "
                               "choose a prompt made of characters that the text uses.") from None


if __name__ == "__main__":
    common.section("8. Generating text, with a temperature")
    sample_length = 40 if args.dry_run else args.sample_length
    print(f"the untrained model, after {args.prompt!r}:")
    print(repr(args.prompt + sample(model, vocabulary, args.prompt, min(sample_length, 80),
                                    args.temperature, device, args.seed)))
    # Random characters: every character is about as likely as any other. Training changes that.


# %% 9. Checkpoints: saving a run and picking it up again ---------------------------------------
def run_config(args, vocabulary, text_length):
    """What a checkpoint records about the run: the model's sizes and the vocabulary to rebuild
    it and write text with it, and the settings that --resume must keep."""
    return {
        "model": {"vocabulary_size": len(vocabulary), "embedding_dim": EMBEDDING_DIM,
                  "hidden_size": args.hidden_size, "num_layers": args.num_layers,
                  "dropout": args.dropout},
        "vocabulary": "".join(vocabulary.characters), "text": str(args.text),
        "text_length": text_length, "held_out_fraction": args.held_out_fraction,
        "batch_size": args.batch_size, "sequence_length": args.sequence_length, "lr": args.lr,
        "seed": args.seed,
    }


def save_checkpoints(model, optimizer, epoch, best_val_loss, history, config, checkpoint_dir,
                     improved):
    """Write best.pt (when the held-out loss improved) and last.pt (every epoch), atomically:
    a crash leaves the previous file, never half of one (checkpointing.save_checkpoint)."""
    checkpoint = {
        "kind": CHECKPOINT_KIND,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),  # Adam's running averages, needed to resume
        "epoch": epoch,
        "best_val_loss": best_val_loss,
        "history": history,
        "config": config,
    }
    if improved:  # best.pt first, as in 05: last.pt never claims a best that no best.pt holds
        checkpointing.save_checkpoint(checkpoint, checkpoint_dir / "best.pt")
    checkpointing.save_checkpoint(checkpoint, checkpoint_dir / "last.pt")


def load_sequence_checkpoint(path, device="cpu"):
    """A checkpoint written by this script, loaded safely (weights_only=True: tensors and plain
    values only, so a crafted file cannot run code). Anything else is a UserError. (06-08 load
    with checkpointing.load_checkpoint, which refuses these files: they hold no image model.)"""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch.load raises many kinds of errors for a damaged file
        raise common.UserError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                               "start a new run with --overwrite.") from None
    if not (isinstance(checkpoint, dict) and checkpoint.get("kind") == CHECKPOINT_KIND):
        raise common.UserError(f"{path} was not written by 10_sequences.py; pass the "
                               "--checkpoint-dir of a 10_sequences.py run.")
    parts = {"model", "optimizer", "epoch", "best_val_loss", "history", "config"}
    missing = parts - set(checkpoint)
    if missing:
        raise common.UserError(f"{path} lacks its {sorted(missing)[0]} (edited?); start a new run "
                               "with --overwrite.")
    return checkpoint


def start_or_resume(checkpoint, args, config, model, optimizer):
    """Where the run starts: epoch 1 with an empty history, or, given last.pt's checkpoint, the
    epoch after its last one, with its weights, optimizer state and history put back.

    Returns:
        (first_epoch, best_val_loss, history).
    """
    if checkpoint is None:
        history = {key: [] for key in ("epoch", "train_loss", "train_accuracy", "val_loss",
                                       "val_accuracy", "val_perplexity", "seconds")}
        return 1, math.inf, history
    # The seed may change; so may the text's path, as long as the text is the same length with
    # the same characters (a path can be written in several ways).
    trained = checkpoint["config"]
    changed = [(key, trained["model"].get(key), value) for key, value in config["model"].items()
               if trained["model"].get(key) != value]
    changed += [(key, trained.get(key), value) for key, value in config.items()
                if key not in ("model", "seed", "text") and trained.get(key) != value]
    if changed:
        key, before, now = changed[0]
        raise common.UserError(
            f"the run in {args.checkpoint_dir} was trained with {key} {before!r}, but this run "
            f"has {now!r}; resume with the same text and flags, or start a new run with "
            "--overwrite.")
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])  # Adam's averages: no fresh start
    except (RuntimeError, ValueError, KeyError, TypeError):
        raise common.UserError(f"{args.checkpoint_dir / 'last.pt'} does not fit this model and "
                               "optimizer (edited?); start a new run with --overwrite.") from None
    print(f"Resuming from {args.checkpoint_dir / 'last.pt'}: {checkpoint['epoch']} epochs done, "
          f"best held-out perplexity so far {math.exp(checkpoint['best_val_loss']):.2f}")
    return checkpoint["epoch"] + 1, checkpoint["best_val_loss"], checkpoint["history"]


# %% 10. The training run ------------------------------------------------------------------------
if __name__ == "__main__":
    common.section("10. Training")
    # Lock the checkpoint folder (held until this process ends) and find the run to resume; a new
    # run never silently replaces a trained one.
    lock, last_path = checkpointing.open_run(args.checkpoint_dir, args.resume, args.overwrite,
                                             args.dry_run)
    resumed = load_sequence_checkpoint(last_path, device) if last_path else None
    config = run_config(args, vocabulary, len(text))
    first_epoch, best_val_loss, history = start_or_resume(resumed, args, config, model, optimizer)
    num_epochs = 1 if args.dry_run else args.epochs
    if first_epoch > num_epochs:
        print(f"Nothing to train: the run already has {first_epoch - 1} epochs; pass a larger "
              "--epochs to train more.")
    run_start = time.perf_counter()
    for epoch in range(first_epoch, num_epochs + 1):
        # Re-seeding every epoch gives epoch N the same dropout whether the run went straight
        # through or was resumed.
        torch.manual_seed(args.seed + epoch)
        epoch_start = time.perf_counter()
        try:
            train_loss, train_accuracy = train_one_epoch(
                model, train_loader, loss_fn, optimizer, device, args.max_grad_norm,
                description=f"epoch {epoch}/{num_epochs}")
        except FloatingPointError as error:
            raise common.UserError(f"{error} in epoch {epoch}: training diverged; try a lower "
                                   f"--lr, e.g. {args.lr / 3:.2g}.") from None
        # (In the first epochs the training loss is the higher one: it is averaged over an epoch
        # in which the model was still learning, with dropout switched on; the held-out loss is
        # measured afterwards, without dropout.)
        val_loss, val_accuracy = evaluate(model, held_out_loader, loss_fn, device)
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
               "val_loss": val_loss, "val_accuracy": val_accuracy,
               "val_perplexity": math.exp(val_loss), "seconds": time.perf_counter() - epoch_start}
        for key, value in row.items():
            history[key].append(value)
        improved = val_loss < best_val_loss
        best_val_loss = min(best_val_loss, val_loss)
        print(f"epoch {epoch:>3}/{num_epochs}  train loss {train_loss:.3f}  |  held-out loss "
              f"{val_loss:.3f}, perplexity {math.exp(val_loss):6.2f}, next character right "
              f"{100 * val_accuracy:4.1f}%  |  {row['seconds']:5.1f} s"
              + ("  *best" if improved else ""))
        # A sample after every epoch: watch it go from noise to words to something like prose.
        print("  " + repr(args.prompt + sample(model, vocabulary, args.prompt, sample_length,
                                               args.temperature, device, args.seed + epoch)))
        if not args.dry_run:  # a dry run only checks that everything works: no files
            save_checkpoints(model, optimizer, epoch, best_val_loss, history, config,
                             args.checkpoint_dir, improved)
    seconds = time.perf_counter() - run_start
    if first_epoch <= num_epochs:
        print(f"\nheld-out perplexity: {history['val_perplexity'][-1]:.2f} after epoch "
              f"{history['epoch'][-1]} (best: {math.exp(best_val_loss):.2f})   training time: "
              f"{seconds:.0f} s")
    if not args.dry_run:
        print(f"Checkpoints: {args.checkpoint_dir / 'last.pt'} and "
              f"{args.checkpoint_dir / 'best.pt'}")
    # What to look at. On the default text the held-out perplexity falls from about 17 after the
    # first epoch to about 5.3 after 20 (against 29 for character frequencies alone), and the
    # samples go from noise to words to lines that read like these comments, with made-up words.
    # After about 10 epochs the training loss keeps falling faster than the held-out loss: the
    # model starts to learn its training text by heart, and best.pt keeps the epoch that
    # predicted the held-out text best. Below, the model after the last epoch writes at three
    # temperatures, from the same seed: 0.5 repeats safe, common words; 1.5 invents spellings.
    for temperature in (0.5, 1.0, 1.5):
        print(f"\ntemperature {temperature}:")
        print(repr(args.prompt + sample(model, vocabulary, args.prompt, min(sample_length, 200),
                                        temperature, device, args.seed)))


# %% 11. Where nn.GRU and nn.Transformer fit ------------------------------------------------------
# nn.GRU is a simpler cousin of the LSTM: one state instead of two (h, without c) and two gates
# instead of three, so about a quarter fewer weights and a little faster, and on most tasks about
# as good. To try it, swap nn.LSTM for nn.GRU in CharacterLSTM (it takes the same arguments) and
# write section 3's demonstration as `outputs, hidden = model.lstm(embedded)`: a GRU returns
# (outputs, h), not (outputs, (h, c)). detach_hidden already handles a single tensor. Compare
# the perplexities.
# A Transformer for this task is a stack of nn.TransformerEncoderLayer with a causal mask (so that
# position t sees only positions up to t) and a positional encoding (each position's number,
# turned into a vector and added to its embedding, since attention by itself ignores order); the
# full nn.Transformer adds a decoder, for translation. It drops the hidden state altogether:
# attention lets every position look at every earlier one directly, all positions are computed
# at once rather than one step after another, and a GPU is kept far busier. That is why large
# language models are Transformers. The costs: attention's work grows with the square of the
# sequence length, the model only sees a fixed window (no state carried from batch to batch),
# and it needs far more text and compute before it beats an LSTM; on a small text and a CPU,
# like here, the LSTM is the better teacher and often the better model.
if __name__ == "__main__":
    if args.dry_run:
        print("\nDry run finished: every section ran on one batch; no files written.")
    else:
        print("\nNext: try --hidden-size 512 --num-layers 2 on a GPU, or nn.GRU in place of "
              "nn.LSTM (section 11 of this file).")
