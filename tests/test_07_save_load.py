"""Tests for 07_save_load.py: it runs on a checkpoint, its export matches the model, the files
it writes load back (or are refused) as the lesson says, and a checkpoint or an --output-dir it
cannot use is one sentence, with no half-written file left behind."""

import os
import pickle
import re
import subprocess
import sys

import pytest
import torch

import checkpointing
from conftest import REPO_DIR, make_checkpoint

SCRIPT = "07_save_load.py"
_results = {}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a checkpoint in it, shared by the tests of this file."""
    folder = tmp_path_factory.mktemp("save_load")
    make_checkpoint(folder / "best.pt")
    return folder


def run_once(run, *args):
    """Run the script with these arguments once per test session and reuse the result."""
    key = tuple(str(arg) for arg in args)
    if key not in _results:
        _results[key] = run(SCRIPT, *key, timeout=240)
    return _results[key]


@pytest.fixture
def output(run, workspace):
    """The stdout of a successful run on the test checkpoint, writing into workspace/export."""
    result = run_once(run, "--checkpoint", workspace / "best.pt", "--device", "cpu",
                      "--output-dir", workspace / "export")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_runs_end_to_end_and_reports_sizes(output, workspace):
    for number in range(1, 7):
        assert f"=== {number}. " in output
    export_dir = workspace / "export"
    names = {"state_dict": "cifarnet_state_dict.pt", "whole model": "cifarnet_whole_model.pt",
             "exported program": "cifarnet_exported.pt2"}
    for label, name in names.items():
        path = export_dir / name
        assert path.is_file(), f"{name} was not written"
        # The size table gives each file's size; it must be the real one (rounded).
        match = re.search(rf"^  {label} +([\d.]+) (KiB|MiB)  .*{re.escape(name)}$", output,
                          flags=re.MULTILINE)
        assert match, f"no size line for the {label}"
        printed = float(match.group(1)) * (1024 if match.group(2) == "KiB" else 1024**2)
        assert printed == pytest.approx(path.stat().st_size, rel=0.01)
    assert re.search(r"^  full checkpoint +[\d.]+ (KiB|MiB)", output, flags=re.MULTILINE)


def test_exported_model_matches_the_original(output, workspace):
    # What the script prints...
    for batch_size in (8, 1):
        match = re.search(rf"exported vs original, a batch of {batch_size}: max \|difference\| "
                          r"(\S+)", output)
        assert match, f"no comparison line for a batch of {batch_size}"
        assert float(match.group(1)) < 1e-5
    # ...and a check of our own: the exported file, loaded here, against the checkpoint's model,
    # on a batch size it was not exported with.
    checkpoint = checkpointing.load_checkpoint(workspace / "best.pt")
    model = checkpointing.model_from_checkpoint(checkpoint)
    exported = torch.export.load(workspace / "export" / "cifarnet_exported.pt2").module()
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (exported(images) - model(images)).abs().max().item()
    assert difference < 1e-5


def test_state_dict_file_holds_the_trained_weights(output, workspace):
    state_dict = torch.load(workspace / "export" / "cifarnet_state_dict.pt", weights_only=True)
    trained = checkpointing.load_checkpoint(workspace / "best.pt")["model"]
    assert list(state_dict) == list(trained)
    for name, tensor in trained.items():
        assert torch.equal(state_dict[name], tensor), name
    assert f"is an OrderedDict of {len(trained)} tensors" in output


def test_weights_only_refuses_code_and_the_whole_model(output, workspace):
    # The lesson's harmless "malicious" file: refused with weights_only=True, and only the
    # weights_only=False load prints its line (so the refusal really stopped it).
    refused = output.index("weights_only=True refused the file: the file asks to call or import")
    ran = output.index(">>> this line was printed by torch.load")
    assert refused < ran
    assert output.count(">>> this line was printed by torch.load") == 1
    assert "04_model.CifarNet" in output
    # The whole-model file names the class, so a safe load refuses it.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(workspace / "export" / "cifarnet_whole_model.pt", weights_only=True)


def test_whole_model_file_needs_its_class_importable(output, workspace):
    # What the lesson prints: the class reference, and the failure where it cannot be imported...
    assert "it refers to its class as 04_model.CifarNet" in output
    assert re.search(r"where 04_model cannot be imported fails: ModuleNotFoundError: "
                     r"No module named '04_model'$", output, flags=re.MULTILINE)
    # ...and our own check of both sides: a fresh Python fails without 04_model on its path and
    # loads the file once the repository is on it.
    path = workspace / "export" / "cifarnet_whole_model.pt"
    load = f"import torch; print(type(torch.load({str(path)!r}, weights_only=False)).__name__)"
    without = subprocess.run([sys.executable, "-E", "-c", load], cwd=workspace,
                             capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "No module named '04_model'" in without.stderr
    with_repo = subprocess.run([sys.executable, "-E", "-c", load], cwd=REPO_DIR,
                               capture_output=True, text=True, timeout=120)
    assert with_repo.returncode == 0, with_repo.stderr
    assert with_repo.stdout.strip() == "CifarNet"


def test_resume_goes_on_from_the_next_epoch(output):
    # The test checkpoint was saved after epoch 1 of 2, of two steps each: at step 2 of 4.
    assert re.search(r"the next epoch is 2 of 2, the learning rate goes on from \S+ "
                     r"\(step 2 of 4\)", output)


def test_the_scheduler_state_is_explained_not_dumped(output):
    # What a learner needs (the step count, the learning rate now, the peak, why the function is
    # None), each with its meaning; not the raw dict with PyTorch's bookkeeping in it.
    assert "_get_lr_called_within_step" not in output
    assert re.search(r"^    last_epoch: 2 \(scheduler\.step\(\) calls so far", output, re.MULTILINE)
    assert re.search(r"^    base_lrs: \[0\.05, 0\.05\] \(each group's peak", output, re.MULTILINE)
    last_lr = re.search(r"^    _last_lr: \[(\S+), (\S+)\] \(each group's learning rate now\)",
                        output, re.MULTILINE)
    assert last_lr and float(last_lr.group(1)) == pytest.approx(
        float(re.search(r"group 0: .*?lr=(\S+),", output).group(1)), rel=1e-3)
    assert re.search(r"^    lr_lambdas: \[None, None\] \(the schedule's function: code, which is "
                     r"not saved\)", output, re.MULTILINE)


def test_export_from_a_batch_of_one_fails_as_the_lesson_says(output, workspace):
    # The lesson shows the error instead of claiming a silent assumption...
    assert "exporting from an example batch of 1 fails: Constraints violated (batch)!" in output
    # ...and it is what torch.export really does with that example and that Dim.
    checkpoint = checkpointing.load_checkpoint(workspace / "best.pt")
    model = checkpointing.model_from_checkpoint(checkpoint).float().eval()
    batch = torch.export.Dim("batch", min=1)
    with pytest.raises(Exception, match=r"Constraints violated \(batch\)"):
        torch.export.export(model, (torch.randn(1, 3, 32, 32),), dynamic_shapes=({0: batch},))


def test_plumbing_is_marked_and_a_summary_ends_it(output):
    source = (REPO_DIR / SCRIPT).read_text()
    setup = source[:source.index("common.report_errors_plainly()")]
    assert re.search(r"^# Plumbing, down to section 1, which you can skip", setup, re.MULTILINE)
    summary = output.split("=== Summary: what you just did")[1]
    assert "state_dict" in summary and "weights_only=True" in summary and "torch.export" in summary
    assert summary.rstrip().endswith("Next, 08_predict.py: classify your own images with the "
                                     "trained model.")


def test_missing_checkpoint_is_one_sentence(run, tmp_path):
    result = run(SCRIPT, "--checkpoint", tmp_path / "nothing.pt",
                 "--output-dir", tmp_path / "export", timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "python 05_train.py" in lines[0] and "--checkpoint" in lines[0]
    assert not (tmp_path / "export").exists()  # nothing written before the error


def check_one_sentence(result, *phrases):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_cannot_be_made_is_one_sentence(run, workspace, tmp_path, where):
    (tmp_path / "taken").write_text("a file where the folder should be\n")
    output_dir = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "export"
    result = run(SCRIPT, "--checkpoint", workspace / "best.pt", "--device", "cpu",
                 "--output-dir", output_dir, timeout=120)
    check_one_sentence(result, "cifarnet_state_dict.pt", "nothing was written")
    assert [path.name for path in tmp_path.iterdir()] == ["taken"]  # no temporary file left


def test_weights_that_do_not_fit_the_model_are_one_sentence(run, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "best.pt")
    # Renamed weights, as an edited file or another version of 04_model.py would have them:
    # the checkpoint's structure is fine, but load_state_dict finds no "stem.0.weight".
    checkpoint["model"] = {name.replace("stem.", "first."): tensor
                           for name, tensor in checkpoint["model"].items()}
    checkpointing.save_checkpoint(checkpoint, tmp_path / "renamed.pt")
    result = run(SCRIPT, "--checkpoint", tmp_path / "renamed.pt", "--device", "cpu",
                 "--output-dir", tmp_path / "export", timeout=120)
    check_one_sentence(result, str(tmp_path / "renamed.pt"), "do not fit")
    assert not (tmp_path / "export").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux's RLIMIT_FSIZE")
def test_a_full_disk_keeps_the_previous_files(workspace, tmp_path):
    # A limit on the size of the files the process may write stands in for a full disk: the
    # state_dict (about 1 MiB) cannot be written, and Python gets the same kind of error
    # ("File too large" instead of "No space left on device").
    import resource

    export_dir = tmp_path / "export"
    export_dir.mkdir()
    previous = torch.zeros(3)
    torch.save(previous, export_dir / "cifarnet_state_dict.pt")
    size = (export_dir / "cifarnet_state_dict.pt").stat().st_size
    result = subprocess.run(
        [sys.executable, str(REPO_DIR / SCRIPT), "--checkpoint", str(workspace / "best.pt"),
         "--device", "cpu", "--output-dir", str(export_dir)],
        env=dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1"), cwd=REPO_DIR,
        capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)))
    check_one_sentence(result, "cifarnet_state_dict.pt", "the previous file is unchanged")
    # The previous file, whole and loadable, and nothing else.
    assert {path.name: path.stat().st_size for path in export_dir.iterdir()} == {
        "cifarnet_state_dict.pt": size}
    assert torch.equal(torch.load(export_dir / "cifarnet_state_dict.pt", weights_only=True),
                       previous)
