"""Synthetic data, image folders, the split and device batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.train.batches import DeviceBatches, Normalizer
from convscope.train.config_sections import DataConfig
from convscope.train.data import load_data
from convscope.train.splits import stratified_split
from convscope.train.errors import ConfigError
from convscope.train.synthetic import make_synthetic


def test_synthetic_is_seeded_balanced_uint8() -> None:
    a, la = make_synthetic(300, 32, seed=3)
    b, lb = make_synthetic(300, 32, seed=3)
    c, _ = make_synthetic(300, 32, seed=4)
    assert a.dtype == torch.uint8 and a.shape == (300, 3, 32, 32)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert la.sum().item() == 150


def test_linear_model_on_raw_pixels_stays_near_chance() -> None:
    """The synthetic task needs spatial features: logistic regression on pixels < 65%."""
    from sklearn.linear_model import LogisticRegression

    images, labels = make_synthetic(3000, 64, seed=0)
    x = images.reshape(len(images), -1).float().numpy() / 255
    y = labels.numpy()
    model = LogisticRegression(max_iter=200, C=0.1).fit(x[:2400], y[:2400])
    accuracy = model.score(x[2400:], y[2400:])
    assert accuracy < 0.65, accuracy


def test_stratified_split_is_stratified_and_reproducible() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train1, val1 = stratified_split(labels, 0.2, seed=7)
    train2, val2 = stratified_split(labels, 0.2, seed=7)
    _, val3 = stratified_split(labels, 0.2, seed=8)
    assert torch.equal(val1, val2) and torch.equal(train1, train2)
    assert not torch.equal(val1, val3)
    assert torch.bincount(labels[val1]).tolist() == [10, 6, 4]
    assert set(train1.tolist()).isdisjoint(val1.tolist()) and len(train1) + len(val1) == 100


def dirs(tmp: Path) -> dict[str, Path]:
    return {"cache_dir": tmp / ".cache", "dataset_dir": tmp / ".datasets", "progress": False}  # type: ignore[dict-item]


def make_folder(root: Path, counts: dict[str, int], size: int = 40) -> None:
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size + i % 3, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")


def test_image_folder_layout(tmp_path: Path) -> None:
    make_folder(tmp_path, {"Cat": 10, "Dog": 15})
    splits = load_data(DataConfig(data=str(tmp_path), val_fraction=0.2), image_size=32, seed=0, **dirs(tmp_path))
    assert splits.class_names == ("Cat", "Dog")
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert torch.bincount(splits.val.labels).tolist() == [2, 3]
    assert len(splits.train) == 20
    assert all(Path(i).is_file() for i in splits.val.ids)
    assert splits.fingerprint.startswith("files-")


def test_folder_needs_two_classes(tmp_path: Path) -> None:
    make_folder(tmp_path, {"Cat": 3})
    with pytest.raises(ConfigError, match="at least 2 classes"):
        load_data(DataConfig(data=str(tmp_path)), image_size=32, seed=0, **dirs(tmp_path))


def test_data_path_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "x.txt"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_data(DataConfig(data=str(file)), image_size=32, seed=0, **dirs(tmp_path))


def test_device_batches_cover_every_image_once_and_flip() -> None:
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).expand(10, 3, 2, 2).clone()
    images[:, :, :, 1] = 200  # right column bright: a flip moves it left
    labels = torch.arange(10)
    norm = Normalizer(torch.zeros(3), torch.ones(3))
    batches = DeviceBatches(images, labels, norm, 4, shuffle=True, flip=True, seed=0)
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(10))
    flipped = sum(int((x[:, 0, :, 0] > 0.7).all(dim=1).sum()) for x, _ in batches)
    assert 0 < flipped < 10
    x, _ = next(iter(batches))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32


def _numbered(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is their own number, labelled with it."""
    images = torch.arange(count, dtype=torch.uint8).reshape(count, 1, 1, 1).expand(count, 3, 4, 4).clone()
    return images, torch.arange(count)


@pytest.mark.parametrize("per_pass", [4, 12, 100])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_prepared_several_at_a_time_are_the_same_batches(per_pass: int, drop_last: bool) -> None:
    images, labels = _numbered(23)  # 5 batches of 4 and 3 over; shuffled, flipped and cropped
    norm = Normalizer(torch.zeros(3), torch.ones(3))
    batches = DeviceBatches(images, labels, norm, 4, shuffle=True, flip=True, crop_padding=1, seed=3,
                            drop_last=drop_last, per_pass=per_pass)
    got = list(batches)
    assert [len(y) for _, y in got] == [4] * 5 + ([] if drop_last else [3]) and len(got) == len(batches)
    for x, y in got:
        assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
        assert torch.allclose(x * 255, y.float().reshape(-1, 1, 1, 1).expand_as(x))  # each image stays with its label
    seen = torch.cat([y for _, y in got]).tolist()
    assert len(set(seen)) == len(seen) == (20 if drop_last else 23)
    assert [y.tolist() for _, y in DeviceBatches(images, labels, norm, 4, shuffle=True, seed=3, per_pass=per_pass,
                                                 drop_last=drop_last)] == [y.tolist() for _, y in got]  # one order


def test_a_single_image_left_over_is_not_a_batch_when_shuffling() -> None:
    images, labels = _numbered(9)
    norm = Normalizer(torch.zeros(3), torch.ones(3))
    for per_pass in (4, 8, 100):
        sizes = [len(y) for _, y in DeviceBatches(images, labels, norm, 4, shuffle=True, per_pass=per_pass)]
        assert sizes == [4, 4], (per_pass, sizes)  # BatchNorm cannot train on one image
        assert [len(y) for _, y in DeviceBatches(images, labels, norm, 4, per_pass=per_pass)] == [4, 4, 1]


def test_preparing_many_batches_at_once_leaves_few_torch_calls_per_batch() -> None:
    from torch.overrides import TorchFunctionMode

    class Calls(TorchFunctionMode):
        count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") != "__get__":  # attribute reads (.shape) do not call torch
                self.count += 1
            return func(*args, **(kwargs or {}))

    images, labels = _numbered(64)
    norm = Normalizer(torch.zeros(3), torch.ones(3))
    per_batch: dict[int, float] = {}
    for per_pass in (4, 64):
        batches = DeviceBatches(images, labels, norm, 4, shuffle=True, flip=True, crop_padding=1, per_pass=per_pass)
        with Calls() as calls:
            assert len(list(batches)) == 16
        per_batch[per_pass] = calls.count / 16
    assert per_batch[4] > 25 and per_batch[64] < 5, per_batch  # what each batch asks of the training thread


def test_cuda_prepares_whole_batches_up_to_the_byte_budget_and_a_cpu_one_batch() -> None:
    from convscope.train.batches import PREPARED_BYTES_ON_CUDA, prepared_per_pass

    assert prepared_per_pass(torch.device("cpu"), (3, 64, 64), 128) == 128
    per_pass = prepared_per_pass(torch.device("cuda"), (3, 64, 64), 512)
    assert per_pass % 512 == 0 and 512 < per_pass and per_pass * 3 * 64 * 64 * 4 <= PREPARED_BYTES_ON_CUDA
    assert prepared_per_pass(torch.device("cuda"), (3, 512, 512), 512) == 512  # a batch over the budget: one


def test_normalizer_standardises_training_images() -> None:
    images, _ = make_synthetic(200, 16, seed=0)
    x = Normalizer.fit(images)(images)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
