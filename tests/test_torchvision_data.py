"""torchvision data sets: one-line errors, CIFAR-10 class selection, Oxford pets on a fake folder (no network)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.train.errors import ConfigError
from convscope.train.torchvision_data import (
    CIFAR10_CLASSES,
    KNOWN,
    load_named_dataset,
    parse_classes,
    resize_uint8,
    select_classes,
)
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
EXPECTED_FOLDER = {"cifar10": "cifar-10-batches-py", "oxford-pets": "oxford-iiit-pet"}


def _error(name: str, root: Path, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_named_dataset(name, root, 32, progress=False, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KNOWN)
def test_missing_files_without_download_name_the_flag_and_folder(tmp_path: Path, name: str) -> None:
    message = _error(name, tmp_path / "nowhere")
    assert f"--data {name}" in message and "--download" in message
    assert str(tmp_path / "nowhere" / EXPECTED_FOLDER[name]) in message


def test_corrupt_cifar_files_say_so(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    message = _error("cifar10", tmp_path)
    assert "corrupted" in message and "--download" in message and str(tmp_path / "cifar-10-batches-py") in message


@pytest.mark.parametrize(("name", "module"), [("cifar10", "cifar"), ("oxford-pets", "oxford_iiit_pet")])
def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, module: str) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", offline)
    message = _error(name, tmp_path, download=True)
    assert "download failed" in message and "name resolution" in message
    assert str(tmp_path / EXPECTED_FOLDER[name]) in message


def test_unknown_name_lists_known(tmp_path: Path) -> None:
    message = _error("mnist", tmp_path)
    assert "--data mnist" in message and all(name in message for name in KNOWN)


@pytest.mark.parametrize("classes", ["cat,wolf", "cat", "cat,cat", ""])
def test_bad_classes_name_the_flag_and_valid_names(classes: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_classes(classes, CIFAR_NAMES, default=("cat", "dog"))
    message = str(info.value)
    assert message.startswith("--classes") and "truck" in message and "\n" not in message


def test_bad_classes_fail_before_looking_for_files(tmp_path: Path) -> None:
    assert "--classes" in _error("cifar10", tmp_path / "nowhere", classes="cat,wolf")
    _make_fake_pets(tmp_path)
    assert "--classes" in _error("oxford-pets", tmp_path, classes="cat,horse")


# --- CIFAR-10 class selection on a synthetic array ----------------------------------------------


def _fake_cifar(n: int = 40) -> tuple[np.ndarray, list[int]]:
    """Image i is filled with its CIFAR class index, so kept images can be traced."""
    targets = [i % 10 for i in range(n)]
    data = np.stack([np.full((32, 32, 3), t, dtype=np.uint8) for t in targets])
    return data, targets


def test_default_keeps_cat_and_dog_relabelled() -> None:
    data, targets = _fake_cifar()
    images, labels, names, kept = select_classes(data, targets, CIFAR_NAMES, "default", 16)
    assert names == ("cat", "dog")
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 16, 16)
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [4, 4]
    assert (images[labels == 0] == 3).all() and (images[labels == 1] == 5).all()
    assert sorted(targets[i] for i in kept.tolist()) == [3] * 4 + [5] * 4


def test_all_keeps_ten_classes_in_cifar_order() -> None:
    data, targets = _fake_cifar()
    images, labels, names, _ = select_classes(data, targets, CIFAR_NAMES, "all", 32)
    assert CIFAR10_CLASSES == CIFAR_NAMES  # the names validated before CIFAR's own meta file is read
    assert names == CIFAR_NAMES and labels.tolist() == targets
    assert torch.equal(images, torch.from_numpy(data).permute(0, 3, 1, 2))


def test_comma_list_sets_label_order() -> None:
    data, targets = _fake_cifar()
    images, labels, names, _ = select_classes(data, targets, CIFAR_NAMES, "cat, dog,HORSE", 8)
    assert names == ("cat", "dog", "horse")
    assert torch.bincount(labels).tolist() == [4, 4, 4]
    for label, cifar_index in enumerate((3, 5, 7)):
        assert (images[labels == label] == cifar_index).all()


def test_resize_uint8_shrinks_and_grows() -> None:
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).expand(5, 3, 32, 32)
    small, large = resize_uint8(ramp, 16, chunk=2), resize_uint8(ramp, 64)
    assert small.shape == (5, 3, 16, 16) and large.shape == (5, 3, 64, 64)
    assert small.dtype == large.dtype == torch.uint8
    assert small[0, 0, 0, 0] < small[0, 0, 0, -1] and large[0, 0, 0, 0] < large[0, 0, 0, -1]


# --- Oxford-IIIT pets on a fake folder in torchvision's layout ----------------------------------

# image id, class id (1..37), species (1 cat, 2 dog), breed id — as in annotations/{trainval,test}.txt
TRAINVAL = [("Abyssinian_1", 1, 1, 1), ("Abyssinian_2", 1, 1, 1), ("Bengal_1", 6, 1, 2), ("beagle_1", 3, 2, 2),
            ("beagle_2", 3, 2, 2), ("pug_1", 28, 2, 17)]  # fmt: skip
TEST = [("Abyssinian_3", 1, 1, 1), ("Bengal_2", 6, 1, 2), ("Bengal_3", 6, 1, 2), ("beagle_3", 3, 2, 2),
        ("pug_2", 28, 2, 17), ("pug_broken", 28, 2, 17)]  # fmt: skip


def _make_fake_pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for split, rows in (("trainval", TRAINVAL), ("test", TEST)):
        lines = [f"{image_id} {cls} {species} {breed}\n" for image_id, cls, species, breed in rows]
        (base / "annotations" / f"{split}.txt").write_text("".join(lines))
        for i, (image_id, _, species, _) in enumerate(rows):
            path = base / "images" / f"{image_id}.jpg"
            if image_id.endswith("broken"):
                path.write_bytes(b"")  # zero bytes: must be skipped, not crash
                continue
            colour = (200, 40 + 20 * i, 40) if species == 1 else (40, 40 + 20 * i, 200)
            Image.new("RGB", (50 + 7 * i, 40), colour).save(path, quality=95)
    return base


def test_oxford_pets_end_to_end(tmp_path: Path) -> None:
    _make_fake_pets(tmp_path)
    data = load_named_dataset("oxford-pets", tmp_path, 32, progress=False)
    assert data.class_names == ("cat", "dog")
    assert data.train_images.dtype == data.val_images.dtype == torch.uint8
    assert data.train_images.shape == (6, 3, 32, 32) and data.val_images.shape == (5, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == [3, 3]
    assert torch.bincount(data.val_labels).tolist() == [3, 2]
    assert len(data.ids_train) == 6 and data.ids_train[0].endswith("Abyssinian_1.jpg")
    assert len(data.ids_val) == 5 and not any("broken" in i for i in data.ids_val)
    assert len(data.skipped) == 1 and data.skipped[0][0].endswith("pug_broken.jpg")
    assert data.skipped[0][1] == "empty file"
    # cats were drawn red, dogs blue
    red_minus_blue = data.train_images[:, 0].float().mean((1, 2)) - data.train_images[:, 2].float().mean((1, 2))
    assert ((red_minus_blue > 0) == (data.train_labels == 0)).all()
    assert "oxford-pets" in data.description and "\n" not in data.description


def test_oxford_pets_class_order_and_fingerprint(tmp_path: Path) -> None:
    base = _make_fake_pets(tmp_path)
    first = load_named_dataset("oxford-pets", tmp_path, 32, progress=False)
    swapped = load_named_dataset("oxford-pets", tmp_path, 32, classes="dog,cat", progress=False)
    assert swapped.class_names == ("dog", "cat")
    assert torch.equal(swapped.train_labels, 1 - first.train_labels)
    assert load_named_dataset("oxford-pets", tmp_path, 32, progress=False).fingerprint == first.fingerprint
    assert load_named_dataset("oxford-pets", tmp_path, 24, progress=False).fingerprint != first.fingerprint
    touched = base / "images" / "pug_1.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert load_named_dataset("oxford-pets", tmp_path, 32, progress=False).fingerprint != first.fingerprint
