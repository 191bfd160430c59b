"""Unit tests for the data helpers of common.py: loading, the validation split, loaders, augment."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import common

CPU = torch.device("cpu")


# ---- The validation split --------------------------------------------------------------------
def test_split_holds_out_5000_of_cifar10s_50000():
    train_indices, val_indices = common.split_train_val(50_000)
    assert (len(train_indices), len(val_indices)) == (45_000, 5_000)
    assert train_indices.dtype == val_indices.dtype == torch.int64


@pytest.mark.parametrize("num_images, expected_val", [(1000, 100), (24, 2), (5, 1), (24_999, 2499)])
def test_split_holds_out_a_tenth_of_small_sets(num_images, expected_val):
    train_indices, val_indices = common.split_train_val(num_images)
    assert len(val_indices) == expected_val
    assert len(train_indices) == num_images - expected_val


@pytest.mark.parametrize("num_images", [50_000, 1000, 24])
def test_split_parts_do_not_overlap_and_cover_every_image(num_images):
    train_indices, val_indices = common.split_train_val(num_images)
    assert not torch.isin(train_indices, val_indices).any()
    assert torch.equal(torch.cat([train_indices, val_indices]).sort().values,
                       torch.arange(num_images))


def test_split_is_the_same_every_call_whatever_the_global_seed():
    torch.manual_seed(1)
    first = common.split_train_val(50_000)
    torch.manual_seed(2)
    second = common.split_train_val(50_000)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # And it is shuffled, not simply the last 5,000 images.
    assert not torch.equal(first[1].sort().values, torch.arange(45_000, 50_000))


# ---- InMemoryDataset and make_loader ---------------------------------------------------------
def numbered_dataset(size):
    """An InMemoryDataset whose label i sits with an image filled with i % 256."""
    images = (torch.arange(size) % 256).to(torch.uint8).view(size, 1, 1, 1).expand(size, 3, 32, 32)
    return common.InMemoryDataset(images.contiguous(), torch.arange(size))


def test_in_memory_dataset_indexes_a_whole_batch_at_once():
    dataset = numbered_dataset(10)
    images, labels = dataset[[7, 2, 5]]
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [7, 2, 5]
    assert images[:, 0, 0, 0].tolist() == [7, 2, 5]
    assert len(dataset) == 10


def test_training_loader_shuffles_differently_every_epoch_and_drops_the_last_batch():
    dataset = numbered_dataset(100)
    loader = common.make_loader(dataset, batch_size=32, shuffle=True, device=CPU)
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [32, 32, 32]  # 100 = 3 x 32 + 4 dropped
        for images, labels in batches:
            assert images.shape == (32, 3, 32, 32) and images.dtype == torch.uint8
            assert labels.dtype == torch.int64
            assert torch.equal(images[:, 0, 0, 0].long(), labels)  # images stay with their labels
        order = torch.cat([labels for _, labels in batches])
        assert len(set(order.tolist())) == 96  # no image twice in an epoch
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[0], torch.arange(96))


def test_evaluation_loader_keeps_the_order_and_every_image():
    dataset = numbered_dataset(100)
    loader = common.make_loader(dataset, batch_size=32, shuffle=False, device=CPU)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([labels for _, labels in batches]), torch.arange(100))
    assert torch.equal(torch.cat([labels for _, labels in loader]), torch.arange(100))


def test_training_loader_keeps_a_set_smaller_than_one_batch():
    loader = common.make_loader(numbered_dataset(20), batch_size=32, shuffle=True, device=CPU)
    batches = list(loader)
    assert len(batches) == 1
    assert sorted(batches[0][1].tolist()) == list(range(20))


def test_loader_pins_memory_only_for_cuda():
    dataset = numbered_dataset(10)
    assert not common.make_loader(dataset, 4, shuffle=False, device=CPU).pin_memory
    cuda_loader = common.make_loader(dataset, 4, shuffle=False, device=torch.device("cuda"))
    assert cuda_loader.pin_memory  # only the setting: no batch is loaded, so no GPU is needed


# ---- augment ---------------------------------------------------------------------------------
def shifted_and_flipped(image, padding):
    """Every crop (after reflect padding) of one image (C, H, W), unflipped and flipped."""
    _, height, width = image.shape
    padded = F.pad(image[None], (padding,) * 4, mode="reflect")[0]
    crops = torch.stack([padded[:, top:top + height, left:left + width]
                         for top in range(2 * padding + 1) for left in range(2 * padding + 1)])
    return torch.cat([crops, crops.flip(3)])


def test_augment_keeps_shape_dtype_and_device_and_changes_images():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32)
    augmented = common.augment(images)
    assert augmented.shape == images.shape and augmented.dtype == images.dtype
    assert augmented.device == images.device
    changed = (augmented != images).flatten(1).any(dim=1)
    assert changed.sum() >= 56  # only the centre crop, unflipped (1 in 162), leaves one as it was
    assert not torch.equal(common.augment(images), augmented)  # a new draw every call


def test_each_augmented_image_is_a_shifted_or_flipped_crop_of_its_own_image():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)  # random pixels: every crop is different from the others
    augmented = common.augment(images, padding=4)
    for output, image in zip(augmented, images):
        candidates = shifted_and_flipped(image, padding=4)
        matches = (candidates == output).flatten(1).all(dim=1)
        assert matches.sum() == 1


def test_augment_with_no_padding_only_flips():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32)
    augmented = common.augment(images, padding=0)
    same = (augmented == images).flatten(1).all(dim=1)
    flipped = (augmented == images.flip(3)).flatten(1).all(dim=1)
    assert (same ^ flipped).all()  # each image exactly one of the two
    assert 10 < flipped.sum() < 54  # about half flipped (this fails by chance 1 in 10^6)


def test_augment_draws_every_shift_and_flips_half_the_images():
    # Channel 0 holds each pixel's row, channel 1 its column, so where a pixel lands tells the
    # shift. Pixel (4, 4) of a crop at (top, left) comes from row `top`, column `left`.
    rows, columns = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    image = torch.stack([rows, columns, torch.zeros(32, 32)])
    torch.manual_seed(0)
    augmented = common.augment(image.expand(4000, 3, 32, 32).contiguous(), padding=4)
    flipped = augmented[:, 1, 4, 5] < augmented[:, 1, 4, 4]  # columns run backwards
    top = augmented[:, 0, 4, 4].long()
    left = torch.where(flipped, augmented[:, 1, 4, 27], augmented[:, 1, 4, 4]).long()
    counts = torch.bincount(top * 9 + left, minlength=81)
    assert len(counts) == 81 and counts.min() > 15  # all 81 shifts, about 49 times each
    assert 0.45 < flipped.float().mean() < 0.55


# ---- normalize -------------------------------------------------------------------------------
def test_normalize_gives_exact_values_for_a_constant_image():
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    normalised = common.normalize(images)
    assert normalised.dtype == torch.float32 and normalised.shape == images.shape
    for channel in range(3):
        expected = (200 / 255 - common.CIFAR10_MEAN[channel]) / common.CIFAR10_STD[channel]
        assert torch.allclose(normalised[:, channel], torch.tensor(expected), atol=1e-6)


def test_normalize_gives_mean_0_and_std_1_on_data_with_cifar10s_statistics():
    # Per channel, half of the pixels at mean - std and half at mean + std (in bytes): the mean
    # and (population) std of such data are the constants, up to rounding to whole bytes.
    images = torch.empty(10, 3, 32, 32, dtype=torch.uint8)
    for channel, (mean, std) in enumerate(zip(common.CIFAR10_MEAN, common.CIFAR10_STD)):
        images[:, channel, :, :16] = round(255 * (mean - std))
        images[:, channel, :, 16:] = round(255 * (mean + std))
    normalised = common.normalize(images)
    assert normalised.mean(dim=(0, 2, 3)).tolist() == pytest.approx([0, 0, 0], abs=0.02)
    assert normalised.std(dim=(0, 2, 3), correction=0).tolist() == pytest.approx([1, 1, 1],
                                                                                 abs=0.02)


def test_normalize_accepts_other_statistics_and_is_deterministic():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    normalised = common.normalize(images, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(normalised, images.float() / 255 * 2 - 1, atol=1e-6)
    assert torch.equal(common.normalize(images), common.normalize(images))


# ---- load_split ------------------------------------------------------------------------------
def write_image_folder(root):
    """train/ and test/, classes "blue" and "red", images of odd sizes, modes and formats.

    Returns the colour each image should have after loading, by split, in file order.
    """
    expected = {"train": [], "test": []}
    files = [  # (split, class, name, mode, size, value)
        ("train", "blue", "a.jpg", "RGB", (32, 32), (0, 0, 250)),
        ("train", "blue", "b.png", "RGBA", (50, 40), (10, 20, 200, 128)),
        ("train", "red", "c.png", "L", (20, 64), 90),
        ("train", "red", "d.png", "RGB", (32, 32), (240, 5, 5)),
        ("test", "blue", "e.png", "RGB", (33, 31), (1, 2, 3)),
        ("test", "red", "f.png", "P", (32, 32), None),
    ]
    for split, class_name, name, mode, size, value in files:
        folder = root / split / class_name
        folder.mkdir(parents=True, exist_ok=True)
        if mode == "P":  # a palette image: one colour, index 0 of the palette
            image = Image.new("P", size, 0)
            image.putpalette([70, 80, 90] + [0] * 765)
            rgb = (70, 80, 90)
        else:
            image = Image.new(mode, size, value)
            rgb = (value,) * 3 if mode == "L" else tuple(value[:3])
        image.save(folder / name)
        expected[split].append(rgb)
    return expected


def test_load_split_reads_an_image_folder_as_32x32_rgb(tmp_path):
    expected = write_image_folder(tmp_path)
    for split in ("train", "test"):
        images, labels, classes = common.load_split(tmp_path, split)
        assert classes == ("blue", "red")  # the subfolder names, sorted
        assert images.shape == (len(expected[split]), 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        for image, colour in zip(images, expected[split]):
            # Every image is one colour, so resizing keeps it; JPEG may be off by a little.
            assert (image.int() - torch.tensor(colour).view(3, 1, 1)).abs().max() <= 3
    _, train_labels, _ = common.load_split(tmp_path, "train")
    assert train_labels.tolist() == [0, 0, 1, 1]


def test_load_split_refuses_a_file_that_is_not_an_image(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "red" / "notes.jpg").write_text("not an image")
    with pytest.raises(common.UserError, match="notes.jpg"):
        common.load_split(tmp_path, "train")


# ---- Fake data -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_splits():
    return {split: common.load_split(common.DATA_DIR, split, fake_data=True)
            for split in ("train", "test")}


def test_fake_data_sizes_and_types(fake_splits):
    for split, size in (("train", 1000), ("test", 200)):
        images, labels, classes = fake_splits[split]
        assert images.shape == (size, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (size,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < 10
        assert classes == common.CIFAR10_CLASSES
    assert not torch.equal(fake_splits["train"][0][:200], fake_splits["test"][0])


def test_fake_data_is_the_same_every_time(fake_splits):
    images, labels, _ = common.load_split(common.DATA_DIR, "test", fake_data=True)
    assert torch.equal(images, fake_splits["test"][0])
    assert torch.equal(labels, fake_splits["test"][1])


def test_load_datasets_gives_train_validation_and_test(fake_splits, monkeypatch):
    # The splits loaded once above stand in for load_split, which would make them again.
    monkeypatch.setattr(common, "load_split",
                        lambda data_dir, split, fake_data=False: fake_splits[split])
    train_set, val_set, test_set, classes = common.load_datasets(common.DATA_DIR, fake_data=True)
    assert (len(train_set), len(val_set), len(test_set)) == (900, 100, 200)
    assert classes == common.CIFAR10_CLASSES
    train_indices, val_indices = common.split_train_val(1000)
    assert torch.equal(val_set.images, fake_splits["train"][0][val_indices])
    assert torch.equal(train_set.labels, fake_splits["train"][1][train_indices])
