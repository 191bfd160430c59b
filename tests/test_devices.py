"""Tests of what only a CUDA GPU does: bfloat16 mixed precision in 05's train_one_epoch, pinned
memory in 03's InMemoryLoader, NCCL for 12 under torchrun, and every script run with --device
cuda. On a machine without a CUDA GPU they are skipped, except the checks of what those paths
do elsewhere (mixed precision changes nothing on the CPU; 11 refuses --device cuda anywhere).

Every other test pins --device cpu where it compares printed numbers or names the device, or
accepts the machine's own device (test_03_data.py), so the whole suite passes on a GPU machine.
"""

import re

import pytest
import torch
from torch import nn

from conftest import data, make_checkpoint, models, run_script, training

CUDA = torch.cuda.is_available()
# bfloat16 on tensor cores: NVIDIA Ampere (2020) and newer. Older GPUs would only emulate it, and
# train_one_epoch then stays in float32.
NATIVE_BF16 = CUDA and torch.cuda.is_bf16_supported(including_emulation=False)
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def some_images(count=20, seed=0):
    """`count` random uint8 images (count, 3, 32, 32) and labels 0..9."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.arange(count) % 10


# ---- 05: bfloat16 autocast in train_one_epoch ----------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixed_precision", [True, False])
def test_mixed_precision_is_bfloat16_only_on_a_cuda_gpu_that_has_it(device, mixed_precision):
    torch.manual_seed(0)
    model = models.build_model("small", num_classes=10).to(device,
                                                           memory_format=torch.channels_last)
    seen = []  # the dtype of every forward pass's scores
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    loader = data.InMemoryLoader(*some_images(), 8, device, MEAN, STD, shuffle=True,
                                 augment=True, drop_last=True)
    optimizer = training.make_optimizer(model, lr=0.05, weight_decay=5e-4)
    loss, accuracy = training.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer,
                                              device, mixed_precision=mixed_precision)
    expected = torch.bfloat16 if mixed_precision and device == "cuda" and NATIVE_BF16 \
        else torch.float32
    assert seen == [expected] * len(loader)
    # Only the forward pass changes format: the weights and their gradients stay float32.
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())
    assert all(p.device.type == device for p in model.parameters())
    assert 0 < loss < 10 and 0 <= accuracy <= 1


# ---- 03: pinned memory in InMemoryLoader ---------------------------------------------------------
@needs_cuda
def test_the_loader_pins_each_batch_and_delivers_the_cpu_loaders_batches_on_the_gpu(monkeypatch):
    images, labels = some_images(count=20)
    pinned = []  # whether each tensor pin_memory() returned is page-locked
    real_pin_memory = torch.Tensor.pin_memory

    def recording_pin_memory(tensor, *args, **kwargs):
        result = real_pin_memory(tensor, *args, **kwargs)
        pinned.append(result.is_pinned())
        return result

    monkeypatch.setattr(torch.Tensor, "pin_memory", recording_pin_memory)
    on_gpu = data.InMemoryLoader(images, labels, 8, "cuda", MEAN, STD)
    on_cpu = data.InMemoryLoader(images, labels, 8, "cpu", MEAN, STD)
    assert on_gpu.pin_memory and not on_cpu.pin_memory
    gpu_batches, cpu_batches = list(on_gpu), list(on_cpu)
    assert pinned == [True] * 2 * len(on_gpu)  # images and labels of every batch, nothing else
    assert len(gpu_batches) == len(cpu_batches) == 3  # 8 + 8 + 4: the last batch is kept
    for (gpu_images, gpu_labels), (cpu_images, cpu_labels) in zip(gpu_batches, cpu_batches):
        assert gpu_images.device.type == gpu_labels.device.type == "cuda"
        assert gpu_images.dtype == torch.float32
        assert gpu_images.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(gpu_images.cpu(), cpu_images)
        assert torch.equal(gpu_labels.cpu(), cpu_labels)
    # Augmented on the GPU: the same shapes, still there, different from the plain batch.
    augmented = data.InMemoryLoader(images, labels, 20, "cuda", MEAN, STD, augment=True)
    batch = next(iter(augmented))[0]
    assert batch.device.type == "cuda" and batch.shape == (20, 3, 32, 32)
    assert not torch.equal(batch.cpu(), torch.cat([b[0] for b in cpu_batches]))


# ---- 12: NCCL under torchrun on one GPU ----------------------------------------------------------
@needs_cuda
@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_nccl_available()),
                    reason="this PyTorch has no NCCL")
def test_distributed_training_on_one_gpu_uses_nccl(tmp_path):
    from test_12_distributed import finish, start_torchrun

    status, output = finish(start_torchrun(
        1, "--fake-data", "--device", "cuda", "--epochs", 1, "--batch-size", 256,
        "--checkpoint-dir", tmp_path / "checkpoints", "--output-dir", tmp_path / "outputs"))
    assert status == 0, output
    assert "1 process(es), backend nccl, rank 0 on cuda:0" in output
    assert "Traceback" not in output
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


# ---- Every script with --device cuda --------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    """A small trained-looking checkpoint for 06, 07, 08 and 11 (conftest.make_checkpoint)."""
    path = tmp_path_factory.mktemp("devices") / "best.pt"
    make_checkpoint(path)
    return path


# (script, its flags, a line that names the GPU). {checkpoint} and {tmp} are filled in below.
CUDA_RUNS = [
    ("01_tensors.py", [], r"this run uses: cuda$"),
    ("02_autograd.py", [], r"training on cuda"),
    ("03_data.py", ["--fake-data", "--dry-run", "--output-dir", "{tmp}"],
     r"torch\.float32 on cuda:0, labels"),
    ("04_model.py", [], r"on cuda; a batch of"),
    ("05_train.py", ["--fake-data", "--dry-run", "--checkpoint-dir", "{tmp}", "--output-dir",
                     "{tmp}"], r"^Device: cuda"),
    ("06_evaluate.py", ["--fake-data", "--dry-run", "--checkpoint", "{checkpoint}",
                        "--output-dir", "{tmp}"], r"Test accuracy on"),
    ("07_save_load.py", ["--checkpoint", "{checkpoint}", "--output-dir", "{tmp}"],
     r"reloaded \(cuda\)"),
    ("08_predict.py", ["samples/frog.png", "samples/ship.jpg", "--checkpoint", "{checkpoint}",
                       "--output-dir", "{tmp}"], r"\), on cuda$"),
    ("09_transfer_learning.py", ["--fake-data", "--dry-run", "--no-pretrained"],
     r"frozen backbone: test accuracy"),
    ("10_sequences.py", ["--dry-run", "--checkpoint-dir", "{tmp}/sequences"], r"^Device: cuda"),
]


@needs_cuda
@pytest.mark.parametrize("script, flags, names_the_gpu", CUDA_RUNS,
                         ids=[script for script, _, _ in CUDA_RUNS])
def test_every_script_runs_on_a_cuda_gpu(script, flags, names_the_gpu, checkpoint_path,
                                          tmp_path):
    flags = [flag.format(checkpoint=checkpoint_path, tmp=tmp_path) for flag in flags]
    result = run_script(script, *flags, "--device", "cuda", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(names_the_gpu, result.stdout, flags=re.MULTILINE), result.stdout[-3000:]
    if script == "03_data.py":  # the DataLoader section pins memory for a CUDA GPU
        assert "pin_memory True" in result.stdout


def test_quantization_refuses_a_gpu_in_one_sentence(checkpoint_path, tmp_path):
    """11's int8 inference is CPU-only: --device cuda is refused on any machine, before work."""
    result = run_script("11_quantization.py", "--fake-data", "--dry-run", "--checkpoint",
                        checkpoint_path, "--output-dir", tmp_path, "--device", "cuda",
                        timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: int8 inference in this lesson runs on the CPU only; leave out "
                     "--device cuda."], result.stderr
    assert list(tmp_path.iterdir()) == []
