"""CPU training throughput by intra-op thread count and OpenMP wait policy, idle and under load.

Every configuration trains the seed network (``train_one_epoch``, AdamW, one-cycle,
channels_last, 128-image batches of the synthetic 64x64 set) for ``--seconds`` in
a fresh subprocess, because the OpenMP runtime reads its wait policy once, when
torch loads it. The competing load is ``--hogs`` busy-loop processes this script
starts itself (0 = idle, 1 = one core busy, N = every core busy) and stops
afterwards. Ratios are against torch's default (as many threads as cores,
OpenMP's default active waiting) at the same load, in the same run. The load
average printed with every figure is ``os.getloadavg()`` (1, 5, 15 minutes) when
that figure was taken, so it includes this script's own processes.

    python benchmarks/cpu_threads.py [--seconds 6] [--hogs 0 1 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

# name -> (intra-op threads or None for torch's default, extra environment)
CONFIGS: dict[str, tuple[int | None, dict[str, str]]] = {
    "default": (None, {}),
    "threads=1": (1, {}),
    "default+passive": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "default+spin10k": (None, {"GOMP_SPINCOUNT": "10000"}),
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "CONVSCOPE_CPU_THREADS")


def worker(threads: int | None, seconds: float, batch_size: int) -> dict[str, object]:
    """Train the seed net for ``seconds`` (after two warm-up steps); img/s and what torch ran with."""
    import torch

    from convscope.train.batches import Normalizer
    from convscope.train.config import build_config
    from convscope.train.loop import make_scheduler, train_one_epoch
    from convscope.train.step import Stepper, make_optimizer
    from convscope.train.model import build_model
    from convscope.train.synthetic import make_synthetic

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = build_config("seed")
    images, labels = make_synthetic(8 * batch_size, config.model.image_size, seed=0)
    x = Normalizer.fit(images)(images).contiguous(memory_format=torch.channels_last)
    batches = [(x[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]
    model = build_model(config.model).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config.optim)
    scheduler = make_scheduler(optimizer, config.optim, 10_000)
    stepper = Stepper(model, optimizer, scheduler, torch.device("cpu"))

    def for_seconds(limit: float, least: int):
        start, done = time.perf_counter(), 0
        while done < least or time.perf_counter() - start < limit:
            yield batches[done % len(batches)]
            done += 1

    train_one_epoch(stepper, for_seconds(0.0, 2), progress=False)  # warm-up
    load_before = os.getloadavg()
    stats = train_one_epoch(stepper, for_seconds(seconds, 3), progress=False)
    return {"img_s": stats.images_per_second, "threads": torch.get_num_threads(),
            "load": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()]}


def run_config(name: str, seconds: float, batch_size: int) -> dict[str, object]:
    threads, extra = CONFIGS[name]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV} | extra
    command = [sys.executable, __file__, "--worker", "--seconds", str(seconds), "--batch-size", str(batch_size)]
    if threads is not None:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.terminate()
    for hog in hogs:
        hog.wait(timeout=10)


def fmt_load(load: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed training per configuration")
    parser.add_argument("--hogs", type=int, nargs="+", default=None,
                        help="competing busy-loop processes per pass (default: 0, 1 and one per core)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over all configurations per load")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.threads, args.seconds, args.batch_size)))
        return

    import torch
    from common import device_description

    cores = os.cpu_count() or 1
    info = torch.__config__.parallel_info()
    backend = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "parallel backend" in line), "?")
    openmp = "Intel OpenMP (KMP_BLOCKTIME applies)" if "Intel(R) OpenMP" in info or "libiomp" in info else \
        "GNU libgomp (OMP_WAIT_POLICY/GOMP_SPINCOUNT apply, KMP_BLOCKTIME does not)"
    print(f"device: {device_description()}")
    print(f"cores: {cores}, ATen parallel backend: {backend}, OpenMP runtime: {openmp}")
    print(f"seed preset, synthetic 64x64, batch {args.batch_size}, {args.seconds:g} s timed per configuration")
    print(f"load average at start: {fmt_load(list(os.getloadavg()))}")
    hog_counts = args.hogs if args.hogs is not None else sorted({0, 1, cores})
    rows: list[tuple[int, str, float, int, str]] = []
    for hogs in hog_counts:
        running = start_hogs(hogs)
        try:
            time.sleep(1.0 if hogs else 0.0)
            results: dict[str, list[dict[str, object]]] = {name: [] for name in args.configs}
            for _ in range(args.repeats):
                for name in args.configs:
                    results[name].append(run_config(name, args.seconds, args.batch_size))
        finally:
            stop_hogs(running)
        base = statistics.median(r["img_s"] for r in results[args.configs[0]])
        for name in args.configs:
            speed = statistics.median(r["img_s"] for r in results[name])
            loads = ", ".join(fmt_load(r["load"]) for r in results[name])
            rows.append((hogs, name, speed, int(results[name][0]["threads"]), loads))
            ratio = speed / base if base else float("nan")
            runs = ", ".join(f"{r['img_s']:.0f}" for r in results[name])
            print(f"hogs={hogs}  {name:16s} threads={results[name][0]['threads']}  {speed:7.0f} img/s  "
                  f"{ratio:5.2f}x vs {args.configs[0]}  (runs: {runs}; load avg {loads})", flush=True)
        time.sleep(0.5)
    print(f"load average at end: {fmt_load(list(os.getloadavg()))}")


if __name__ == "__main__":
    main()
