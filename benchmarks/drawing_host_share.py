"""Does drawing an epoch's pictures on a thread hold back the thread that feeds a GPU?

On a GPU with CUDA graphs the training thread does little per batch: a few small torch calls
(copy the batch into the graph's inputs, replay, step the schedule). Each call releases Python's
GIL and takes it back, so a thread that is busy beside it (drawing pictures, writing to MLflow and
TensorBoard) can make it wait for the GIL on every call: the "convoy" effect. If that wait were
long, the device would starve whatever the GPU's speed.

This measures it on any machine, same run: how many batches' worth of such calls
(``--calls-per-batch`` small in-place torch operations) the main thread makes per second

- alone,
- beside a thread that draws and records every epoch's pictures into real MLflow (sqlite) and
  TensorBoard sinks, one epoch after another with no pause: what ``--visual-epochs latest`` does
  when epochs outrun the drawing,
- beside a thread running pure Python, the worst case for the GIL, for scale.

It prints the rates, their ratio to "alone" and the images per second that rate could feed at
``--batch-size``. The GPU's own speed is not measured here: compare the last figure with what the
device trains (``benchmarks/gpu.py``).

    python benchmarks/drawing_host_share.py [--seconds 3] [--calls-per-batch 12] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description, seed_visuals  # noqa: E402


def batches_per_second(seconds: float, calls_per_batch: int) -> float:
    """The main thread's rate of ``calls_per_batch`` small torch calls in a row."""
    counter = torch.zeros(1)
    batches = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(calls_per_batch):
            counter.add_(1)
        batches += 1
    return batches / elapsed


def beside(work: Callable[[threading.Event], None], seconds: float, calls_per_batch: int) -> float:
    """``batches_per_second`` while ``work`` runs on another thread until its event is set."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.5)  # past the thread's start
    try:
        return batches_per_second(seconds, calls_per_batch)
    finally:
        stop.set()
        thread.join()


def pure_python(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement")
    parser.add_argument("--calls-per-batch", type=int, default=12,
                        help="small torch calls the main thread makes a batch")
    parser.add_argument("--batch-size", type=int, default=512, help="images a batch, for the img/s it could feed")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as on the tracker's threads; the main thread's calls are too small to use more
    print(f"device: {device_description()}; Python switch interval {sys.getswitchinterval() * 1000:g} ms")
    drawn = [0]
    with tempfile.TemporaryDirectory() as tmp:
        model, visuals, sinks = seed_visuals(Path(tmp), "drawing-host-share")

        def drawing(stop: threading.Event) -> None:
            while not stop.is_set():
                drawn[0] += 1
                visuals.log(model, step=drawn[0])

        alone = batches_per_second(args.seconds, args.calls_per_batch)
        started = time.perf_counter()
        with_drawing = beside(drawing, args.seconds, args.calls_per_batch)
        drawing_seconds = time.perf_counter() - started
        with_python = beside(pure_python, args.seconds, args.calls_per_batch)
        sinks.close()
    print(f"main thread, {args.calls_per_batch} small torch calls a batch; "
          f"img/s it could feed at batch {args.batch_size}:")
    for name, rate in (("alone", alone), ("beside epoch pictures drawn back to back", with_drawing),
                       ("beside pure Python", with_python)):
        print(f"  {name:<42} {rate:>9,.0f} batches/s  {rate / alone:5.2f}x  {rate * args.batch_size:>13,.0f} img/s")
    print(f"  (pictures of {drawn[0]} epochs drawn and written in {drawing_seconds:.1f} s)")


if __name__ == "__main__":
    main()
