"""Unit tests for 03_data.py's data pipeline, as 05-08 import it: loading, the validation split,
the in-memory loader, normalize and random_crop_and_flip."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import common

data = common.import_script("03_data")
MEAN, STD = data.CIFAR10_MEAN, data.CIFAR10_STD


# ---- The validation split --------------------------------------------------------------------
def test_split_holds_out_5000_of_cifar10s_50000():
    train_indices, val_indices = data.split_train_val(50_000)
    assert (len(train_indices), len(val_indices)) == (45_000, 5_000)
    assert train_indices.dtype == val_indices.dtype == torch.int64


@pytest.mark.parametrize("num_images, expected_val", [(1000, 100), (24, 2), (5, 1), (24_999, 2499)])
def test_split_holds_out_a_tenth_of_small_sets(num_images, expected_val):
    train_indices, val_indices = data.split_train_val(num_images)
    assert len(val_indices) == expected_val
    assert len(train_indices) == num_images - expected_val


@pytest.mark.parametrize("num_images", [50_000, 1000, 24])
def test_split_parts_do_not_overlap_and_cover_every_image(num_images):
    train_indices, val_indices = data.split_train_val(num_images)
    assert not torch.isin(train_indices, val_indices).any()
    assert torch.equal(torch.cat([train_indices, val_indices]).sort().values,
                       torch.arange(num_images))


def test_split_is_the_same_every_call_whatever_the_global_seed():
    torch.manual_seed(1)
    first = data.split_train_val(50_000)
    torch.manual_seed(2)
    second = data.split_train_val(50_000)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # And it is shuffled, not simply the last 5,000 images.
    assert not torch.equal(first[1].sort().values, torch.arange(45_000, 50_000))


# ---- InMemoryLoader ----------------------------------------------------------------------------
def numbered(size):
    """uint8 images whose pixels are all i % 256 beside the label i: (images, labels)."""
    images = (torch.arange(size) % 256).to(torch.uint8).view(size, 1, 1, 1).expand(size, 3, 32, 32)
    return images.contiguous(), torch.arange(size)


def pixel_values(images):
    """Undo normalize for each image's first pixel: back to the byte it was made from."""
    return (images[:, 0, 0, 0] * STD[0] + MEAN[0]).mul(255).round().long()


def test_training_loader_shuffles_differently_every_epoch_and_drops_the_last_batch():
    loader = data.InMemoryLoader(*numbered(100), 32, "cpu", MEAN, STD, shuffle=True,
                                 drop_last=True)
    assert len(loader) == 3
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [32, 32, 32]  # 100 = 3 x 32 + 4 dropped
        for images, labels in batches:
            assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
            assert images.is_contiguous(memory_format=torch.channels_last)
            assert labels.dtype == torch.int64
            assert torch.equal(pixel_values(images), labels)  # images stay with their labels
        order = torch.cat([labels for _, labels in batches])
        assert len(set(order.tolist())) == 96  # no image twice in an epoch
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[0], torch.arange(96))


def test_evaluation_loader_keeps_the_order_and_every_image_unaugmented():
    images, labels = numbered(100)
    loader = data.InMemoryLoader(images, labels, 32, torch.device("cpu"), MEAN, STD)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([labels for _, labels in batches]), torch.arange(100))
    # Exactly normalize's output, in the same order, every time: no augmentation.
    assert torch.equal(torch.cat([batch for batch, _ in loader]), data.normalize(images, MEAN, STD))


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last_is_its_own_choice_not_a_side_effect_of_shuffling(shuffle):
    # The default keeps every image, shuffled or not: 100 = 3 x 32 + 4.
    kept = data.InMemoryLoader(*numbered(100), 32, "cpu", MEAN, STD, shuffle=shuffle)
    assert len(kept) == 4
    assert sorted(torch.cat([labels for _, labels in kept]).tolist()) == list(range(100))
    dropped = data.InMemoryLoader(*numbered(100), 32, "cpu", MEAN, STD, shuffle=shuffle,
                                  drop_last=True)
    assert len(dropped) == 3 and [len(labels) for _, labels in dropped] == [32, 32, 32]


def test_training_loader_keeps_a_set_smaller_than_one_batch():
    loader = data.InMemoryLoader(*numbered(20), 32, "cpu", MEAN, STD, shuffle=True, augment=True,
                                 drop_last=True)
    batches = list(loader)
    assert len(batches) == 1
    assert sorted(batches[0][1].tolist()) == list(range(20))


def test_loader_augments_only_when_asked():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(64, dtype=torch.long)
    plain = next(iter(data.InMemoryLoader(images, labels, 64, "cpu", MEAN, STD)))[0]
    augmented = next(iter(data.InMemoryLoader(images, labels, 64, "cpu", MEAN, STD,
                                              augment=True)))[0]
    assert torch.equal(plain, data.normalize(images, MEAN, STD))
    assert (augmented != plain).flatten(1).any(dim=1).sum() >= 56


def test_loader_pins_memory_only_for_cuda():
    images, labels = numbered(10)
    assert not data.InMemoryLoader(images, labels, 4, "cpu", MEAN, STD).pin_memory
    if torch.cuda.is_available():
        assert data.InMemoryLoader(images, labels, 4, "cuda", MEAN, STD).pin_memory


# ---- random_crop_and_flip -------------------------------------------------------------------
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
    augmented = data.random_crop_and_flip(images)
    assert augmented.shape == images.shape and augmented.dtype == images.dtype
    assert augmented.device == images.device
    changed = (augmented != images).flatten(1).any(dim=1)
    assert changed.sum() >= 56  # only the centre crop, unflipped (1 in 162), leaves one as it was
    assert not torch.equal(data.random_crop_and_flip(images), augmented)  # a new draw every call


def test_each_augmented_image_is_a_shifted_or_flipped_crop_of_its_own_image():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)  # random pixels: every crop is different from the others
    augmented = data.random_crop_and_flip(images, padding=4)
    for output, image in zip(augmented, images):
        candidates = shifted_and_flipped(image, padding=4)
        matches = (candidates == output).flatten(1).all(dim=1)
        assert matches.sum() == 1


def test_augment_with_no_padding_only_flips():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32)
    augmented = data.random_crop_and_flip(images, padding=0)
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
    augmented = data.random_crop_and_flip(image.expand(4000, 3, 32, 32).contiguous(), padding=4)
    flipped = augmented[:, 1, 4, 5] < augmented[:, 1, 4, 4]  # columns run backwards
    top = augmented[:, 0, 4, 4].long()
    left = torch.where(flipped, augmented[:, 1, 4, 27], augmented[:, 1, 4, 4]).long()
    counts = torch.bincount(top * 9 + left, minlength=81)
    assert len(counts) == 81 and counts.min() > 15  # all 81 shifts, about 49 times each
    assert 0.45 < flipped.float().mean() < 0.55


# ---- normalize -------------------------------------------------------------------------------
def test_normalize_gives_exact_values_for_a_constant_image():
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    normalised = data.normalize(images, MEAN, STD)
    assert normalised.dtype == torch.float32 and normalised.shape == images.shape
    for channel in range(3):
        expected = (200 / 255 - MEAN[channel]) / STD[channel]
        assert torch.allclose(normalised[:, channel], torch.tensor(expected), atol=1e-6)


def test_normalize_gives_mean_0_and_std_1_on_data_with_cifar10s_statistics():
    # Per channel, half of the pixels at mean - std and half at mean + std (in bytes): the mean
    # and (population) std of such data are the constants, up to rounding to whole bytes.
    images = torch.empty(10, 3, 32, 32, dtype=torch.uint8)
    for channel, (mean, std) in enumerate(zip(MEAN, STD)):
        images[:, channel, :, :16] = round(255 * (mean - std))
        images[:, channel, :, 16:] = round(255 * (mean + std))
    normalised = data.normalize(images, MEAN, STD)
    assert normalised.mean(dim=(0, 2, 3)).tolist() == pytest.approx([0, 0, 0], abs=0.02)
    assert normalised.std(dim=(0, 2, 3), correction=0).tolist() == pytest.approx([1, 1, 1],
                                                                                 abs=0.02)


def test_normalize_accepts_other_statistics_and_is_deterministic():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    normalised = data.normalize(images, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(normalised, images.float() / 255 * 2 - 1, atol=1e-6)
    assert torch.equal(data.normalize(images, MEAN, STD), data.normalize(images, MEAN, STD))


def test_normalize_refuses_images_that_are_already_floats():
    # The silent mistake a copier makes: ToTensor's [0, 1] floats divided by 255 a second time.
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(TypeError, match="uint8"):
        data.normalize(images, MEAN, STD)


def test_normalize_refuses_statistics_for_another_number_of_channels():
    # Three-channel statistics on one grey channel would broadcast it into three channels.
    grey = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="1 channels"):
        data.normalize(grey, MEAN, STD)
    assert data.normalize(grey, (0.5,), (0.25,)).shape == (2, 1, 8, 8)


def test_prepare_batch_is_what_the_evaluation_loader_yields():
    # 06 uses the loader and 08 calls prepare_batch directly: both give the network one input.
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    prepared = data.prepare_batch(images, "cpu", MEAN, STD)
    assert prepared.is_contiguous(memory_format=torch.channels_last)
    from_loader = next(iter(data.InMemoryLoader(images, torch.zeros(10, dtype=torch.long), 10,
                                                "cpu", MEAN, STD)))[0]
    assert torch.equal(prepared, from_loader)


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
            if mode == "RGBA":  # half transparent: composited on white, as 08 shows it
                alpha = value[3] / 255
                rgb = tuple(round(alpha * channel + (1 - alpha) * 255) for channel in value[:3])
        image.save(folder / name)
        expected[split].append(rgb)
    return expected


def test_load_split_reads_an_image_folder_as_32x32_rgb(tmp_path):
    expected = write_image_folder(tmp_path)
    for split in ("train", "test"):
        images, labels, classes = data.load_split(tmp_path, split)
        assert classes == ("blue", "red")  # the subfolder names, sorted
        assert images.shape == (len(expected[split]), 3, 32, 32) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        for image, colour in zip(images, expected[split]):
            # Every image is one colour, so resizing keeps it; JPEG may be off by a little.
            assert (image.int() - torch.tensor(colour).view(3, 1, 1)).abs().max() <= 3
    _, train_labels, _ = data.load_split(tmp_path, "train")
    assert train_labels.tolist() == [0, 0, 1, 1]


def test_load_split_refuses_a_file_that_is_not_an_image(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "red" / "notes.jpg").write_text("not an image")
    with pytest.raises(common.UserError, match="notes.jpg"):
        data.load_split(tmp_path, "train")


# ---- Fake data -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_splits():
    return {split: data.load_split(common.DATA_DIR, split, fake_data=True)
            for split in ("train", "test")}


def test_fake_data_sizes_and_types(fake_splits):
    for split, size in (("train", 1000), ("test", 200)):
        images, labels, classes = fake_splits[split]
        assert images.shape == (size, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (size,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < 10
        assert classes == data.CIFAR10_CLASSES
    assert not torch.equal(fake_splits["train"][0][:200], fake_splits["test"][0])


def test_fake_data_is_the_same_every_time(fake_splits):
    images, labels, _ = data.load_split(common.DATA_DIR, "test", fake_data=True)
    assert torch.equal(images, fake_splits["test"][0])
    assert torch.equal(labels, fake_splits["test"][1])


def test_load_train_and_val_splits_the_training_images(fake_splits, monkeypatch):
    # The splits loaded once above stand in for load_split, which would make them again.
    monkeypatch.setattr(data, "load_split",
                        lambda data_dir, split, fake_data=False, classes=None: fake_splits[split])
    train, val, classes = data.load_train_and_val(common.DATA_DIR, fake_data=True)
    assert (len(train.labels), len(val.labels)) == (900, 100)
    assert classes == data.CIFAR10_CLASSES
    train_indices, val_indices = data.split_train_val(1000)
    assert torch.equal(val.images, fake_splits["train"][0][val_indices])
    assert torch.equal(train.labels, fake_splits["train"][1][train_indices])


def test_load_train_and_val_needs_two_images(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "only" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "test" / "only" / "b.png")
    with pytest.raises(common.UserError, match="at least 2"):
        data.load_train_and_val(tmp_path)


def test_torchvisions_random_crop_and_flip_makes_the_same_kind_of_image():
    # The lesson's per-image transforms (section 3) and the batch version should be
    # interchangeable: every torchvision output is also one of the crops and flips above.
    from torchvision import transforms

    geometric = transforms.Compose([
        transforms.RandomCrop(32, padding=data.AUGMENT_PADDING, padding_mode="reflect"),
        transforms.RandomHorizontalFlip()])
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    for image in images:
        output = transforms.PILToTensor()(geometric(transforms.ToPILImage()(image)))
        candidates = shifted_and_flipped(image.float(), padding=data.AUGMENT_PADDING)
        assert (candidates == output.float()).flatten(1).all(dim=1).sum() == 1


@pytest.mark.parametrize("present", ["train", "test"])
def test_half_an_image_folder_names_what_is_missing(present, tmp_path):
    (tmp_path / present / "cats").mkdir(parents=True)
    missing = "test" if present == "train" else "train"
    with pytest.raises(common.UserError, match=f"no {missing}/ folder"):
        data.load_split(tmp_path, "train")


# ---- random_crop_and_flip, against the per-image loop it stands for -------------------------
def crop_and_flip_one_by_one(images, padding):
    """What random_crop_and_flip does, written as a loop over the images: it draws the same
    random numbers in the same order (every corner's top, every corner's left, then a coin per
    image on the CPU), and crops and flips each image by itself."""
    batch, _, height, width = images.shape
    tops = torch.randint(0, 2 * padding + 1, (batch,)).tolist()
    lefts = torch.randint(0, 2 * padding + 1, (batch,)).tolist()
    coins = (torch.rand(batch) < 0.5).tolist()
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    crops = []
    for image, top, left, coin in zip(padded, tops, lefts, coins):
        crop = image[:, top:top + height, left:left + width]
        crops.append(crop.flip(2) if coin else crop)
    return torch.stack(crops)


@pytest.mark.parametrize("shape, padding, dtype", [
    ((256, 3, 32, 32), 4, torch.float32), ((50, 1, 64, 64), 4, torch.float32),
    ((9, 2, 16, 24), 7, torch.float64), ((20, 3, 32, 32), 4, torch.uint8),
    ((20, 3, 32, 32), 0, torch.float32), ((5, 4, 5, 3), 2, torch.float32)])
def test_augment_is_exactly_the_per_image_loop(shape, padding, dtype):
    # The same seed gives the very same crops and flips as the loop. That also pins the order
    # of the random draws, which is the one of the earlier gather-based version: a training run
    # with the same seed gives the same numbers as before.
    images = (torch.rand(shape) * 255).to(dtype)
    torch.manual_seed(7)
    augmented = data.random_crop_and_flip(images, padding=padding)
    torch.manual_seed(7)
    assert torch.equal(augmented, crop_and_flip_one_by_one(images, padding))
    assert augmented.dtype == dtype and augmented.shape == images.shape


def test_augment_without_flip_only_crops():
    torch.manual_seed(0)
    images = torch.rand(200, 3, 32, 32)
    augmented = data.random_crop_and_flip(images, padding=4, flip=False)
    for output, image in zip(augmented, images):
        candidates = shifted_and_flipped(image, padding=4)[:81]  # the unflipped crops only
        assert (candidates == output).flatten(1).all(dim=1).sum() == 1
    assert torch.equal(data.random_crop_and_flip(images, padding=0, flip=False), images)


def test_prepare_batch_gives_eval_transforms_numbers():
    # Section 4's per-image eval_transform and the batch version agree (up to float rounding).
    _, eval_transform = data.make_transforms(MEAN, STD)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    to_pil = data.transforms.ToPILImage()
    by_torchvision = torch.stack([eval_transform(to_pil(image)) for image in images])
    assert (data.prepare_batch(images, "cpu", MEAN, STD) - by_torchvision).abs().max() < 1e-5


# ---- InMemoryLoader in a foreign setting: one channel, 64x64, its own statistics -------------
def test_loader_works_for_one_channel_64x64_images():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (70, 1, 64, 64), dtype=torch.uint8)
    labels = torch.arange(70)
    mean, std = (0.5,), (0.25,)
    plain = data.InMemoryLoader(images, labels, 32, "cpu", mean, std)
    batches = list(plain)
    assert [tuple(batch.shape) for batch, _ in batches] == [(32, 1, 64, 64), (32, 1, 64, 64),
                                                            (6, 1, 64, 64)]
    expected = (images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(torch.cat([batch for batch, _ in batches]), expected, atol=1e-6)
    augmented = data.InMemoryLoader(images, labels, 32, "cpu", mean, std, shuffle=True,
                                    augment=True, padding=8, flip=False, drop_last=True)
    for batch, batch_labels in augmented:
        assert batch.shape == (32, 1, 64, 64)
        for output, label in zip(batch, batch_labels):
            source = expected[label]
            crops = shifted_and_flipped(source, padding=8)[:17 * 17]  # unflipped only
            assert torch.isclose(crops, output).flatten(1).all(dim=1).any()


@pytest.mark.parametrize("change, message", [
    (dict(mean=(0.5, 0.5, 0.5)), "1 channel"),  # three-channel statistics for grey images
    (dict(std=(0.0,)), "std above 0"),
    (dict(std=(-0.25,)), "std above 0"),
    (dict(std=(2.0,)), "at most 1"),
    (dict(mean=(float("nan"),)), "mean 0 to 1"),
    (dict(mean=(127.5,), std=(64.0,)), r"scaled to \[0, 1\]"),
    (dict(labels=torch.arange(69)), "one label per image"),
    # Floats were scaled already: the wrong type, and the sentence says why (normalize's).
    (dict(images=torch.rand(70, 1, 64, 64)), "uint8 images .* already floats"),
    (dict(images=torch.zeros(70, 64, 64, dtype=torch.uint8)), r"\(N, C, H, W\)"),
    # Channels last, as NumPy and image files store them: the sentence says what to do.
    (dict(images=torch.zeros(70, 64, 64, 1, dtype=torch.uint8)), r"permute\(0, 3, 1, 2\)"),
    (dict(augment=True, padding=64), "padding must be from 0 to 63"),
])
def test_loader_refuses_misuse_when_it_is_made(change, message):
    arguments = dict(images=torch.zeros(70, 1, 64, 64, dtype=torch.uint8), labels=torch.arange(70),
                     batch_size=32, device="cpu", mean=(0.5,), std=(0.25,))
    arguments.update(change)
    error = TypeError if arguments["images"].is_floating_point() else ValueError
    with pytest.raises(error, match=message):
        data.InMemoryLoader(**arguments)
