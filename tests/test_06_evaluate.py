"""Tests for 06_evaluate.py: it measures the checkpoints that 05_train.py wrote, and says so right.

The checkpoints come from the training runs that test_05_train.py shares (trained once per
session); the two evaluations run at the same time.
"""

import json
import re
from types import SimpleNamespace

import pytest
import torch

import common
from conftest import REPO_DIR

data = common.import_script("03_data")
from test_05_train import (EASY_COLOURS, PNG_SIGNATURE, assert_ok, assert_refused, finish,
                           run_in_process, start, training_runs)

SCRIPT = "06_evaluate.py"


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """06_evaluate.py on the best.pt of the fake-data run and of the easy-folder run."""
    runs = training_runs(tmp_path_factory)
    processes = {}
    for name, run in runs.items():
        assert_ok(run.result)
        output_dir = tmp_path_factory.mktemp(f"evaluate_{name}")
        args = [*run.data_args, "--device", "cpu", "--checkpoint", run.checkpoint_dir / "best.pt",
                "--output-dir", output_dir]
        processes[name] = (output_dir, start(SCRIPT, *args))
    return {name: SimpleNamespace(result=finish(process), output_dir=output_dir,
                                  checkpoint_dir=runs[name].checkpoint_dir,
                                  data_args=runs[name].data_args)
            for name, (output_dir, process) in processes.items()}


@pytest.fixture(scope="module")
def fake_evaluation(evaluations):
    assert_ok(evaluations["fake"].result)
    return evaluations["fake"]


@pytest.fixture(scope="module")
def easy_evaluation(evaluations):
    assert_ok(evaluations["easy"].result)
    return evaluations["easy"]


def results_of(evaluation):
    return json.loads((evaluation.output_dir / "evaluation.json").read_text())


# ---- After `05_train.py --fake-data`: what it prints and writes --------------------------------
def test_prints_the_key_lines(fake_evaluation):
    output = fake_evaluation.result.stdout
    assert re.search(r"^Checkpoint: .*best\.pt \(epoch 1, model small", output, re.MULTILINE)
    assert re.search(r"^Test accuracy on 200 images: \d+\.\d\d%", output, re.MULTILINE)
    assert re.search(r"^With flip test-time augmentation: +\d+\.\d\d%", output, re.MULTILINE)
    assert re.search(r"^With flips and 2-pixel shifts: +\d+\.\d\d%", output, re.MULTILINE)
    assert "Accuracy per class" in output
    for name in data.CIFAR10_CLASSES:  # one line per class
        assert re.search(rf"^  {name} +\d+\.\d\d%", output, re.MULTILINE), name
    assert "Most common mistake:" in output


def test_writes_the_figures_and_the_numbers(fake_evaluation):
    for name in ("confusion_matrix.png", "mistakes.png"):
        path = fake_evaluation.output_dir / name
        assert path.read_bytes().startswith(PNG_SIGNATURE), name
        assert str(path) in fake_evaluation.result.stdout, f"{path} is written but not printed"
    assert str(fake_evaluation.output_dir / "evaluation.json") in fake_evaluation.result.stdout


def test_numbers_agree_with_each_other_and_with_the_printout(fake_evaluation):
    results = results_of(fake_evaluation)
    matrix = results["confusion_matrix"]
    classes = list(data.CIFAR10_CLASSES)
    assert results["test_images"] == 200 == sum(map(sum, matrix))
    assert len(matrix) == len(classes) and all(len(row) == len(classes) for row in matrix)
    correct = sum(matrix[index][index] for index in range(len(classes)))
    assert results["test_accuracy"] == pytest.approx(correct / 200)
    for index, name in enumerate(classes):
        assert results["per_class_accuracy"][name] == pytest.approx(
            matrix[index][index] / max(1, sum(matrix[index])))
    assert 0 <= results["test_accuracy_tta"] <= 1 and 0 <= results["test_accuracy_tta_shifts"] <= 1
    printed = re.search(r"Test accuracy on 200 images: (\S+)%", fake_evaluation.result.stdout)
    assert float(printed.group(1)) == pytest.approx(100 * results["test_accuracy"], abs=0.006)
    assert results["epoch"] == 1 and results["model_size"] == "small" and results["data"] == "fake"


def test_ends_with_a_summary_and_the_next_lessons(fake_evaluation):
    output = fake_evaluation.result.stdout
    summary = output.split("=== Summary: what you just did")[1]
    assert "confusion matrix" in summary and "test-time augmentation" in summary
    # 07 and 08 are told the checkpoint just evaluated (here not their default one).
    flag = f"--checkpoint {fake_evaluation.checkpoint_dir / 'best.pt'}"
    assert f"Next: python 07_save_load.py {flag} (" in summary
    assert summary.rstrip().endswith(f"python 08_predict.py samples/* {flag}")


def test_plumbing_is_marked_as_skippable():
    source = (REPO_DIR / SCRIPT).read_text()
    assert re.search(r"^# %% Plumbing, which you can skip: the command-line flags", source,
                     re.MULTILINE)
    main = source[source.index("def main():"):]
    assert re.search(r"^    # Plumbing, down to the test images, which you can skip",
                     main[:main.index("args = parse_args()")], re.MULTILINE)


# ---- Test-time augmentation: which copies, and how they are averaged -----------------------------
def test_shifted_copies_move_the_image_two_pixels_each_way_with_a_mirrored_border():
    evaluation = common.import_script("06_evaluate")
    rows = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 1, 8, 8)  # pixel value = its row
    down, up, right, left = evaluation.shifted_copies(rows)
    # Moved down: row r shows row r - 2; the two new top rows mirror rows 2 and 1.
    assert down[0, 0, :, 0].tolist() == [2, 1, 0, 1, 2, 3, 4, 5]
    assert up[0, 0, :, 0].tolist() == [2, 3, 4, 5, 6, 7, 6, 5]
    columns = rows.transpose(2, 3)  # pixel value = its column
    down, up, right, left = evaluation.shifted_copies(columns)
    assert right[0, 0, 0].tolist() == [2, 1, 0, 1, 2, 3, 4, 5]
    assert left[0, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 6, 5]
    assert all(copy.shape == rows.shape for copy in (down, up, right, left))


def test_predict_averages_two_and_ten_views():
    evaluation = common.import_script("06_evaluate")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(5))
    images = torch.randn(6, 3, 8, 8)
    model(images)  # makes the lazy layer's weights
    loader = [(images[:4], torch.zeros(4)), (images[4:], torch.zeros(2))]
    plain, flip, shifts = evaluation.predict(model, loader, "cpu")
    with torch.no_grad():
        def probabilities(batch):
            return model(batch).softmax(dim=1)
        mirrored = probabilities(images.flip(3))
        views = [probabilities(images), mirrored]
        for copy in evaluation.shifted_copies(images):
            views += [probabilities(copy), probabilities(copy.flip(3))]
    assert torch.allclose(plain, views[0], atol=1e-6)
    assert torch.allclose(flip, (views[0] + mirrored) / 2, atol=1e-6)
    assert torch.allclose(shifts, sum(views) / 10, atol=1e-6)
    assert torch.allclose(shifts.sum(dim=1), torch.ones(6))  # still probabilities


# ---- A model that learned: high test accuracy ---------------------------------------------------
def test_reports_high_accuracy_for_a_model_that_learned(easy_evaluation):
    results = results_of(easy_evaluation)
    assert results["test_images"] == 4 * 10
    assert results["test_accuracy"] >= 0.9, results
    assert results["test_accuracy_tta"] >= 0.9, results
    assert results["test_accuracy_tta_shifts"] >= 0.9, results
    assert list(results["per_class_accuracy"]) == sorted(EASY_COLOURS)
    printed = re.search(r"Test accuracy on 40 images: (\S+)%", easy_evaluation.result.stdout)
    assert float(printed.group(1)) >= 90


def test_no_mistake_is_not_reported_as_a_mistake(easy_evaluation):
    # The easy model gets every test image right; there is then no most common mistake to name.
    output = easy_evaluation.result.stdout
    assert not re.search(r"(\w+) taken for \1\b", output), output


# ---- Errors and flags ---------------------------------------------------------------------------
def test_without_a_checkpoint_says_to_train_first(tmp_path, capsys, monkeypatch):
    # The default --checkpoint is the repository's checkpoints/best.pt: point it at an empty folder.
    monkeypatch.setattr(common, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    result = run_in_process(SCRIPT, "--fake-data", "--device", "cpu", "--output-dir",
                            tmp_path / "outputs", capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, "05_train.py")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_is_a_file_is_refused_before_any_work(
        fake_evaluation, tmp_path, capsys, monkeypatch, where):
    # The figures and numbers are written at the end; the folder is checked at the start.
    (tmp_path / "taken").write_text("a file where the folder should be\n")
    output_dir = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "outputs"
    result = run_in_process(SCRIPT, "--fake-data", "--device", "cpu", "--checkpoint",
                            fake_evaluation.checkpoint_dir / "best.pt", "--output-dir",
                            output_dir, capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, str(tmp_path / "taken"), "is a file", "--output-dir")
    assert "Test accuracy" not in result.stdout  # refused before the evaluation, not after it
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]


def test_dry_run_writes_no_files(fake_evaluation, tmp_path, capsys, monkeypatch):
    result = run_in_process(SCRIPT, "--fake-data", "--dry-run", "--batch-size", 50, "--device",
                            "cpu", "--checkpoint", fake_evaluation.checkpoint_dir / "best.pt",
                            "--output-dir", tmp_path / "outputs", capsys=capsys,
                            monkeypatch=monkeypatch)
    assert_ok(result)
    assert "Test accuracy on 50 images" in result.stdout  # one batch
    assert not (tmp_path / "outputs").exists()


def test_help_lists_the_flags_with_their_defaults(capsys, monkeypatch):
    result = run_in_process(SCRIPT, "--help", capsys=capsys, monkeypatch=monkeypatch)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--checkpoint", "--data-dir", "--fake-data", "--batch-size", "--output-dir",
                 "--device", "--dry-run"):
        assert flag in text, flag
    assert re.search(r"--checkpoint CHECKPOINT .*?\(default: checkpoints/best\.pt, or "
                     r"checkpoints/fake/best\.pt with --fake-data", text)
    assert re.search(r"--batch-size BATCH_SIZE .*?\(default: \d+\)", text)
