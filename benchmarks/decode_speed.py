"""Where the first decode of a photo folder spends its time, and what two workers starting together cost.

1. Per photo, on one core (files already in the page cache): reading the bytes; Pillow's open +
   ``draft`` (DCT-domain downscale) + decode; + EXIF orientation; the whole ``decode_file``
   (conversion and resize included); and torchvision's ``decode_jpeg`` + an antialiased resize of
   the same bytes, for comparison.
2. The whole first pass as ``convscope train`` and every trial meet it: ``load_data`` on an empty
   decode cache, in a fresh process (listing, validating, decoding on every core, storing).
3. Two workers of a study starting together on an empty cache, each loading the folder:
   - before: each decodes it (what every worker did before the cache entry had a lock; emulated
     with a cache folder each);
   - now: one shared cache folder; one decodes, the other waits for the entry and loads it.
   Wall time until both have the data, and CPU seconds spent, as ratios from this run.

    python benchmarks/decode_speed.py --data /tmp/devset [--photos 2000] [--image-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

LOAD = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
from convscope.train.config_sections import DataConfig
from convscope.train.data import load_data
imported = time.perf_counter()
s = load_data(DataConfig(data=sys.argv[1]), int(sys.argv[2]), seed=0, cache_dir=Path(sys.argv[3]),
              dataset_dir=Path(sys.argv[3]) / "datasets", progress=False)
print(json.dumps({"seconds": time.perf_counter() - imported, "decoded": s.decoded,
                  "photos": len(s.train) + len(s.val)}))
"""


def per_photo(files: list[Path], size: int) -> dict[str, float]:
    """Milliseconds per photo of each stage, on this process's one thread."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2.functional import resize

    from convscope.train.images import decode_file

    torch.set_num_threads(1)
    for path in files:
        path.read_bytes()  # into the page cache: the stages below time the CPU, not the disk

    def timed(step) -> float:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        for path in files:
            step(path)
        return (time.perf_counter() - started) / len(files) * 1e3

    def pillow(path: Path, exif: bool = False) -> None:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image.load()
            if exif:
                image.getexif().get(0x0112, 1)

    def torchvision(path: Path) -> None:
        pixels = decode_jpeg(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
        resize(pixels, [size, size], antialias=True)

    return {
        "read the bytes": timed(lambda path: path.read_bytes()),
        "Pillow open + draft + decode": timed(pillow),
        "  + EXIF orientation": timed(lambda path: pillow(path, exif=True)),
        "decode_file (all of it: + RGB, resize, array)": timed(lambda path: np.asarray(decode_file(path, size).array)),
        "torchvision decode_jpeg + antialiased resize": timed(torchvision),
    }


def load_in(data: str, size: int, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", LOAD, data, str(size), str(cache)], stdout=subprocess.PIPE,
                            text=True)


def together(data: str, size: int, caches: list[Path]) -> dict[str, float]:
    """Two processes loading the folder at once, one cache folder each or one shared."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [load_in(data, size, cache) for cache in caches]
    results = [json.loads(proc.communicate()[0]) for proc in procs]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "decoded": sum(r["decoded"] for r in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of photos, one sub-folder per class")
    parser.add_argument("--photos", type=int, default=2000, help="photos timed one by one (stage 1)")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {device_description()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    every = sorted(Path(args.data).rglob("*.jpg"))
    files = every[:: max(1, len(every) // args.photos)][: args.photos]
    print(f"1. per photo, one core, {len(files)} photos at {args.image_size} px:")
    for stage, ms in per_photo(files, args.image_size).items():
        print(f"   {stage:<48}{ms:7.3f} ms  ({1e3 / ms:8,.0f} photos/s)")
    with tempfile.TemporaryDirectory(prefix="decode-speed-") as tmp:
        root = Path(tmp)
        first = json.loads(load_in(args.data, args.image_size, root / "first").communicate()[0])
        print(f"2. first pass, one process on every core: {first['photos']:,} photos in {first['seconds']:.1f} s "
              f"= {first['photos'] / first['seconds']:,.0f} photos/s (listing, validating, decoding, storing)")
        apart = together(args.data, args.image_size, [root / "own-a", root / "own-b"])
        shared = together(args.data, args.image_size, [root / "shared", root / "shared"])
    print("3. two workers starting together on an empty cache:")
    print(f"   before (each decodes):          wall {apart['wall']:6.1f} s, cpu {apart['cpu']:6.1f} s, "
          f"{apart['decoded']:,} files decoded")
    print(f"   now (one decodes, one waits):   wall {shared['wall']:6.1f} s, cpu {shared['cpu']:6.1f} s, "
          f"{shared['decoded']:,} files decoded")
    print(f"   now / before: wall {shared['wall'] / apart['wall']:.2f}×, cpu {shared['cpu'] / apart['cpu']:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
