"""The validating decoder: the only place in convscope that opens image files.

Contract of :func:`decode_file` (and :func:`decode_many`, its parallel form):

- It never raises because of a bad file — nor because of one that vanishes, is replaced
  or cannot be read while it is decoded (``vanished``, ``unreadable``). Every file comes back as a :class:`Decoded`
  that is either *kept* (``array`` is RGB ``uint8`` of shape 3×S×S, ``reason`` is None)
  or *skipped* (``array`` is None, ``reason`` is one of :data:`SKIP_REASONS`, ``detail``
  says why, e.g. the exception text). Only programming errors raise.
- The format is identified by content, never by the file name's extension (PNG or WebP
  data behind a ``.jpg`` name decodes fine); a few well-known non-image names
  (``Thumbs.db``, ``.DS_Store``, ``desktop.ini``, ``._*``) are skipped without opening.
- Images over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are rejected
  from the header alone, without decoding or allocating their pixels.
- Kept images were decoded completely (a truncated JPEG is skipped as ``unreadable``),
  turned by their EXIF orientation, and converted to RGB: CMYK (Adobe-inverted ones as
  Pillow reads them), 1, L, P, 16-bit (``I;16*``, ``I``: 65535 → 255) and float (``F``)
  grey; alpha (RGBA, LA, PA, palette or tRNS transparency) is composited onto
  :data:`BACKGROUND`.
- The result is a plain square resize to S×S: the aspect ratio is *not* kept (no crop,
  no padding). JPEGs are decoded at a reduced DCT scale that is still ≥ S first.

Global Pillow settings (``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``, warning
filters) are read, never changed.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError
from tqdm import tqdm

EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable"  # truncated or corrupt image data
TOO_LARGE = "too large"  # over Pillow's decompression-bomb limit
VANISHED = "vanished"  # the file was there when it was listed, and is gone now
SKIP_REASONS = (EMPTY, NOT_AN_IMAGE, UNREADABLE, TOO_LARGE, VANISHED)

BACKGROUND = (255, 255, 255)  # what transparent pixels become
REDUCING_GAP = 3.0  # Pillow's resize(reducing_gap=...): fast integer reduce, then filter
POOL_MIN_FILES = 64  # fewer files than this are decoded in-process

NON_IMAGE_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow's plugins raise on corrupt or truncated data (OSError covers "image file
# is truncated", "broken data stream", and a file that vanished or cannot be read).
_BAD_DATA = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
             struct.error, zlib.error, MemoryError)


@dataclass(frozen=True)
class Decoded:
    """One file's outcome: ``array`` (uint8, 3×S×S, RGB) when kept, else ``reason``."""

    array: np.ndarray | None
    reason: str | None  # None when kept, else one of SKIP_REASONS
    detail: str = ""  # the exception text, or what conversion was applied to a kept image

    @property
    def kept(self) -> bool:
        return self.reason is None


def _skip(reason: str, detail: str) -> Decoded:
    return Decoded(None, reason, detail)


def is_known_non_image(path: str | Path) -> bool:
    """True for names that are never images (``Thumbs.db``, ``.DS_Store``, ``desktop.ini``, ``._*``)."""
    name = Path(path).name
    return name.lower() in NON_IMAGE_NAMES or name.startswith("._")


def decode_file(path: str | Path, image_size: int) -> Decoded:
    """Validate and decode one image file to RGB uint8 3×S×S (S = ``image_size``); see the module docstring."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels (got {image_size})")
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        return _skip(VANISHED, f"cannot stat: {exc}")
    except OSError as exc:
        return _skip(UNREADABLE, f"cannot stat: {exc}")
    if size == 0:
        return _skip(EMPTY, "0 bytes")
    if is_known_non_image(path):
        return _skip(NOT_AN_IMAGE, "system file")
    return _decode_source(path, image_size)


def decode_bytes(data: bytes, image_size: int) -> Decoded:
    """An encoded image (JPEG, PNG, …) in memory, decoded exactly as ``decode_file`` decodes a file."""
    if not data:
        return _skip(EMPTY, "0 bytes")
    return _decode_source(io.BytesIO(data), image_size)


def decode_array(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """An RGB image already in memory (uint8, H×W×3, any size) as training sees it: uint8 3×S×S,
    resized by the same code as a decoded file."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"an image array must be H×W×3 RGB (got shape {tuple(pixels.shape)})")
    decoded = _decode_open(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB"), image_size)
    assert decoded.array is not None
    return decoded.array


def _decode_source(source: str | Path | io.BytesIO, image_size: int) -> Decoded:
    """Open ``source`` (a path or encoded bytes), refuse what is too large, decode (``_decode_open``)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Over the limit Pillow warns (over twice the limit it raises): both mean "too large".
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if limit is not None and width * height > limit:
                    return _skip(TOO_LARGE, f"{width}x{height} pixels is over the limit of {limit}")
                return _decode_open(image, image_size)
    except UnidentifiedImageError as exc:
        return _skip(NOT_AN_IMAGE, str(exc))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _skip(TOO_LARGE, str(exc))
    except FileNotFoundError as exc:  # deleted between the stat and the open
        return _skip(VANISHED, f"{type(exc).__name__}: {exc}")
    except _BAD_DATA as exc:
        return _skip(UNREADABLE, f"{type(exc).__name__}: {exc}")


def _decode_open(image: Image.Image, image_size: int) -> Decoded:
    """Decode an opened image fully, orient, convert to RGB, resize; raises on bad data."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone else's global setting; we do not rely on it
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated files may be kept", stacklevel=3)
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        image.draft("RGB", (image_size, image_size))  # DCT-domain downscale, result still >= target
    image.load()  # the real decode: truncated or corrupt data raises here
    notes = []
    if image.mode != "RGB":
        notes.append(f"{image.mode} converted")
    try:
        orientation = image.getexif().get(0x0112, 1)
    except _BAD_DATA as exc:  # corrupt EXIF: the pixels are still good
        orientation = 1
        notes.append(f"EXIF unreadable, orientation ignored ({type(exc).__name__})")
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        image = ImageOps.exif_transpose(image)
        notes.append(f"EXIF orientation {orientation} applied")
    rgb = to_rgb(image)
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    array = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
    return Decoded(array, None, "; ".join(notes))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; alpha composited onto :data:`BACKGROUND`, 16-bit scaled by its range."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image = Image.fromarray(_grey_to_uint8(np.asarray(image), mode), mode="L")
    elif mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")  # applies palette / tRNS transparency
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1, L, P without transparency


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth grey → uint8 by the value range, never by clipping at 255.

    ``I;16*`` and ``I`` (how Pillow reads 16-bit PNG/TIFF/PGM) map 0…65535 → 0…255; ``I``
    values beyond 16 bits are scaled by their maximum. ``F`` is taken as 0…1 when its values
    fit there, else 0…255, else like ``I``.
    """
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    data = np.clip(data, 0.0, None)
    top = float(data.max()) if data.size else 0.0
    if mode == "F" and top <= 1.0:
        scale = 255.0
    elif mode == "F" and top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / max(65535.0, top)
    return np.clip(np.rint(data * scale), 0, 255).astype(np.uint8)


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def decode_many(
    paths: Sequence[Path], image_size: int, *, workers: int | None = None, progress: bool = True
) -> list[Decoded]:
    """:func:`decode_file` over ``paths`` on all cores; results in input order.

    Uses a process pool (the platform's default start method; the worker is the top-level
    :func:`decode_file`, so it also works when the main module cannot be imported). Fewer
    than :data:`POOL_MIN_FILES` files, or ``workers == 1``, decode in this process.
    ``progress=False`` silences the progress bar.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    paths = list(paths)
    results: list[Decoded] = []
    with tqdm(total=len(paths), desc="decoding", unit="img", disable=not progress) as bar:
        if workers == 1 or len(paths) < POOL_MIN_FILES:
            for path in paths:
                results.append(decode_file(path, image_size))
                bar.update()
            return results
        workers = min(workers, len(paths))
        chunksize = max(1, min(32, len(paths) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for decoded in pool.map(decode_file, paths, repeat(image_size), chunksize=chunksize):
                results.append(decoded)
                bar.update()
    return results
