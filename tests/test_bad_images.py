"""The validating decoder (``train.images``): one test per bad-input case, each with its own file."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from convscope.train import images
from convscope.train.images import (
    BACKGROUND,
    EMPTY,
    NOT_AN_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    Decoded,
    decode_file,
    decode_many,
)

S = 32  # decoded size in most tests
RED = (255, 0, 0)


def _kept(result: Decoded, size: int = S) -> np.ndarray:
    """Assert ``result`` is kept, uint8 3×size×size; return it as H×W×3 int for easy comparison."""
    assert result.reason is None, (result.reason, result.detail)
    assert result.kept
    assert result.array is not None
    assert result.array.dtype == np.uint8
    assert result.array.shape == (3, size, size)
    assert result.array.flags.c_contiguous
    return result.array.transpose(1, 2, 0).astype(int)


def _skipped(result: Decoded, reason: str) -> None:
    assert result.array is None
    assert not result.kept
    assert result.reason == reason, (result.reason, result.detail)


def _halves(left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB", size: int = S) -> Image.Image:
    image = Image.new(mode, (size, size), left)
    image.paste(right, (size // 2, 0, size, size))
    return image


def _noisy_jpeg(path: Path, size: tuple[int, int] = (256, 256)) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


# ---------------------------------------------------------------- skipped


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "cat.0.jpg"
    path.touch()
    _skipped(decode_file(path, S), EMPTY)


def test_jpeg_cut_in_half_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    _noisy_jpeg(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = decode_file(path, S)
    _skipped(result, UNREADABLE)
    assert "truncated" in result.detail
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_thumbs_db_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "Thumbs.db"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _skipped(decode_file(path, S), NOT_AN_IMAGE)


@pytest.mark.parametrize("name", [".DS_Store", "desktop.ini", "._cat.1.jpg"])
def test_other_system_files_are_not_images(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    _skipped(decode_file(path, S), NOT_AN_IMAGE)


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture of a cat\n" * 20)
    _skipped(decode_file(path, S), NOT_AN_IMAGE)


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A real 8×8 PNG whose IHDR claims ``width``×``height`` (CRC fixed): a bomb made cheaply."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"  # 8-byte signature, 4-byte length, then the chunk type
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "width,height",
    [(30000, 30000), (10000, 10000)],  # over twice the limit (Pillow raises) / just over it (Pillow warns)
)
def test_decompression_bomb_png_is_too_large_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None and width * height > limit
    path = tmp_path / "bomb.png"
    _bomb_png(path, width, height)
    loads: list[str] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append("load"))
    allocated_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = decode_file(path, S)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    _skipped(result, TOO_LARGE)
    assert [str(w.message) for w in caught] == []  # the bomb warning became the skip, not a warning
    assert peak < 5_000_000 < width * height  # Python-side allocations stay tiny
    assert loads == []  # never decoded
    assert Image.core.get_stats()["new_count"] == allocated_before  # no Pillow image allocated
    assert Image.MAX_IMAGE_PIXELS == limit  # global setting untouched


# ---------------------------------------------------------------- kept and converted


def test_cmyk_jpeg_converts_to_the_right_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    # left: pure magenta+yellow = red; right: C0 M128 Y255 K64 -> (191, 95, 0)
    _halves((0, 255, 255, 0), (0, 128, 255, 64), mode="CMYK", size=64).save(path, "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK" and "adobe" in check.info  # Adobe (inverted) CMYK, as Photoshop writes
    pixels = _kept(decode_file(path, S))
    assert "CMYK" in decode_file(path, S).detail
    left = pixels[4:-4, 2:12].reshape(-1, 3).mean(axis=0)
    right = pixels[4:-4, 20:30].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(left, RED, atol=8)
    np.testing.assert_allclose(right, (191, 95, 0), atol=8)


def test_16_bit_grayscale_png_spans_the_8_bit_range(tmp_path: Path) -> None:
    path = tmp_path / "depth16.png"
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (64, 1))).save(path)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I;16B", "I")
    pixels = _kept(decode_file(path, 64), size=64)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    row = pixels[32, :, 0]
    assert row[0] <= 3 and row[-1] >= 252  # 0 -> 0, 65535 -> 255
    assert (np.diff(row) >= 0).all()  # a ramp, not clipped to white
    assert 110 <= row[32] <= 145  # the middle is mid-grey
    assert (pixels < 255).mean() > 0.9


def test_palette_png_with_transparency_goes_on_white(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (S, S), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # 0: black (transparent), 1: blue
    image.paste(1, (S // 2, 0, S, S))
    image.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2] == BACKGROUND).all()  # transparent -> background, not black
    assert (pixels[:, S // 2 :] == (0, 0, 255)).all()  # the opaque palette colour kept


def test_rgba_png_half_transparent_goes_on_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    _halves((0, 0, 0, 0), (0, 128, 0, 255), mode="RGBA").save(path)
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2] == BACKGROUND).all()
    assert (pixels[:, S // 2 :] == (0, 128, 0)).all()


def test_la_png_alpha_goes_on_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    _halves((30, 0), (30, 255), mode="LA").save(path)
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2] == BACKGROUND).all()
    assert (pixels[:, S // 2 :] == 30).all()


def test_grayscale_jpeg_gives_three_equal_channels(tmp_path: Path) -> None:
    path = tmp_path / "grey.jpg"
    _halves((40,), (200,), mode="L", size=64).save(path, "JPEG", quality=95)
    pixels = _kept(decode_file(path, S))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert abs(pixels[4:-4, 2:12, 0].mean() - 40) < 4
    assert abs(pixels[4:-4, 20:30, 0].mean() - 200) < 4


def test_png_data_named_jpg_decodes_by_content(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    _halves(RED, (0, 0, 255)).save(path, "PNG")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2] == RED).all() and (pixels[:, S // 2 :] == (0, 0, 255)).all()


def test_webp_data_named_jpg_decodes_by_content(tmp_path: Path) -> None:
    path = tmp_path / "really_a_webp.jpg"
    _halves(RED, (0, 0, 255)).save(path, "WEBP", lossless=True)
    assert path.read_bytes()[8:12] == b"WEBP"
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2] == RED).all() and (pixels[:, S // 2 :] == (0, 0, 255)).all()


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    """Stored 64 wide × 32 high with a red block top-left; orientation 6 = rotate 90° clockwise to
    display, so the displayed image is 32 wide × 64 high with the block top-right."""
    path = tmp_path / "rotated.jpg"
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", quality=95, exif=exif)
    result = decode_file(path, 64)
    pixels = _kept(result, size=64)
    assert "orientation 6" in result.detail
    # displayed 32×64 squashed to 64×64: the block covers x 32..64, y 0..16
    red, blue = np.array(RED), np.array((0, 0, 255))
    assert np.abs(pixels[2:14, 36:60] - red).max() < 40  # top-right: the marker
    assert np.abs(pixels[2:14, 4:28] - blue).max() < 40  # top-left: not the marker (unrotated it would be)
    assert np.abs(pixels[40:60, 36:60] - blue).max() < 40  # bottom-right: nothing


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.jpg"
    _halves(RED, (0, 0, 255), size=1024).save(path, "JPEG", quality=95)
    decoded_sizes: list[tuple[int, int]] = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy_load(self: JpegImagePlugin.JpegImageFile):  # type: ignore[no-untyped-def]
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy_load)
    pixels = _kept(decode_file(path, S))
    assert decoded_sizes and decoded_sizes[0] == (128, 128)  # DCT scale 1/8: 1024 -> 128, still >= 32
    np.testing.assert_allclose(pixels[4:-4, 2:12].reshape(-1, 3).mean(axis=0), RED, atol=6)
    np.testing.assert_allclose(pixels[4:-4, 20:30].reshape(-1, 3).mean(axis=0), (0, 0, 255), atol=6)


def test_non_square_image_is_squashed_to_a_square(tmp_path: Path) -> None:
    """Documented behaviour: a plain square resize, the aspect ratio is not kept (no crop, no pad)."""
    path = tmp_path / "wide.png"
    wide = Image.new("RGB", (128, 32), (0, 0, 255))
    wide.paste(RED, (0, 0, 64, 32))  # left half red
    wide.save(path)
    pixels = _kept(decode_file(path, S))
    assert (pixels[:, : S // 2 - 1] == RED).all() and (pixels[:, S // 2 + 1 :] == (0, 0, 255)).all()


def test_decoding_changes_no_global_pillow_setting(tmp_path: Path) -> None:
    path = tmp_path / "ok.jpg"
    _noisy_jpeg(path, (64, 64))
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    _kept(decode_file(path, S))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) == before


# ---------------------------------------------------------------- many files


def _mixed_folder(root: Path, count: int) -> tuple[list[Path], list[tuple[int, int, int] | str]]:
    """``count`` files: solid PNG/JPEG colours interleaved with bad files; the expected outcome of each."""
    paths: list[Path] = []
    expected: list[tuple[int, int, int] | str] = []
    for i in range(count):
        if i % 10 == 3:
            path = root / f"{i:03d}.jpg"
            path.touch()
            expected.append(EMPTY)
        elif i % 10 == 7:
            path = root / f"{i:03d}.jpg"
            path.write_text("not an image")
            expected.append(NOT_AN_IMAGE)
        else:
            colour = (i * 3 % 256, 255 - i * 3 % 256, 128)
            path = root / f"{i:03d}.png"
            Image.new("RGB", (16, 16), colour).save(path)
            expected.append(colour)
        paths.append(path)
    return paths, expected


def _check_many(results: list[Decoded], expected: list[tuple[int, int, int] | str]) -> None:
    assert len(results) == len(expected)
    for result, want in zip(results, expected, strict=True):
        if isinstance(want, str):
            _skipped(result, want)
        else:
            assert (_kept(result, size=8) == want).all()


def test_decode_many_keeps_input_order_in_the_process_pool(tmp_path: Path) -> None:
    paths, expected = _mixed_folder(tmp_path, 80)
    assert len(paths) >= images.POOL_MIN_FILES
    _check_many(decode_many(paths, 8, workers=2, progress=False), expected)


def test_decode_many_in_process_with_one_worker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths, expected = _mixed_folder(tmp_path, 70)
    _check_many(decode_many(paths, 8, workers=1, progress=False), expected)
    assert "decoding" not in capsys.readouterr().err  # progress=False is silent


def test_decode_many_shows_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths, expected = _mixed_folder(tmp_path, 5)
    _check_many(decode_many(paths, 8), expected)
    assert "decoding" in capsys.readouterr().err


def test_file_that_vanished_is_skipped_as_vanished(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    _noisy_jpeg(path)
    path.unlink()
    result = decode_file(path, S)
    _skipped(result, images.VANISHED)
    assert "No such file" in result.detail
