"""Files that are odd, vanish or change at every stage: listing, validation, decoding, streaming.

Each is skipped and reported (``Splits.skipped`` / ``Splits.vanished`` → ``skipped_files.csv``),
never trained on as a stand-in image, and labels stay aligned with images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope.train.data

from convscope import train
from convscope.train.batches import LabelTap, Normalizer, StreamingBatches
from convscope.train.cache import cache_key
from convscope.train.config_sections import DataConfig
from convscope.train.data import load_data
from convscope.train.image_sets import CHANGED, Splits, VanishedFilesError, printable_path
from convscope.train.folders import BAD_NAME, BROKEN_LINK, LINK_LOOP, NOT_A_FILE, find_layout
from convscope.train.images import VANISHED, decode_file

S = 16
IDENTITY = Normalizer(torch.zeros(3), torch.ones(3))  # inputs = pixels / 255: colours stay checkable


def write_flat(folder: Path, count: int, base: int) -> None:
    """``count`` one-colour PNGs; file i is grey level ``base + 10 * i`` (never black)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (S, S), (base + 10 * i,) * 3).save(folder / f"{i}.png")


@pytest.fixture()
def pets(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    write_flat(root / "Cat", 6, 40)
    write_flat(root / "Dog", 6, 120)
    return root


def load(root: Path, tmp: Path, **data: object) -> Splits:
    config = DataConfig(data=str(root), **data)  # type: ignore[arg-type]
    return load_data(config, S, seed=0, cache_dir=tmp / "cache", dataset_dir=tmp / "datasets", progress=False)


def stream(root: Path, tmp: Path) -> Splits:
    splits = load(root, tmp, memory_fraction=1e-12)
    assert not splits.train.in_memory
    return splits


def csv_rows(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "reason"]
    return dict(rows[1:])


def all_ids(splits: Splits) -> list[str]:
    return list(splits.train.ids) + list(splits.val.ids)


# ---------------------------------------------------------------- odd names and links


def test_non_utf8_name_is_skipped_and_listed_printably(pets: Path, tmp_path: Path) -> None:
    bad = os.path.join(os.fsencode(pets / "Cat"), b"bad\xff.png")
    Image.new("RGB", (S, S), (90, 90, 90)).save(open(bad, "wb"), "PNG")  # noqa: SIM115 (closed by Pillow)
    splits = load(pets, tmp_path)
    name = os.fsdecode(bad)
    assert dict(splits.skipped) == {name: BAD_NAME}
    assert len(all_ids(splits)) == 12 and splits.total_files == 13
    rows = csv_rows(splits.write_skipped_csv(tmp_path / "skipped.csv"))
    assert rows == {f"{pets}/Cat/bad\\xff.png": BAD_NAME}


def test_cache_key_takes_any_name_and_missing_files(tmp_path: Path) -> None:
    bad = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"x\xfe.png")))
    bad.write_bytes(b"data")
    gone = tmp_path / "gone.png"
    key = cache_key([bad, gone], [0, 1], [-1, -1], S, "1")
    assert len(key) == 24 and key != cache_key([bad], [0], [-1], S, "1")


def test_newline_in_a_name_is_loaded_and_reported_on_one_line(pets: Path, tmp_path: Path) -> None:
    odd = pets / "Dog" / "two\nlines.png"
    Image.new("RGB", (S, S), (250, 250, 250)).save(odd)
    (pets / "Dog" / "empty\nfile.png").write_bytes(b"")
    splits = load(pets, tmp_path)
    assert str(odd) in all_ids(splits)
    assert printable_path(pets / "Dog" / "empty\nfile.png") == f"{pets}/Dog/empty\\nfile.png"
    text = splits.write_skipped_csv(tmp_path / "skipped.csv").read_text(encoding="utf-8")
    assert text.splitlines()[1:] == [f"{pets}/Dog/empty\\nfile.png,empty file"]


def test_broken_link_and_link_loop_are_listed_with_reasons(pets: Path, tmp_path: Path) -> None:
    (pets / "Cat" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (pets / "Dog" / "a.png").symlink_to(pets / "Dog" / "b.png")
    (pets / "Dog" / "b.png").symlink_to(pets / "Dog" / "a.png")
    (pets / "Dog" / "good.png").symlink_to(pets / "Dog" / "0.png")  # a link to a file is a file
    os.mkfifo(pets / "Cat" / "pipe.png")  # would block a reader forever
    splits = load(pets, tmp_path)
    assert dict(splits.skipped) == {
        str(pets / "Cat" / "broken.png"): BROKEN_LINK,
        str(pets / "Dog" / "a.png"): LINK_LOOP,
        str(pets / "Dog" / "b.png"): LINK_LOOP,
        str(pets / "Cat" / "pipe.png"): NOT_A_FILE,
    }
    assert str(pets / "Dog" / "good.png") in all_ids(splits)
    assert splits.total_files == 17
    assert "2 symlink loop" in (splits.skipped_summary() or "")
    assert set(csv_rows(splits.write_skipped_csv(tmp_path / "s.csv")).values()) == {BROKEN_LINK, LINK_LOOP, NOT_A_FILE}


# ---------------------------------------------------------------- vanishing before training


def test_file_deleted_between_listing_and_validation(
    pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = pets / "Cat" / "2.png"
    listed = train.data.find_layout

    def list_then_delete(root: Path, flag: str = "--data"):  # type: ignore[no-untyped-def]
        layout = listed(root, flag)
        victim.unlink()
        return layout

    monkeypatch.setattr(train.data, "find_layout", list_then_delete)
    splits = load(pets, tmp_path)
    assert dict(splits.skipped) == {str(victim): VANISHED}
    assert str(victim) not in all_ids(splits) and len(all_ids(splits)) == 11


def test_file_deleted_between_stat_and_decode(pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = pets / "Dog" / "4.png"
    decode_many = train.data.decode_many

    def delete_then_decode(paths, image_size, **kwargs):  # type: ignore[no-untyped-def]
        victim.unlink()
        return decode_many(paths, image_size, **kwargs)

    monkeypatch.setattr(train.data, "decode_many", delete_then_decode)
    splits = load(pets, tmp_path)
    assert dict(splits.skipped) == {str(victim): VANISHED}


def test_folder_vanishing_while_listed_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pets"
    write_flat(root / "Cat", 2, 40)
    write_flat(root / "Cat" / "more", 2, 60)
    write_flat(root / "Dog", 2, 120)
    scandir = os.scandir

    def racing(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "more":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", racing)
    layout = find_layout(root)
    assert layout.skipped == ((str(root / "Cat" / "more"), VANISHED),)
    assert len(layout.all_files) == 4


def test_decode_file_reports_a_vanished_file(tmp_path: Path) -> None:
    result = decode_file(tmp_path / "never.png", S)
    assert result.array is None and result.reason == VANISHED


# ---------------------------------------------------------------- after validation


def test_in_memory_file_deleted_after_validation_keeps_its_pixels(pets: Path, tmp_path: Path) -> None:
    splits = load(pets, tmp_path)
    assert splits.train.in_memory
    for path in all_ids(splits):
        os.remove(path)
    images, kept = splits.train.take_available(torch.arange(len(splits.train)))
    assert len(kept) == len(splits.train) == len(images)
    assert images.float().mean(dim=(1, 2, 3)).min() > 30  # the validated pixels, no black stand-ins
    assert len(splits.vanished) == 0


def _streamed(batches: StreamingBatches) -> tuple[list[int], list[int], list[float]]:
    """Set indices, labels and mean grey levels (0..255) of every image the batches yielded."""
    indices: list[int] = []
    labels: list[int] = []
    greys: list[float] = []
    for x, y in batches:
        assert len(x) == len(y) == len(batches.last_indices)
        indices += batches.last_indices.tolist()
        labels += y.tolist()
        greys += (x.float().mean(dim=(1, 2, 3)) * 255).tolist()
    return indices, labels, greys


def test_streaming_drops_a_deleted_and_a_garbled_file_with_their_labels(
    pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    splits = stream(pets, tmp_path)
    csv_path = splits.write_skipped_csv(tmp_path / "skipped.csv")
    train_set = splits.train
    deleted, garbled = 0, 3
    os.remove(train_set.ids[deleted])
    Path(train_set.ids[garbled]).write_bytes(b"garbage" * 50)
    batches = StreamingBatches(train_set, IDENTITY, 4, torch.device("cpu"), workers=0)
    indices, labels, greys = _streamed(batches)
    assert sorted(indices) == [i for i in range(len(train_set)) if i not in (deleted, garbled)]
    assert labels == [int(train_set.labels[i]) for i in indices]  # aligned with the images
    assert min(greys) > 30  # nothing black was trained on
    for index, grey in zip(indices, greys, strict=True):  # and each image is its own file's
        name = Path(train_set.ids[index])
        assert abs(grey - ((40 if name.parent.name == "Cat" else 120) + 10 * int(name.stem))) < 2
    assert batches.lost_this_pass == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "2 of " in err and "dropped with their labels" in err
    assert csv_rows(csv_path) == {train_set.ids[deleted]: VANISHED, train_set.ids[garbled]: CHANGED}
    _streamed(batches)  # a second pass reports again but lists each file once
    assert len(splits.vanished) == 2 and len(csv_rows(csv_path)) == 2


def test_streaming_with_dataloader_workers_drops_lost_files(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    os.remove(splits.train.ids[1])
    batches = StreamingBatches(splits.train, IDENTITY, 8, torch.device("cpu"), workers=1, shuffle=True)
    indices, labels, greys = _streamed(batches)
    assert 1 not in indices and sorted(indices) == sorted(set(indices))
    assert labels == [int(splits.train.labels[i]) for i in indices] and min(greys) > 30
    assert dict(splits.vanished.rows) == {splits.train.ids[1]: VANISHED}


def test_label_tap_pairs_predictions_with_the_images_that_were_there(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    os.remove(splits.val.ids[0])
    tap = LabelTap(StreamingBatches(splits.val, IDENTITY, 256, torch.device("cpu"), workers=0))
    seen = sum(len(x) for x, _ in tap)
    assert len(tap.labels()) == seen == len(splits.val) - 1
    assert tap.labels().tolist() == splits.val.labels[1:].tolist()


def test_take_available_and_strict_take(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    val = splits.val
    os.remove(val.ids[1])
    images, kept = val.take_available(torch.arange(len(val)))
    assert kept.tolist() == [i for i in range(len(val)) if i != 1] and len(images) == len(kept)
    assert images.float().mean(dim=(1, 2, 3)).min() > 30
    with pytest.raises(VanishedFilesError, match="vanished or changed since it was validated"):
        val.take(torch.arange(len(val)))
    assert dict(splits.vanished.rows) == {val.ids[1]: VANISHED}


def test_more_than_half_of_a_batch_lost_fails_in_one_line(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    train_set = splits.train
    for path in train_set.ids[:3]:
        os.remove(path)
    batches = StreamingBatches(train_set, IDENTITY, 4, torch.device("cpu"), workers=0)
    with pytest.raises(VanishedFilesError) as raised:
        _streamed(batches)
    assert "\n" not in str(raised.value) and "3 of the 4 images of a batch" in str(raised.value)


def test_more_than_half_of_the_data_set_lost_fails(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    for path in all_ids(splits)[::2] + all_ids(splits)[1:4:2]:  # spread thin: no batch loses over half
        os.remove(path)
    with pytest.raises(VanishedFilesError, match="of 12 validated files vanished or changed"):
        for image_set in (splits.train, splits.val):
            _streamed(StreamingBatches(image_set, IDENTITY, 2, torch.device("cpu"), workers=0))


def test_replaced_by_another_image_counts_as_changed(pets: Path, tmp_path: Path) -> None:
    splits = stream(pets, tmp_path)
    target = Path(splits.train.ids[0])
    Image.fromarray(np.zeros((S, S, 3), np.uint8)).save(target, "PNG")
    stamp = target.stat()
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    indices, _, greys = _streamed(StreamingBatches(splits.train, IDENTITY, 16, torch.device("cpu"), workers=0))
    assert 0 not in indices and min(greys) > 30
    assert dict(splits.vanished.rows) == {str(target): CHANGED}
