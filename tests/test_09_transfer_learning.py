"""Tests for 09_transfer_learning.py: freezing really freezes (weights and batch-norm statistics),
the optimizer holds only what trains, fine-tuning trains the last stage alone, the script runs
offline with --no-pretrained, --compare transfers from a 05_train.py checkpoint to a folder of
other classes, and every mistake a learner can make (a missing download, a wrong --weights-file or
--backbone, a huge --image-size, a diverging --lr, batches of one image) is one sentence.

Everything is offline and on the CPU: ResNet-18 starts from random weights (the freezing does not
depend on what the weights are), and the networks see a few small images."""

import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

import common
from conftest import make_checkpoint, run_script

transfer = common.import_script("09_transfer_learning")
models = common.import_script("04_model")
training = common.import_script("05_train")

SCRIPT = "09_transfer_learning.py"
# As in test_03_data.py: a proxy where nothing listens, so a download fails at once, and an empty
# torch cache (TORCH_HOME), so no weights downloaded earlier are found.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "no_proxy": "", "NO_PROXY": ""}

NETWORKS = {"resnet18": lambda: resnet18(weights=None),
            "cifarnet": lambda: models.build_model("small", num_classes=10)}


def one_batch(num_classes=3, size=8):
    """One batch of random 32x32 images with labels, as a loader of one batch (a list)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    return [(images, torch.arange(size) % num_classes)]


def transfer_net(name, num_classes):
    """A TransferNet from one of NETWORKS, with no preprocessing (the batches are ready)."""
    return transfer.TransferNet(NETWORKS[name](), torch.nn.Identity(), num_classes)


def assert_one_sentence(result, returncode, sentence_start):
    """The run failed with `returncode`, and its last line is one sentence starting so."""
    assert result.returncode == returncode, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(sentence_start), result.stderr
    return last_line


def snapshot(module):
    """A copy of every parameter and buffer (batch-norm's running statistics included)."""
    return {name: value.clone() for name, value in module.state_dict().items()}


def changed(before, module):
    """The names of the parameters and buffers of `module` that differ from `before`."""
    return {name for name, value in module.state_dict().items()
            if not torch.equal(value, before[name])}


@pytest.mark.parametrize("name", NETWORKS)
def test_a_frozen_backbone_stays_as_it_was_and_the_head_learns(name):
    torch.manual_seed(0)
    model = transfer_net(name, num_classes=3)
    transfer.freeze_backbone(model)
    optimizer = transfer.make_optimizer(model, lr=0.01, backbone_lr=0.0)
    backbone, head = snapshot(model.backbone), snapshot(model.head)
    training.train_one_epoch(model, one_batch(), torch.nn.CrossEntropyLoss(), optimizer, "cpu")
    # Weights and running statistics alike: train() kept the frozen batch-norm layers in eval.
    assert changed(backbone, model.backbone) == set()
    assert changed(head, model.head) == {"weight", "bias"}
    assert all(parameter.grad is None for parameter in model.backbone.parameters())
    assert model.training and not any(module.training for module in model.backbone.modules()
                                      if isinstance(module, torch.nn.BatchNorm2d))


def test_the_network_passed_in_is_never_changed():
    network = models.build_model("small", num_classes=10)
    before = snapshot(network)
    model = transfer.TransferNet(network, torch.nn.Identity(), num_classes=3)
    optimizer = transfer.make_optimizer(model, lr=0.01, backbone_lr=0.01)  # nothing frozen
    training.train_one_epoch(model, one_batch(), torch.nn.CrossEntropyLoss(), optimizer, "cpu")
    assert changed(before, network) == set()
    assert all(parameter.requires_grad for parameter in network.parameters())


@pytest.mark.parametrize("name", NETWORKS)
def test_the_optimizer_holds_only_what_trains(name):
    model = transfer_net(name, num_classes=5)
    transfer.freeze_backbone(model)
    optimizer = transfer.make_optimizer(model, lr=1e-3, backbone_lr=0.0)
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in model.head.parameters())
    assert transfer.trainable_parameters(model) == sum(p.numel() for p in model.head.parameters())
    # Fine-tuning: the last stage joins, in its own group with a 10x smaller learning rate.
    model.last_stage.requires_grad_(True)
    optimizer = transfer.make_optimizer(model, lr=1e-3, backbone_lr=1e-4)
    head_group, stage_group = optimizer.param_groups
    assert [id(p) for p in stage_group["params"]] == [id(p) for p in model.last_stage.parameters()]
    assert (head_group["lr"], stage_group["lr"]) == (1e-3, 1e-4)
    expected_stage = {"resnet18": "layer4", "cifarnet": "blocks.2"}[name]
    assert model.last_stage_name == expected_stage


def test_fine_tuning_trains_the_last_stage_and_nothing_else_of_the_backbone():
    torch.manual_seed(0)
    model = transfer_net("cifarnet", num_classes=3)
    transfer.freeze_backbone(model)
    model.last_stage.requires_grad_(True)
    optimizer = transfer.make_optimizer(model, lr=0.01, backbone_lr=0.001)
    before = snapshot(model.backbone)
    training.train_one_epoch(model, one_batch(), torch.nn.CrossEntropyLoss(), optimizer, "cpu")
    moved = changed(before, model.backbone)
    assert moved and all(name.startswith("blocks.2.") for name in moved)
    # The last stage's batch-norm trains, so its running statistics follow the batch.
    assert "blocks.2.norm1.running_mean" in moved


def test_a_wrong_weights_file_is_one_sentence(tmp_path):
    not_weights = tmp_path / "notes.txt"
    not_weights.write_text("not a tensor file")
    with pytest.raises(common.UserError, match="is not ResNet-18's weights file, or not one "
                                               "torch.load can read safely"):
        transfer.load_resnet18(weights_file=not_weights)
    with pytest.raises(common.UserError, match="there is no file"):
        transfer.load_resnet18(weights_file=tmp_path / "missing.pth")
    with pytest.raises(common.UserError, match=f"{tmp_path} is a folder, not a file"):
        transfer.load_resnet18(weights_file=tmp_path)
    # A file torch.load reads, with the weights of another network: refused, in one sentence.
    checkpoint = tmp_path / "best.pt"
    make_checkpoint(checkpoint)
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--weights-file", checkpoint,
                        timeout=120)
    line = assert_one_sentence(result, 1, f"Error: {checkpoint} is not ResNet-18's weights file")
    assert result.stderr.strip().splitlines() == [line]
    assert "(RuntimeError)" in line and transfer.ResNet18_Weights.DEFAULT.url in line


def test_a_wrong_backbone_names_the_backbone_flag(tmp_path):
    """load_checkpoint's advice names 06-08's --checkpoint; 09's flag is --backbone."""
    not_checkpoint = tmp_path / "notes.pt"
    not_checkpoint.write_text("not a checkpoint")
    for path in (tmp_path / "missing.pt", tmp_path, not_checkpoint):
        with pytest.raises(common.UserError, match="pass --backbone with") as caught:
            transfer.load_own_network(path)
        assert "--checkpoint" not in str(caught.value)


@pytest.mark.parametrize("flags, sentence", [
    (["--image-size", "100000"], "09_transfer_learning.py: error: --image-size must be from 32"),
    (["--image-size", "16"], "09_transfer_learning.py: error: --image-size must be from 32"),
    (["--backbone", "best.pt", "--no-pretrained"],
     "09_transfer_learning.py: error: argument --no-pretrained: not allowed with argument "
     "--backbone"),
    (["--backbone", "missing/best.pt"], "Error: there is no checkpoint at missing/best.pt"),
])
def test_flags_that_cannot_work_are_one_sentence_before_any_work(flags, sentence):
    result = run_script(SCRIPT, "--fake-data", "--dry-run", *flags, timeout=120)
    line = assert_one_sentence(result, 2 if "error:" in sentence else 1, sentence)
    assert "--checkpoint" not in line
    assert "=== 2." not in result.stdout  # refused before loading any image


def test_a_diverging_run_stops_in_one_sentence():
    """--lr 1e30: the head's first step throws the weights far off, fine-tuning makes them nan;
    either way the run stops at the end of that epoch."""
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--no-pretrained", "--image-size", 32,
                        "--lr", "1e30", "--fine-tune", timeout=120)
    line = assert_one_sentence(result, 1, "Error: the ")  # validation or evaluation loss
    assert line.endswith("training diverged; try a lower --lr.")
    # The same check, in the function itself: a loss above 10x that of guessing stops it.
    model = transfer_net("cifarnet", num_classes=3)
    optimizer = transfer.make_optimizer(model, lr=1e30, backbone_lr=1e30)
    with pytest.raises(common.UserError, match="training diverged"):
        transfer.train_epochs(model, one_batch(), one_batch(), optimizer, 1, "cpu", "all")


def test_batches_of_one_image_are_refused_where_batch_norm_trains(tmp_path):
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--no-pretrained", "--image-size", 32,
                        "--batch-size", 1, "--compare", timeout=120)
    assert_one_sentence(result, 1, "Error: batch-norm layers cannot train on batches of one image")
    # One image per class, two classes: one is held out for validation, one trains.
    write_folder(tmp_path / "tiny", ["apple", "pear"], per_class=1)
    result = run_script(SCRIPT, "--data-dir", tmp_path / "tiny", "--no-pretrained",
                        "--image-size", 32, "--fine-tune", "--epochs", 1, "--fine-tune-epochs", 1,
                        timeout=120)
    assert_one_sentence(result, 1, "Error: batch-norm layers cannot train on batches of one image")
    assert "1 training, 1 validation and 6 test images" in result.stdout
    # 5 training images in batches of 4: the last batch, of one image, is dropped, so it trains.
    write_folder(tmp_path / "five", ["apple", "pear"], per_class=3)
    result = run_script(SCRIPT, "--data-dir", tmp_path / "five", "--no-pretrained",
                        "--image-size", 32, "--fine-tune", "--epochs", 1, "--fine-tune-epochs", 1,
                        "--batch-size", 4, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "5 training, 1 validation and 6 test images" in result.stdout


def test_without_internet_the_default_is_one_sentence_that_says_how_to_get_the_weights(tmp_path):
    result = run_script(SCRIPT, "--fake-data", "--dry-run", timeout=120,
                        env=dict(NO_NETWORK, TORCH_HOME=str(tmp_path)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("Error: could not download ResNet-18's ImageNet weights")
    assert "--weights-file PATH" in errors[0] and "--no-pretrained" in errors[0]
    assert not any((tmp_path / "hub" / "checkpoints").glob("*.pth"))  # nothing half-written


def test_fake_data_dry_run_runs_offline_from_random_weights():
    result = run_script(SCRIPT, "--fake-data", "--dry-run", "--no-pretrained", timeout=120,
                        env=NO_NETWORK)
    assert result.returncode == 0, result.stderr
    assert "ResNet-18 with random weights" in result.stdout
    assert "after freezing:  5,130 (the head's 512 x 10 weights and 10 biases)" in result.stdout
    assert "a batch as the backbone gets it: (64, 3, 112, 112)" in result.stdout
    assert "the backbone turns images (2, 3, 112, 112) into features (2, 512)" in result.stdout
    assert "frozen backbone: test accuracy" in result.stdout
    assert "Next, 10_sequences.py" in result.stdout


def write_folder(root, classes, per_class):
    """A folder of tiny images, one colour per class (train/ and test/)."""
    for split, count in (("train", per_class), ("test", 3)):
        for index, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for number in range(count):
                colour = (80 * index + 40, 8 * number, 255 - 60 * index)
                Image.new("RGB", (40, 32), colour).save(root / split / name / f"{number}.png")


def test_compare_transfers_from_a_05_checkpoint_to_other_classes(tmp_path):
    checkpoint = tmp_path / "best.pt"
    make_checkpoint(checkpoint)  # a small CifarNet for CIFAR-10's 10 classes
    write_folder(tmp_path / "new", ["apple", "pear", "plum"], per_class=10)
    a_file = tmp_path / "a_file"  # --compare writes nothing, so an --output-dir that is a file
    a_file.write_text("kept")  # does not matter
    result = run_script(SCRIPT, "--backbone", checkpoint, "--data-dir", tmp_path / "new",
                        "--compare", "--epochs", 1, "--fine-tune-epochs", 1, "--batch-size", 8,
                        "--output-dir", a_file, timeout=120)
    assert result.returncode == 0, result.stderr
    assert a_file.read_text() == "kept"
    assert "3 classes: apple, pear, plum" in result.stdout
    assert "27 training images of 3 classes, 2 epochs each, tested on 9:" in result.stdout
    network = models.build_model("small", num_classes=10)
    head = 128 * 3 + 3  # the new head: 128 features x 3 classes, and 3 biases
    without_classifier = sum(p.numel() for p in network.parameters()) - 128 * 10
    last_stage = sum(p.numel() for p in network.blocks[2].parameters())
    trainable = {"from scratch": without_classifier + head, "frozen backbone": head,
                 "fine-tuned": last_stage + head}
    table = result.stdout.split("tested on 9:")[1].splitlines()
    for method in transfer.METHODS:  # one row of the table per method
        assert any(line.strip().startswith(method) and line.rstrip().endswith(
            f"{trainable[method]:,}") for line in table), method
