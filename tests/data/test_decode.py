"""Decoding: libjpeg-turbo tensors equal to PIL's pixels (RGB, greyscale, CMYK), PIL where torchvision cannot
(PNG named .JPEG), the bomb limit read from a JPEG's own header, the device-decode path (data.decode: gpu,
run here on the CPU device) giving the decode processes' samples and crops, and data.decode's choice."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from adaptnet.data import DataError, decode_on
from adaptnet.data import decode as decode_module
from adaptnet.data.catalog import open_reader
from adaptnet.data.decode import decode_jpegs, decode_tensor, jpeg_size
from adaptnet.data.streaming import ImageFiles, StreamingBatches
from adaptnet.data.transforms import train_transform
from adaptnet.loop.config import AugmentConfig

SMALL = AugmentConfig(train_crop=24, eval_resize=28, eval_crop=24)


def _encoded(mode: str, fmt: str = "JPEG", size=(37, 29)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, fmt)
    return out.getvalue()


def _pil(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_decoded_tensors_equal_pils_rgb_pixels(mode, fmt):
    data = _encoded(mode, fmt)
    image = decode_tensor(data, "x.JPEG")
    assert image.dtype == torch.uint8 and image.shape == (3, 29, 37)
    assert torch.equal(image, _pil(data))
    assert jpeg_size(data) == ((37, 29) if fmt == "JPEG" else None)


def test_the_imagenet_sample_decodes_as_pil_does(imagenet_tree):
    files = sorted((imagenet_tree / "train").rglob("*.JPEG"))[::20]
    for path in files:
        data = path.read_bytes()
        assert torch.equal(decode_tensor(data, path.name), _pil(data)), path.name


def test_bad_bytes_are_one_line_and_a_bomb_is_refused_from_its_header(monkeypatch):
    with pytest.raises(DataError, match=r"^data\.dataset: t\.jpg cannot be decoded \((?i:.*truncated)"):
        decode_tensor(_encoded("RGB")[:400], "t.jpg")
    with pytest.raises(DataError, match=r"^data\.dataset: g\.jpg cannot be decoded"):
        decode_tensor(b"not an image at all", "g.jpg")
    monkeypatch.setattr(decode_module, "MAX_PIXELS", 37 * 29 - 1)
    for data in (_encoded("RGB"), _encoded("RGB", "PNG")):  # libjpeg-turbo's path and PIL's
        with pytest.raises(DataError, match="decompression-bomb limit"):
            decode_tensor(data, "big.jpg")


def test_batched_device_decode_keeps_good_images_and_names_a_bad_one():
    good, bad = _encoded("RGB"), _encoded("RGB")[:400]
    out = decode_jpegs([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (good, bad, good)],
                       ["a", "b", "c"], torch.device("cpu"))
    assert torch.equal(out[0], _pil(good)) and torch.equal(out[2], out[0])
    assert isinstance(out[1], DataError) and str(out[1]).startswith("data.dataset: b cannot be decoded")


def test_device_decode_gives_the_decode_processes_samples_and_crops(imagenet_tree):
    """data.decode: gpu's path (the processes only read bytes; decode, crop and flip where training runs), run
    with the CPU as the device: the same samples, in the same order, with the same crops as cpu decoding."""
    reader = open_reader(str(imagenet_tree))
    refs, labels = reader.listing().splits["train"]
    refs, labels = refs[:40], labels[:40]
    transform = train_transform("imagenet", SMALL, (0.5,) * 3, (0.25,) * 3)

    def epoch(on_device: bool, workers: int):
        files = ImageFiles(reader, refs, labels, None if on_device else transform, seed=3)
        batches = StreamingBatches(files, 16, shuffle=True, seed=3, workers=workers, with_ids=True,
                                   device_transform=transform if on_device else None)
        batches.set_epoch(1)
        out = list(batches)
        return torch.cat([i for _, _, i in out]).tolist(), torch.cat([x for x, _, _ in out])

    ids, images = epoch(False, 0)
    on_device_ids, on_device = epoch(True, 2)
    assert on_device_ids == ids and on_device.shape == images.shape == (40, 3, 24, 24)
    assert torch.equal(on_device, images)  # bit for bit here (one CPU); on a GPU, resizes round slightly apart
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    epoch(True, 0)  # transforms in the training process leave its RNG where it was
    assert torch.equal(torch.rand(1), before)


def test_data_decode_choice():
    assert decode_on("auto", "imagenet", "cpu") == "cpu" and decode_on("auto", "cifar", "cuda") == "cpu"
    assert decode_on("auto", "imagenet", "cuda") == "gpu" and decode_on("cpu", "imagenet", "cuda") == "cpu"
    assert decode_on("gpu", "cifar", "cuda") == "gpu"
    with pytest.raises(DataError, match=r"^data\.decode: gpu decodes with nvjpeg .* no CUDA device"):
        decode_on("gpu", "imagenet", "cpu")


def test_device_decode_skips_a_broken_jpeg_naming_its_file(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(3):
            (tmp_path / split / "a" / f"{i}.jpg").write_bytes(_encoded("RGB"))
    (tmp_path / "train" / "a" / "1.jpg").write_bytes(_encoded("RGB")[:400])  # a JPEG header, then nothing
    reader = open_reader(str(tmp_path))
    refs, labels = reader.listing().splits["train"]
    transform = train_transform("imagenet", SMALL, (0.5,) * 3, (0.25,) * 3)
    batches = StreamingBatches(ImageFiles(reader, refs, labels, None, seed=0), 3, shuffle=False, seed=0, workers=0,
                               device_transform=transform)
    (images, _), = list(batches)
    assert len(images) == 2 and batches.skipped == 1
    assert "skipped: data.dataset: train/a/1.jpg cannot be decoded" in capsys.readouterr().err


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_channels_last_crop_gives_v2s_pixels_in_hwc_memory_and_batches_stack_as_torch_stack(imagenet_tree, interpolation):
    """transforms.RandomResizedCrop copies the crop to H×W×C memory before the resize (the fast uint8 path):
    the same pixels as v2.RandomResizedCrop's on the sample's real images, with its flip the same as v2's crop
    then flip, and batches equal torch.stack's."""
    from torchvision.transforms import v2

    from adaptnet.data.streaming import seeded
    from adaptnet.data.transforms import RandomResizedCrop, normalize_batch, stack_images

    mode = v2.InterpolationMode(interpolation)
    ours, theirs = RandomResizedCrop(224, interpolation=mode), v2.RandomResizedCrop(224, interpolation=mode)
    flipping = RandomResizedCrop(224, interpolation=mode, flip_p=0.5)
    crop_then_flip = v2.Compose([v2.RandomResizedCrop(224, interpolation=mode), v2.RandomHorizontalFlip(0.5)])
    files = sorted((imagenet_tree / "train").rglob("*.JPEG"))[:40]
    crops, flipped = [], 0
    for k, path in enumerate(files):
        image = decode_tensor(path.read_bytes(), path.name)
        crop = seeded(ours, image, k, own_process=True)
        assert torch.equal(crop, seeded(theirs, image, k, own_process=True)), path.name
        assert crop.permute(1, 2, 0).is_contiguous()  # H×W×C memory
        crops.append(crop)
        both = seeded(flipping, image, k, own_process=True)
        assert torch.equal(both, seeded(crop_then_flip, image, k, own_process=True)), path.name
        assert both.permute(1, 2, 0).is_contiguous()
        flipped += not torch.equal(both, crop)
        for on_another_path in (image.float(), image.unsqueeze(0)):  # v2's own kernels, then the flip
            assert torch.equal(seeded(flipping, on_another_path, k, own_process=True),
                               seeded(crop_then_flip, on_another_path, k, own_process=True)), path.name
    assert 10 < flipped < 30  # about half the crops were flipped
    batch = stack_images(crops)
    assert torch.equal(batch, torch.stack(crops)) and batch.is_contiguous(memory_format=torch.channels_last)
    normalised = normalize_batch(batch, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    assert normalised.is_contiguous()  # what the model gets, as before
    assert torch.equal(normalised, normalize_batch(torch.stack(crops), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)))
