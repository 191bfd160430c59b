"""Tests for 08_predict.py: images of any size and mode are classified, bad files are reported
one sentence each without stopping the others, a missing checkpoint or an --output-dir that
cannot be written is one sentence, and the figure is never left half-written. The network is fed
what its checkpoint says it was trained on (a 64x64 grayscale model gets 64x64 grayscale images),
and a hand-edited checkpoint is one sentence.

How files are read (modes, bit depths, reduced decoding, long strips, named pipes) is tested in
test_images.py; 03's shrink in test_03_shrink.py."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import checkpointing
import common
import image_files
from conftest import REPO_DIR, make_checkpoint

data = common.import_script("03_data")

SCRIPT = "08_predict.py"
SAMPLES = sorted(path for path in (common.REPO_DIR / "samples").iterdir()
                 if path.suffix in (".png", ".jpg"))
_results = {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkpoint and test images: a 1000x700 RGBA PNG, a grayscale JPEG, a 3000x2000 JPEG, a
    text file."""
    folder = tmp_path_factory.mktemp("predict")
    make_checkpoint(folder / "best.pt")
    # A red disc on a transparent background, wider than tall.
    rgba = Image.new("RGBA", (1000, 700), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((300, 150, 700, 550), fill=(200, 30, 30, 255))
    rgba.save(folder / "disc.png")
    gray = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(folder / "gray.jpg")
    Image.new("RGB", (3000, 2000), (40, 120, 200)).save(folder / "photo.jpg")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def predict_module():
    """08_predict.py imported as a module (its name starts with a digit, hence importlib)."""
    spec = importlib.util.spec_from_file_location("predict", common.REPO_DIR / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predictions(stdout):
    """{image path as printed: [(class, probability), ...] in the printed order}."""
    results = {}
    for block in stdout.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines or not re.match(r"^\S.*  \(.* -> \d+x\d+( grayscale)?\)$", lines[0]):
            continue
        path = lines[0].split("  (")[0]
        rows = [re.match(r"^\s+\d+\. (\S+)\s+([\d.]+)%", line) for line in lines[1:]]
        assert all(rows), f"unexpected lines under {path}: {lines[1:]}"
        results[path] = [(row.group(1), float(row.group(2)) / 100) for row in rows]
    return results


def check_ranking(ranking, classes=data.CIFAR10_CLASSES, top=3):
    """`top` known classes, each once, with probabilities in [0, 1], largest first, sum <= 1."""
    assert len(ranking) == top
    names = [name for name, _ in ranking]
    values = [value for _, value in ranking]
    assert set(names) <= set(classes) and len(set(names)) == top
    assert all(0 <= value <= 1 for value in values)
    assert values == sorted(values, reverse=True)
    assert sum(values) <= 1 + 0.0015 * top  # each printed value is rounded to 0.1%


@pytest.fixture
def mixed_run(run, workspace):
    """One call with two good images around a missing file and a file that is not an image.

    It runs once; the tests that read it share the result (every run pays for importing torch).
    """
    if "mixed" not in _results:
        _results["mixed"] = run(SCRIPT, workspace / "disc.png", workspace / "missing.png",
                                workspace / "notes.txt", workspace / "gray.jpg",
                                workspace / "photo.jpg",
                                "--checkpoint", workspace / "best.pt", "--device", "cpu",
                                "--output-dir", workspace / "outputs", timeout=180)
    return _results["mixed"]


def test_rgba_png_grayscale_jpeg_and_large_jpeg_are_classified(mixed_run, workspace):
    results = predictions(mixed_run.stdout)
    assert list(results) == [str(workspace / name) for name in ("disc.png", "gray.jpg",
                                                               "photo.jpg")]
    for ranking in results.values():
        check_ranking(ranking)
    assert "PNG, 1000x700 RGBA -> 32x32" in mixed_run.stdout
    assert "JPEG, 300x200 L -> 32x32" in mixed_run.stdout
    assert "JPEG, 3000x2000 RGB -> 32x32" in mixed_run.stdout  # the file's size, as stored
    assert (workspace / "outputs" / "predictions.png").is_file()


def test_bad_files_are_reported_and_the_others_classified(mixed_run, workspace):
    assert mixed_run.returncode == 1
    assert "Traceback" not in mixed_run.stderr
    errors = mixed_run.stderr.strip().splitlines()
    assert len(errors) == 2, errors  # one sentence per bad file, nothing more
    assert str(workspace / "missing.png") in errors[0] and "no such file" in errors[0]
    assert str(workspace / "notes.txt") in errors[1] and "not an image" in errors[1]
    # The good images, before and after the bad ones, were still classified (previous test).
    assert len(predictions(mixed_run.stdout)) == 3


def test_missing_checkpoint_is_one_sentence(run, workspace, tmp_path):
    result = run(SCRIPT, workspace / "disc.png", "--checkpoint", tmp_path / "nothing.pt",
                 "--output-dir", tmp_path, timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "python 05_train.py" in lines[0]
    assert predictions(result.stdout) == {}


def test_sample_images_run_with_the_checkpoints_classes(run, workspace, tmp_path):
    # A checkpoint trained on a folder of 4 classes: the names and their number come from its
    # config, and --top larger than that shows all 4, whose probabilities add up to 1.
    classes = ("apple", "bicycle", "cloud", "dolphin")
    make_checkpoint(tmp_path / "folder.pt", classes=classes)
    # The files are given as the patterns of the README's command, not expanded by a shell (as
    # on Windows): 08 expands them itself.
    assert len(SAMPLES) >= 3
    result = run(SCRIPT, "samples/*.png", "samples/*.jpg", "--checkpoint",
                 tmp_path / "folder.pt", "--top", "10", "--device", "cpu",
                 "--output-dir", tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    results = predictions(result.stdout)
    assert len(results) == len(SAMPLES)
    for ranking in results.values():
        check_ranking(ranking, classes=classes, top=len(classes))
        assert sum(value for _, value in ranking) == pytest.approx(1, abs=0.003)


def test_an_image_gets_the_same_answer_alone_or_in_a_batch(predict_module, workspace):
    # Eval mode: batch-norm uses its stored statistics, so the other images cannot matter.
    checkpoint = checkpointing.load_checkpoint(workspace / "best.pt")
    model = checkpointing.model_from_checkpoint(checkpoint)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    config = checkpoint["config"]
    together = predict_module.predict(model, images, config["mean"], config["std"], "cpu")
    alone = predict_module.predict(model, images[2:3], config["mean"], config["std"], "cpu")
    assert together.shape == (5, 10)
    assert torch.allclose(together.sum(dim=1), torch.ones(5))
    assert torch.allclose(together[2:3], alone, atol=1e-6)


def test_the_figure_gets_small_previews_not_the_full_images(predict_module, workspace,
                                                            monkeypatch, tmp_path):
    # Memory grows with the number of images, not their size: the figure's function is handed
    # previews of at most 256 pixels, and only for the rows it draws.
    import figures

    drawn = []
    monkeypatch.setattr(figures, "plot_predictions",
                        lambda results, classes, top, path: drawn.extend(results) or path)
    paths = [workspace / "photo.jpg"] + [workspace / "disc.png"] * 9
    monkeypatch.setattr(sys, "argv", ["08_predict.py", *map(str, paths), "--checkpoint",
                                      str(workspace / "best.pt"), "--device", "cpu",
                                      "--output-dir", str(tmp_path)])
    predict_module.main()
    assert len(drawn) == predict_module.MAX_FIGURE_ROWS
    sizes = [preview.size for _, preview, _, _ in drawn]
    assert sizes[0] == (256, 171) and sizes[1] == (256, 179)  # 3000x2000 and 1000x700, shrunk
    assert all(tensor.shape == (3, 32, 32) for _, _, tensor, _ in drawn)


def leftovers(folder):
    """The files in `folder`, with their sizes: a failed write must leave none of its own."""
    return {path.name: path.stat().st_size for path in folder.iterdir()}


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_cannot_be_made_is_one_sentence(run, workspace, tmp_path, where):
    (tmp_path / "taken").write_text("a file where the folder should be\n")
    output_dir = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "figures"
    result = run(SCRIPT, workspace / "disc.png", "--checkpoint", workspace / "best.pt",
                 "--device", "cpu", "--output-dir", output_dir, timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "predictions.png" in lines[0] and "nothing was written" in lines[0]
    assert len(predictions(result.stdout)) == 1  # the image was still classified and printed
    assert leftovers(tmp_path) == {"taken": 34}  # no empty PNG, no temporary file


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux's RLIMIT_FSIZE")
def test_a_full_disk_keeps_the_previous_figure(workspace, tmp_path):
    # A limit on the size of the files the process may write stands in for a full disk: the
    # figure (tens of KiB) cannot be written, and Python then gets the same error, "File too
    # large", as it would get "No space left on device".
    import resource

    previous = b"\x89PNG\r\n\x1a\n the figure of an earlier run"
    (tmp_path / "predictions.png").write_bytes(previous)
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / SCRIPT), str(workspace / "disc.png"), "--checkpoint",
         str(workspace / "best.pt"), "--device", "cpu", "--output-dir", str(tmp_path)],
        env=dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1"), cwd=REPO_DIR,
        capture_output=True, text=True, timeout=180,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the previous file is unchanged" in lines[0]
    assert (tmp_path / "predictions.png").read_bytes() == previous
    assert leftovers(tmp_path) == {"predictions.png": len(previous)}


def test_wildcards_match_files_and_a_file_named_like_a_pattern_stays_itself(predict_module,
                                                                            tmp_path):
    for name in ("b.png", "a.png", "c.jpg", "photo[1].png"):
        (tmp_path / name).write_bytes(b"")
    expand = predict_module.expand_wildcards
    assert expand([str(tmp_path / "*.png")]) == [
        str(tmp_path / name) for name in ("a.png", "b.png", "photo[1].png")]
    # An existing file whose name has [ ] in it is that file, not the pattern "photo1.png".
    assert expand([str(tmp_path / "photo[1].png")]) == [str(tmp_path / "photo[1].png")]
    # A pattern that matches nothing is kept, so that reading it says there is no such file.
    assert expand([str(tmp_path / "*.gif"), "x.jpg"]) == [str(tmp_path / "*.gif"), "x.jpg"]


# ---- What the checkpoint says the network takes --------------------------------------------
def make_grayscale_checkpoint(path):
    """A checkpoint laid out as 05_train.py writes one for a small CifarNet trained on 64x64
    grayscale images (1 channel, 3 classes), with random weights: no training needed to check
    what it is fed. So that images get distinct answers, batch-norm's statistics are those of
    one batch of random images, and the classifier's weights are scaled up."""
    torch.manual_seed(0)
    classes = ["circle", "square", "triangle"]
    model = common.import_script("04_model").build_model("small", num_classes=3, in_channels=1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # the running statistics: the average over all batches seen
    with torch.no_grad():
        model(torch.randn(32, 1, 64, 64))  # in training mode: batch-norm records statistics
        model.classifier.weight.mul_(10)
    checkpoint = {
        "model": model.state_dict(), "epoch": 1, "best_val_accuracy": 0.5,
        "config": {"model": {"size": "small", "num_classes": 3, "in_channels": 1},
                   "classes": classes, "mean": [0.45], "std": [0.22], "image_size": 64,
                   "data": "folder"},
    }
    checkpointing.save_checkpoint(checkpoint, path)
    return checkpoint


def run_main(predict_module, monkeypatch, *args):
    """08's main() in this process, with `args` as its command line (no time spent starting
    Python and importing torch again)."""
    monkeypatch.setattr(sys, "argv", ["08_predict.py", *map(str, args), "--device", "cpu"])
    predict_module.main()


def test_a_64x64_grayscale_model_is_fed_64x64_grayscale_images(predict_module, monkeypatch,
                                                              tmp_path, capsys):
    checkpoint = make_grayscale_checkpoint(tmp_path / "gray.pt")
    # Checkerboards with squares of 1 pixel at 64x64, and of 4 at 128x128 (2 once at 64x64):
    # shrinking either to 32x32 would average the squares away.
    def checkerboard(side, square):
        return (np.indices((side, side)) // square).sum(axis=0) % 2 == 1

    gray = Image.fromarray(checkerboard(64, 1).astype(np.uint8) * 255)  # 64x64, as trained
    gray.save(tmp_path / "gray.png")
    colours = np.where(checkerboard(128, 4)[..., None], [250, 220, 40], [20, 30, 120])
    colour = Image.fromarray(colours.astype(np.uint8))  # yellow and dark blue: light and dark
    colour.save(tmp_path / "colour.png")
    run_main(predict_module, monkeypatch, tmp_path / "gray.png", tmp_path / "colour.png",
             "--checkpoint", tmp_path / "gray.pt", "--output-dir", tmp_path)
    stdout = capsys.readouterr().out
    assert "3 classes, 64x64 grayscale images" in stdout
    assert "PNG, 128x128 RGB -> 64x64 grayscale" in stdout
    printed = predictions(stdout)
    assert (tmp_path / "predictions.png").is_file()  # one channel, drawn as three

    # What the network should get: the 64x64 gray values themselves, and the colour image's
    # brightness (Pillow's convert("L")) scaled to 64x64; not the 32x32 of CIFAR-10.
    model = checkpointing.model_from_checkpoint(checkpoint)
    mean, std = checkpoint["config"]["mean"], checkpoint["config"]["std"]
    expected = torch.stack([torch.from_numpy(np.array(image.convert("L").resize((64, 64),
                                                      Image.Resampling.BILINEAR)))[None]
                            for image in (gray, colour)])
    at_64 = predict_module.predict(model, expected, mean, std, "cpu")
    at_32 = predict_module.predict(model, torch.stack([image_files.shrink(image.convert("L"), 32)
                                                       for image in (gray, colour)]),
                                   mean, std, "cpu")
    for name, right, wrong in zip(("gray.png", "colour.png"), at_64, at_32):
        ranking = printed[str(tmp_path / name)]
        check_ranking(ranking, classes=checkpoint["config"]["classes"])
        values, indices = right.sort(descending=True)
        assert [classes for classes, _ in ranking] == [
            checkpoint["config"]["classes"][index] for index in indices.tolist()]
        assert [value for _, value in ranking] == pytest.approx(values.tolist(), abs=0.0006)
        assert (right - wrong).abs().max() > 0.05  # so 32x32 inputs would have shown


def test_read_images_gives_the_networks_input(predict_module, workspace):
    loaded, failed = predict_module.read_images([workspace / "disc.png"], 64, "L")
    [(path, description, preview, tensor)] = loaded
    assert failed == 0 and description == "PNG, 1000x700 RGBA"
    assert tensor.shape == (1, 64, 64) and tensor.dtype == torch.uint8
    assert preview.mode == "RGB"  # what the figure draws (a grayscale one in gray)
    loaded, _ = predict_module.read_images([workspace / "disc.png"], 32, "RGB")  # CIFAR-10's
    assert loaded[0][3].shape == (3, 32, 32)
    with pytest.raises(TypeError):  # no default size or mode: a copier cannot forget them
        predict_module.read_images([workspace / "disc.png"])


def edited(checkpoint, what):
    """A copy of `checkpoint` with one hand edit."""
    checkpoint = {**checkpoint, "config": dict(checkpoint["config"]),
                  "model": dict(checkpoint["model"])}
    config = checkpoint["config"]
    if what == "class names as numbers":
        config["classes"] = list(range(10))
    elif what == "a mean of 1 value":
        config["mean"], config["std"] = [0.5], [0.25]
    elif what == "a mean of 4 values":
        config["mean"], config["std"] = [0.5] * 4, [0.25] * 4
    elif what == "a std of 0":
        config["std"] = [0.0, 0.0, 0.0]
    elif what == "NaN weights":
        checkpoint["model"]["classifier.weight"] = torch.full_like(
            checkpoint["model"]["classifier.weight"], float("nan"))
    elif what == "an image_size of 2.5":
        config["image_size"] = 2.5
    return checkpoint


EDITS = ["class names as numbers", "a mean of 1 value", "a mean of 4 values", "a std of 0",
         "NaN weights", "an image_size of 2.5"]


@pytest.mark.parametrize("checked_on_loading", [True, False])
@pytest.mark.parametrize("what", EDITS)
def test_a_hand_edited_checkpoint_is_one_sentence(predict_module, workspace, monkeypatch,
                                                  tmp_path, capsys, what, checked_on_loading):
    # checkpointing.load_checkpoint refuses what it knows to be wrong; 08 must also stand on its
    # own (checked_on_loading=False: the file is loaded with no checks at all).
    import figures

    checkpoint = torch.load(workspace / "best.pt", weights_only=True)
    checkpointing.save_checkpoint(edited(checkpoint, what), tmp_path / "edited.pt")
    if not checked_on_loading:
        monkeypatch.setattr(checkpointing, "load_checkpoint",
                            lambda path, device: torch.load(path, weights_only=True))
    monkeypatch.setattr(figures, "plot_predictions", lambda *args: tmp_path / "figure.png")
    try:
        run_main(predict_module, monkeypatch, workspace / "disc.png", "--checkpoint",
                 tmp_path / "edited.pt", "--output-dir", tmp_path)
    except common.UserError as error:
        assert "\n" not in str(error) and str(error).endswith(".")
        assert predictions(capsys.readouterr().out) == {}  # no made-up probabilities
    else:
        # Numbers for class names can only be refused by the loader; 08 shows them as they are.
        assert what == "class names as numbers"
        assert [name for name, _ in predictions(capsys.readouterr().out)[
            str(workspace / "disc.png")]] != []


# ---- Files that are no images --------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a Unix thing")
def test_a_named_pipe_is_refused_at_once(run, workspace, tmp_path):
    # Reading a named pipe waits until something writes into it: before the check, forever.
    os.mkfifo(tmp_path / "pipe")
    result = run(SCRIPT, tmp_path / "pipe", workspace / "disc.png", "--checkpoint",
                 workspace / "best.pt", "--device", "cpu", "--output-dir", tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pipe" in lines[0] and "not a regular file" in lines[0]
    assert len(predictions(result.stdout)) == 1  # the image after it was still classified


def test_a_long_strip_reaches_shrink_as_its_middle(predict_module, monkeypatch, tmp_path):
    # 1 x 1,000,000 pixels, 2 KB as a PNG: scaled whole to 32 wide, it took 6 GB. What
    # open_image hands on (and shrink and the preview get) is its middle, 1 x 16 pixels.
    Image.new("L", (1, 1_000_000), 128).save(tmp_path / "strip.png")
    sizes = []
    shrink = image_files.shrink
    monkeypatch.setattr(image_files, "shrink", lambda image, size: sizes.append(image.size)
                        or shrink(image, size))
    loaded, failed = predict_module.read_images([tmp_path / "strip.png"], 32, "RGB")
    assert failed == 0 and sizes == [(1, 16)]
    [(_, description, preview, tensor)] = loaded
    assert description == "PNG, 1x1000000 L"
    assert preview.size == (1, 16) and torch.all(tensor == 128) and tensor.shape == (3, 32, 32)
