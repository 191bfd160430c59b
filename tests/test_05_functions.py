"""05_train.py's train_one_epoch and evaluate, used as a reader copies them into another project:
another model, a plain torchvision DataLoader, another image size, channel count and class count.
And the one evaluation input path: 05, 06 and 08 give the same answers for the same images."""

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset
from torchvision import datasets, transforms

import checkpointing
import common
import image_files
from conftest import make_checkpoint

data = common.import_script("03_data")
training = common.import_script("05_train")
evaluation = common.import_script("06_evaluate")
prediction = common.import_script("08_predict")


def tiny_grey_network(num_classes=4):
    """A small network for 1-channel 28x28 images: nothing like 04_model's CifarNet."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 14 * 14, num_classes))


def grey_loader(shuffle):
    """FakeData of 1x28x28 images in 4 classes, through ToTensor only: floats in [0, 1]."""
    dataset = datasets.FakeData(size=96, image_size=(1, 28, 28), num_classes=4,
                                transform=transforms.ToTensor(), random_offset=5)
    return DataLoader(dataset, batch_size=20, shuffle=shuffle)  # 96 = 4 x 20 + a batch of 16


def test_train_one_epoch_and_evaluate_learn_with_a_plain_dataloader():
    torch.manual_seed(0)
    model = tiny_grey_network()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # FakeData's random images carry no real signal, but 96 of them can be memorised: the
    # training loss must fall well below ln(4) = 1.386, the loss of a uniform guess.
    first_loss, _ = training.train_one_epoch(model, grey_loader(True), loss_fn, optimizer, "cpu")
    for _ in range(14):
        training.train_one_epoch(model, grey_loader(True), loss_fn, optimizer, "cpu")
    loss, accuracy = training.evaluate(model, grey_loader(False), loss_fn, "cpu")
    assert loss < 0.5 * first_loss and accuracy > 0.8, (first_loss, loss, accuracy)
    assert not model.training  # evaluate leaves the model in eval mode


def test_a_per_epoch_scheduler_stays_outside():
    # Without `batch_scheduler=`, nothing changes the learning rate inside the epoch: a copier's
    # per-epoch StepLR steps once per epoch, not once per batch.
    model = tiny_grey_network()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for epoch in range(2):
        training.train_one_epoch(model, grey_loader(True), nn.CrossEntropyLoss(), optimizer,
                                 torch.device("cpu"))
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)


def test_averages_are_per_image_not_per_batch():
    # Batches of 3 and 1 image: per image, the mean of 4 losses; per batch it would differ.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [3.0, -1.0]]).view(4, 2, 1, 1)
    labels = torch.tensor([0, 1, 1, 0])
    loader = DataLoader(TensorDataset(images, labels), batch_size=3)
    loss_fn = nn.CrossEntropyLoss()
    loss, accuracy = training.evaluate(model, loader, loss_fn, "cpu")
    with torch.no_grad():
        outputs = model(images)
        assert loss == pytest.approx(nn.functional.cross_entropy(outputs, labels).item(), rel=1e-6)
        assert accuracy == (outputs.argmax(dim=1) == labels).sum().item() / 4


def test_training_stops_loudly_when_the_loss_is_not_finite():
    model = tiny_grey_network()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    with pytest.raises(FloatingPointError):
        for _ in range(3):
            training.train_one_epoch(model, grey_loader(True), nn.CrossEntropyLoss(), optimizer,
                                     "cpu")


def test_05_06_and_08_give_the_same_answers_for_the_same_images(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "best.pt")
    config = checkpoint["config"]
    model = checkpointing.model_from_checkpoint(checkpointing.load_checkpoint(tmp_path / "best.pt"))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (12,))

    # 06: the test-set loop over 03's InMemoryLoader.
    loader = data.InMemoryLoader(images, labels, 5, "cpu", config["mean"], config["std"])
    from_06, _, _ = evaluation.predict(model, loader, "cpu")

    # 08: image files (lossless PNG, already 32x32), read and shrunk as 08 reads any photo.
    paths = []
    for number, image in enumerate(images):
        paths.append(tmp_path / f"{number}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    read = torch.stack([image_files.shrink(image_files.open_image(path)[0]) for path in paths])
    assert torch.equal(read, images)
    from_08 = prediction.predict(model, read, config["mean"], config["std"], "cpu")
    assert torch.allclose(from_06, from_08, atol=1e-6)

    # 05: validation's loss and accuracy are those of the same probabilities.
    loss, accuracy = training.evaluate(model, loader, nn.CrossEntropyLoss(), "cpu")
    expected_loss = -from_06[torch.arange(12), labels].log().mean().item()
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert accuracy == (from_06.argmax(dim=1) == labels).sum().item() / 12


def loader_of(inputs, targets, batch_size=4):
    return DataLoader(TensorDataset(inputs, targets), batch_size=batch_size)


MISUSES = {
    # A summed loss would be reported as the loss times the batch size (105.0 for 1.64).
    "summed loss": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                            loader_of(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))),
                            nn.CrossEntropyLoss(reduction="sum"), None),
    # A StepLR(step_size=1) stepped every batch: the lr would fall 2x per batch, not per epoch.
    "per-epoch scheduler": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                                    loader_of(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))),
                                    nn.CrossEntropyLoss(), "StepLR"),
    # Regression: "accuracy" would be the share of argmax == target over one output column.
    "regression targets": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 1)),
                                   loader_of(torch.randn(8, 1, 2, 2), torch.randn(8, 1)),
                                   nn.MSELoss(), None),
    # One-hot targets: CrossEntropyLoss accepts them, the accuracy would compare rows with ints.
    "one-hot targets": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                                loader_of(torch.randn(8, 1, 2, 2),
                                          nn.functional.one_hot(torch.randint(0, 3, (8,)),
                                                                3).float()),
                                nn.CrossEntropyLoss(), None),
    # A summed loss written as a plain function has no `reduction` to read.
    "summed loss function": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                                     loader_of(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))),
                                     lambda outputs, labels: nn.functional.cross_entropy(
                                         outputs, labels, reduction="sum"), None),
    # A cosine schedule planned for 2 epochs, stepped every batch, would cycle within an epoch.
    "cosine planned in epochs": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                                         loader_of(torch.randn(16, 1, 2, 2),
                                                   torch.randint(0, 3, (16,))),
                                         nn.CrossEntropyLoss(), "CosineAnnealingLR"),
    # Warm restarts whose first cycle is 1 epoch's worth of steps, given to a loader of 4 batches.
    "warm restarts planned in epochs": lambda: (
        nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
        loader_of(torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,))),
        nn.CrossEntropyLoss(), "CosineAnnealingWarmRestarts"),
    # One loss per image (reduction="none"): its sum would be taken for the batch's mean.
    "per-image losses": lambda: (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)),
                                 loader_of(torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))),
                                 nn.CrossEntropyLoss(reduction="none"), None),
    # Segmentation: one class per pixel.
    "per-pixel targets": lambda: (nn.Conv2d(1, 3, 1), loader_of(torch.randn(8, 1, 2, 2),
                                                                torch.randint(0, 3, (8, 2, 2))),
                                  nn.CrossEntropyLoss(), None),
}


@pytest.mark.parametrize("misuse", MISUSES, ids=list(MISUSES))
def test_what_would_be_measured_wrongly_is_refused_by_both_functions(misuse):
    model, loader, loss_fn, scheduler = MISUSES[misuse]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if scheduler == "StepLR":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    elif scheduler == "CosineAnnealingLR":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    elif scheduler == "CosineAnnealingWarmRestarts":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    with pytest.raises(ValueError) as error:
        training.train_one_epoch(model, loader, loss_fn, optimizer, "cpu", scheduler)
    # Refused before anything changed: no step of the weights or of the schedule.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert "classifier" in str(error.value) or "mean" in str(error.value) or \
        "planned in epochs" in str(error.value)
    if scheduler is None:
        with pytest.raises(ValueError):
            training.evaluate(model, loader, loss_fn, "cpu")


def test_evaluate_refuses_a_loader_that_skips_images_and_a_nan_loss():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    images, labels = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    dropping = DataLoader(TensorDataset(images, labels), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="every image"):
        training.evaluate(model, dropping, nn.CrossEntropyLoss(), "cpu")
    # The same drop, asked of the DataLoader's batch sampler rather than of the DataLoader.
    sampler = BatchSampler(SequentialSampler(range(10)), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="every image"):
        training.evaluate(model, DataLoader(TensorDataset(images, labels), batch_sampler=sampler),
                          nn.CrossEntropyLoss(), "cpu")
    # 03's InMemoryLoader with augment=True: random crops would change what is measured.
    augmenting = data.InMemoryLoader(
        torch.zeros(10, 1, 2, 2, dtype=torch.uint8), labels, 4, "cpu", (0.5,), (0.25,),
        augment=True, padding=1)
    with pytest.raises(ValueError, match="augments them"):
        training.evaluate(model, augmenting, nn.CrossEntropyLoss(), "cpu")
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        training.evaluate(model, loader_of(images, labels), nn.CrossEntropyLoss(), "cpu")
