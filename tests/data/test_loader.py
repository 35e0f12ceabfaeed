import torch

from adaptnet.data import holdout_split
from adaptnet.data.loader import TensorBatches, random_crop_flip


def _images(n=20, size=8):
    return torch.arange(n * 3 * size * size, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, size, size)


def test_holdout_split_is_seeded_disjoint_and_complete():
    train, held = holdout_split(100, 10, seed=3)
    again, held_again = holdout_split(100, 10, seed=3)
    assert torch.equal(held, held_again) and torch.equal(train, again)
    assert len(held) == 10 and len(train) == 90
    assert sorted(torch.cat([train, held]).tolist()) == list(range(100))
    assert not torch.equal(holdout_split(100, 10, seed=4)[1], held)


def test_crop_flip_moves_pixels_without_changing_them():
    images = _images(64)
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Each output is a shifted (maybe mirrored) window of the zero-padded input.
    padded = torch.nn.functional.pad(images, (4,) * 4)
    for i in range(8):
        windows = padded[i].unfold(1, 8, 1).unfold(2, 8, 1).permute(1, 2, 0, 3, 4)
        match = (windows == out[i]).flatten(2).all(-1) | (windows == out[i].flip(-1)).flatten(2).all(-1)
        assert bool(match.any())
    assert not torch.equal(out, images)


def test_epochs_are_reproducible_and_differ_from_each_other():
    images, labels = _images(), torch.arange(20)
    loader = TensorBatches(images, labels, 6, (0.5,) * 3, (0.25,) * 3, augment=True, shuffle=True, seed=1)
    loader.set_epoch(3)
    first = [y.tolist() for _, y in loader]
    replay = TensorBatches(images, labels, 6, (0.5,) * 3, (0.25,) * 3, augment=True, shuffle=True, seed=1)
    replay.set_epoch(3)
    assert [y.tolist() for _, y in replay] == first
    loader.set_epoch(4)
    assert [y.tolist() for _, y in loader] != first
    assert sorted(sum(first, [])) == list(range(20))


def test_ranks_get_disjoint_equal_shards():
    labels = torch.arange(21)
    shards = []
    for rank in range(4):
        loader = TensorBatches(_images(21), labels, 4, (0.5,) * 3, (0.25,) * 3, shuffle=True, rank=rank, world_size=4)
        shards.append(torch.cat([y for _, y in loader]).tolist())
    assert {len(s) for s in shards} == {6}
    assert set(sum(shards, [])) == set(range(21))


def test_normalisation_matches_torchvision():
    from torchvision.transforms import v2

    images = _images(4)
    mean, std = (0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)
    x, _ = next(iter(TensorBatches(images, torch.zeros(4, dtype=torch.long), 4, mean, std)))
    expected = v2.Normalize(mean, std)(images.float() / 255)
    torch.testing.assert_close(x, expected)


def test_the_uint8_cache_moves_to_a_gpu_only_when_it_takes_a_small_share_of_it():
    from adaptnet.data.loader import DEVICE_CACHE_SHARE, resident

    cifar_train = torch.zeros(50_000, 3, 32, 32, dtype=torch.uint8)  # 154 MB
    assert resident(cifar_train, "cpu") is cifar_train  # CPU runs keep the (memory-mapped) cache as it is
    # an 80 GB GPU would take it (not tried here: no CUDA); a GPU of 1 GB keeps it in host memory (pinned batches)
    assert resident(cifar_train, "cuda", device_bytes=1 << 30) is cifar_train
    assert cifar_train.numel() <= DEVICE_CACHE_SHARE * 80e9
