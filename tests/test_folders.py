"""Image folders: layouts, the skipped-files report, the decode-once cache, streaming, augmentation."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope.train.cache

from convscope import train
import convscope.train.data
from convscope.train.batches import DeviceBatches, Normalizer, StreamingBatches, augment, make_batches
from convscope.train.config_sections import DataConfig
from convscope.train.data import load_data
from convscope.train.errors import ConfigError


def write_images(folder: Path, count: int, colour: tuple[int, int, int], size: int = 24) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour) + count)
    for i in range(count):
        pixels = np.clip(rng.normal(colour, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def load(root: Path, tmp: Path, **data: object):  # type: ignore[no-untyped-def]
    config = DataConfig(data=str(root), **data)  # type: ignore[arg-type]
    return load_data(config, 16, seed=0, cache_dir=tmp / "cache", dataset_dir=tmp / "datasets", progress=False)


@pytest.fixture()
def pets(tmp_path: Path) -> Path:
    root = tmp_path / "PetImages"
    write_images(root / "Cat", 10, (200, 60, 60))
    write_images(root / "Dog", 10, (60, 60, 200))
    (root / "Cat" / "Thumbs.db").write_bytes(os.urandom(64))
    (root / "Dog" / "666.jpg").write_bytes(b"")
    return root


def test_class_folder_layout_with_bad_files_reported(pets: Path, tmp_path: Path) -> None:
    splits = load(pets, tmp_path)
    assert splits.class_names == ("Cat", "Dog")
    assert len(splits.train) + len(splits.val) == 20
    assert splits.total_files == 22
    reasons = dict(splits.skipped)
    assert reasons == {str(pets / "Cat" / "Thumbs.db"): "not an image", str(pets / "Dog" / "666.jpg"): "empty file"}
    line = splits.skipped_summary(Path("runs/x/skipped_files.csv"))
    assert line == "skipped 2 of 22 files: 1 not an image, 1 empty file — see runs/x/skipped_files.csv"
    rows = list(csv.reader(splits.write_skipped_csv(tmp_path / "s.csv").open()))
    assert rows[0] == ["path", "reason"] and len(rows) == 3
    red = splits.train.images[splits.train.labels == 0].float().mean(dim=(0, 2, 3))
    assert red[0] > red[2] + 50  # Cat images are red: labels follow the folders


def test_pre_split_layout(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for part, count in (("train", 6), ("val", 3), ("test", 2)):
        write_images(root / part / "cat", count, (200, 60, 60))
        write_images(root / part / "dog", count, (60, 60, 200))
    splits = load(root, tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 4)
    assert splits.class_names == ("cat", "dog")
    assert all("/val/" in i for i in splits.val.ids)
    assert "pre-split" in splits.description


def test_cache_is_reused_without_decoding(pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(pets, tmp_path)
    assert first.decoded == 22

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(train.data, "decode_many", no_decoding)
    second = load(pets, tmp_path)
    assert second.decoded == 0 and "from the decode cache" in second.description
    assert torch.equal(first.train.images, second.train.images) and second.skipped == first.skipped


def test_changed_file_invalidates_the_cache(pets: Path, tmp_path: Path) -> None:
    load(pets, tmp_path)
    changed = pets / "Cat" / "3.jpg"
    Image.new("RGB", (24, 24), (0, 255, 0)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    again = load(pets, tmp_path)
    assert again.decoded == 22
    index = [Path(i) for i in again.train.ids + again.val.ids].index(changed)
    images = torch.cat([again.train.images, again.val.images])
    assert images[index, 1].float().mean() > 200  # the new green pixels, not the cached red ones


def test_cache_writes_leave_no_temporary_files(
    pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers sharing a cache volume write through unique temp names; a failed write leaves nothing
    behind and does not stop the run."""
    load(pets, tmp_path)
    written = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock")
    assert len(written) == 1 and written[0].endswith(".safetensors")  # beside it, its empty lock file

    def disk_full(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.cache, "save_file", disk_full)
    for entry in (tmp_path / "cache").rglob("*.safetensors"):
        entry.unlink()
    splits = load(pets, tmp_path)  # training goes on without the cache
    assert len(splits.train) + len(splits.val) == 20 and "not cached" in splits.description
    assert "could not write the decode cache" in capsys.readouterr().err
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_class_folder_without_a_readable_image(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    write_images(root / "Cat", 3, (200, 0, 0))
    (root / "Dog").mkdir()
    (root / "Dog" / "a.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="class folder 'Dog' holds no readable image"):
        load(root, tmp_path)


def test_all_files_invalid(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for name in ("Cat", "Dog"):
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_text("not an image")
    with pytest.raises(ConfigError, match="none of its 2 files is a readable image"):
        load(root, tmp_path)


def test_streaming_fallback_when_memory_is_short(pets: Path, tmp_path: Path) -> None:
    splits = load(pets, tmp_path, memory_fraction=1e-12)
    assert not splits.train.in_memory and "streaming from the files" in splits.description
    batches = make_batches(splits.train, Normalizer(torch.zeros(3), torch.ones(3)), 4, torch.device("cpu"), shuffle=True)
    assert isinstance(batches, StreamingBatches)
    seen = sum(len(y) for _, y in batches)
    assert seen == len(splits.train)
    assert splits.val.take(torch.tensor([0, 1])).shape == (2, 3, 16, 16)


def test_in_memory_data_gives_device_batches(pets: Path, tmp_path: Path) -> None:
    splits = load(pets, tmp_path)
    batches = make_batches(splits.train, Normalizer(torch.zeros(3), torch.ones(3)), 4, torch.device("cpu"))
    assert isinstance(batches, DeviceBatches)


def test_padded_random_crop_shifts_content_and_keeps_shape() -> None:
    x = torch.zeros(64, 3, 8, 8)
    x[:, :, 4, 4] = 1.0
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen, flip=False, crop_padding=2)
    assert out.shape == x.shape
    positions = {tuple(torch.nonzero(img[0] == 1.0)[0].tolist()) for img in out}
    assert len(positions) > 5 and all(2 <= r <= 6 and 2 <= c <= 6 for r, c in positions)
    same = augment(x, torch.Generator().manual_seed(0), flip=False, crop_padding=2)
    assert torch.equal(out, same)


def test_symlinked_folder_is_reported_not_followed(pets: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_images(elsewhere, 3, (60, 200, 60))
    (pets / "Cat" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (pets / "Cat" / ".hidden-link").symlink_to(elsewhere, target_is_directory=True)
    splits = load(pets, tmp_path)
    assert dict(splits.skipped)[str(pets / "Cat" / "linked")] == "linked folder not followed"
    assert len(splits.train) + len(splits.val) == 20 and splits.total_files == 23


def test_processes_that_miss_the_cache_together_decode_the_folder_once(pets: Path, tmp_path: Path) -> None:
    """A second process that needs the entry another process is decoding waits for it and loads it:
    while this test holds the entry's lock, the other process says it waits; the entry this test
    then stores (decoded elsewhere) is what it loads, without decoding a file."""
    import shutil
    import subprocess
    import sys

    from convscope.train.cache import decoding_lock

    elsewhere = load(pets, tmp_path / "elsewhere")  # the same entry, built under another cache folder
    (built,) = (tmp_path / "elsewhere" / "cache").glob("*.safetensors")
    entry = tmp_path / "cache" / built.name
    script = ("import sys; from pathlib import Path; from convscope.train.config_sections import DataConfig; "
              "from convscope.train.data import load_data; "
              f"s = load_data(DataConfig(data={str(pets)!r}), 16, seed=0, cache_dir=Path({str(tmp_path / 'cache')!r}), "
              f"dataset_dir=Path({str(tmp_path / 'datasets')!r}), progress=True); "
              "print('decoded', s.decoded, s.description.rsplit(' — ', 1)[-1])")
    with decoding_lock(entry):
        other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert other.stderr is not None
        line = other.stderr.readline()  # blocks until the other process is waiting on the lock
        assert "another process is decoding" in line and str(pets) in line
        shutil.copy(built, entry)
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert out.strip() == "decoded 0 from the decode cache"
    assert elsewhere.decoded == 22
