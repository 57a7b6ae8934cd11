"""The seed network's training speed on one accelerator, every figure from the same run.

Prints the device's name, then training images per second for
- the naive loop: a DataLoader over CPU tensors, fp32, ``loss.item()`` every step, batch 128;
- convscope's eager step, its graphed step and (on CUDA, unless ``--no-compile``) its graphed step
  on ``torch.compile`` (``train.step``; data already on the device, no per-epoch work): the
  fastest of them is the ceiling; and the graphed step with its batches prepared one at a time
  instead of many per pass (what ``train.batches.prepared_per_pass`` gains), and with two other
  optimizer steps in place of ``train.multi_tensor_adamw``: torch's capturable single-tensor AdamW
  (the same one-cycle schedule, beta1 in a device tensor, some 22 kernels per parameter tensor:
  what graphed runs used before) and torch's multi-tensor AdamW with beta1 held fixed (a constant
  schedule; torch's multi-tensor and fused AdamW cannot take beta1 from a device tensor);
- ``convscope train`` with visuals off, on (``--visual-epochs auto``: ``latest`` on CUDA) and on for
  every epoch (``all``): steady-state epochs, all per-epoch work included (validation, visuals,
  MLflow, TensorBoard, checkpoints), as a share of the ceiling, with the epochs that got pictures
  and where a steady epoch's time went (training pass, validation pass, the rest);
- a small study (``convscope search``) with ``--trials-per-gpu 1`` and ``K``, the K workers as
  processes and as threads on streams of one process (``--workers-in``): wall time, trials per
  minute and aggregate training images per second;
- on CUDA, a verdict on each target: visuals-on training at ≥ 50% of the ceiling and ≥ 300,000
  img/s, and K trials per device faster than one.

Before any figure it runs ``convscope train`` and a 2-trial ``convscope search`` with their default
settings on the device and stops with exit code 1 when either fails or falls back from CUDA graphs.

On a CPU the graphed rows say why they are missing, and ``--quick`` shrinks everything so the script
itself can be checked in a minute. Budget on an H100: about five minutes with the defaults.

With ``--target-study`` it then runs the study the GPU target names (100 trials, depth 1..5, width
and dropout, 20 epochs of 20,000 images, visuals on) with whichever study row was fastest, and says
whether it took at most five minutes.

    python benchmarks/gpu.py [--quick] [--batch-size 512] [--train-images 20000] [--trials-per-gpu 4]
                             [--target-study]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # as the convscope command sets them
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EpochClock, device_description  # noqa: E402

from convscope.train.batches import DeviceBatches, Normalizer, prepared_per_pass  # noqa: E402
from convscope.train.config import build_config  # noqa: E402
from convscope.train.loop import make_scheduler, resolve_precision, select_device, train_one_epoch  # noqa: E402
from convscope.train.model import build_model  # noqa: E402
from convscope.train.step import Stepper, make_optimizer  # noqa: E402
from convscope.train.synthetic import make_synthetic  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_loop(device: torch.device, images: torch.Tensor, labels: torch.Tensor, seconds: float) -> float:
    """The seed author's loop: DataLoader over CPU float tensors, fp32, ``loss.item()`` every step."""
    model = build_model(build_config("seed").model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(Normalizer.fit(images)(images), labels), batch_size=128, shuffle=True)
    done, start, warm = 0, 0.0, True
    while True:
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            loss.item()
            if warm:  # the first step pays for cuDNN's choices
                warm, start = False, time.perf_counter()
                continue
            done += len(targets)
            if time.perf_counter() - start >= seconds:
                return done / (time.perf_counter() - start)


def convscope_step(device: torch.device, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                   seconds: float, *, graphed: bool, compiled: bool = False,
                   one_batch_a_pass: bool = False, optimizer_step: str = "convscope") -> tuple[float, str, float]:
    """img/s of ``train.step.Stepper`` over device-resident batches; its mode; its first step's seconds.
    Batches are prepared as ``convscope train`` prepares them on ``device``, or (``one_batch_a_pass``)
    one at a time, as CUDA runs did before ``prepared_per_pass``. ``optimizer_step``: ``convscope``
    (what a run uses), ``torch single-tensor`` (torch's capturable single-tensor AdamW, the run's
    schedule) or ``torch multi-tensor`` (torch's capturable multi-tensor AdamW, its learning rate in a
    device tensor, under a constant schedule that never changes beta1)."""
    config = build_config("seed", {"optim": {"batch_size": batch_size, "epochs": 1000}})
    torch.manual_seed(0)
    model = build_model(config.model).to(device, memory_format=torch.channels_last)
    batches = DeviceBatches(images.to(device), labels.to(device), Normalizer.fit(images), batch_size,
                            shuffle=True, flip=True, crop_padding=4, drop_last=graphed,
                            per_pass=batch_size if one_batch_a_pass else prepared_per_pass(device, images.shape[1:],
                                                                                           batch_size))
    if optimizer_step == "torch multi-tensor":
        config = build_config("seed", {"optim": {"batch_size": batch_size, "epochs": 1000, "schedule": "constant"}})
        optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(config.optim.lr, device=device),
                                      weight_decay=config.optim.weight_decay, capturable=graphed, foreach=True)
    elif optimizer_step == "torch single-tensor":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay,
                                      capturable=graphed, foreach=False)
    else:
        optimizer = make_optimizer(model, config.optim, capturable=graphed)
    scheduler = make_scheduler(optimizer, config.optim, len(batches))
    precision = resolve_precision("auto", device)  # as convscope train chooses
    stepper = Stepper(model, optimizer, scheduler, device, precision=precision, graphed=graphed,
                      compiled=torch.compile(model) if compiled else None, say=print,
                      tensor_hyperparameters=False if optimizer_step == "torch multi-tensor" else None)
    train_one_epoch(stepper, batches, progress=False)  # warm-up, capture (and compile)
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 2:
        _sync(device)
        stats = train_one_epoch(stepper, batches, progress=False)
        rates.append(stats.images_per_second)
    return statistics.median(rates), stepper.mode, stepper.captured.first_call_seconds


class EpochParts(EpochClock):
    """An ``EpochClock`` that also keeps each epoch's training and validation seconds (the run's own
    ``train_seconds`` and ``epoch_seconds`` metrics): the rest of an epoch's wall time is the per-epoch
    work on the training thread (visuals capture, checkpoint snapshot, handing records to the writer)."""

    def __init__(self) -> None:
        super().__init__()
        self.train_seconds: list[float] = []
        self.val_seconds: list[float] = []

    def __call__(self, epoch: int, metrics: object) -> None:
        super().__call__(epoch, metrics)
        assert isinstance(metrics, dict)
        self.train_seconds.append(metrics["train_seconds"])
        self.val_seconds.append(metrics["epoch_seconds"] - metrics["train_seconds"])

    def steady(self, skip: int = 2) -> str:
        """Median seconds of the epochs after the first ``skip``: wall = training + validation + the rest."""
        def median(values: list[float]) -> float:
            return statistics.median(values[skip:] or values[-1:])
        wall, fit, val = median(self.epoch_seconds), median(self.train_seconds), median(self.val_seconds)
        return f"epoch {wall * 1000:.0f} ms = train {fit * 1000:.0f} + val {val * 1000:.0f} + rest {(wall - fit - val) * 1000:.0f}"


def convscope_train(device: torch.device, runs_dir: Path, batch_size: int, train_images: int, epochs: int,
                    visual_epochs: str) -> tuple[float, str, str]:
    """Steady-state img/s of ``convscope train``'s whole epoch (the first two epochs dropped), which
    epochs got pictures, and where a steady epoch's time went (``EpochParts.steady``).
    ``visual_epochs``: off, or a ``--visual-epochs`` value."""
    from convscope.train.run import run

    config = build_config("seed", {
        "data": {"synthetic_size": int(train_images / 0.8)},
        "optim": {"epochs": epochs, "batch_size": batch_size, "device": str(device)},
        "tracking": {"runs_dir": str(runs_dir), "visuals": visual_epochs != "off",
                     "visual_epochs": "auto" if visual_epochs == "off" else visual_epochs},
    })
    clock = EpochParts()
    result = run(config, on_epoch_end=clock, progress=False, echo=lambda line: None)
    steady = clock.epoch_seconds[2:] or clock.epoch_seconds[-1:]
    from mlflow import MlflowClient  # the run's own record of which epochs have pictures

    tags = MlflowClient(result.links["mlflow_tracking_uri"]).get_run(result.links["mlflow_run_id"]).data.tags
    drawn = tags.get("convscope.picture_epochs", "every epoch")
    return train_images / statistics.median(steady), "-" if visual_epochs == "off" else drawn, clock.steady()


def study(runs_dir: Path, device: torch.device, trials: int, per_gpu: int, epochs: int, train_images: int,
          batch_size: int, workers_in: str = "processes") -> float:
    """Wall seconds of a ``convscope search`` (depth, width, dropout) of ``trials`` trials; infinity when it
    failed, with its last lines on stderr, so the rows after it still run."""
    command = [sys.executable, "-m", "convscope", "search", "--trials", str(trials), "--epochs", str(epochs),
               "--synthetic-size", str(int(train_images / 0.8)), "--batch-size", str(batch_size),
               "--runs-dir", str(runs_dir), "--device", str(device), "--depth", "1..5"]
    command += ["--trials-per-gpu", str(per_gpu)] if device.type == "cuda" else ["--jobs", str(per_gpu)]
    command += ["--workers-in", workers_in]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(f"the study with {per_gpu} per device ({workers_in}) failed (exit {done.returncode}):\n"
              f"{done.stderr[-2000:]}", file=sys.stderr)
        return math.inf
    return wall


def smoke(device: torch.device, runs_dir: Path, quick: bool) -> None:
    """``convscope train`` and a 2-trial ``convscope search`` with default settings (``quick``: one epoch of
    512 images); exit 1 on a crash or a capture that fell back to eager steps, with the command's last lines."""
    shrink = ["--epochs", "1", "--synthetic-size", "512"] if quick else []
    commands = {
        "convscope train": ["train", "--device", str(device), "--runs-dir", str(runs_dir / "train"), "--quiet",
                            *shrink],
        "convscope search (2 trials)": ["search", "--device", str(device), "--trials", "2",
                                        "--runs-dir", str(runs_dir / "search"), *shrink],
    }
    for name, argv in commands.items():
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "convscope", *argv], cwd=REPO, capture_output=True, text=True)
        failed = done.returncode != 0 or "capture of the" in done.stderr
        verdict = f"FAILED (exit {done.returncode})" if failed else "ran to the end"
        print(f"{name + ' with default settings':<66} {verdict}  {time.perf_counter() - start:.0f} s")
        if failed:
            print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            raise SystemExit(1)


def failed_row(label: str, error: Exception) -> str:
    """A row whose measurement raised: its label, ``failed`` and the error's first line."""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{label:<66} {'failed':>11}  {type(error).__name__}: {first}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the script itself (a CPU minute)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--train-images", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per step row")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each convscope train row")
    parser.add_argument("--no-compile", action="store_true", help="skip the graphed step on torch.compile (CUDA)")
    parser.add_argument("--trials", type=int, default=16, help="trials of each study row")
    parser.add_argument("--study-epochs", type=int, default=5)
    parser.add_argument("--trials-per-gpu", type=int, default=4, help="K of the second study row")
    parser.add_argument("--no-smoke", action="store_true", help="skip the default-settings train and search runs")
    parser.add_argument("--target-study", action="store_true",
                        help="then the target study: 100 trials (depth 1..5, width, dropout) x 20 epochs of the "
                        "training images, visuals on, with the fastest of the study rows' ways (about 5 more minutes)")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.train_images, args.seconds, args.epochs = 64, 512, 1.0, 3
        args.trials, args.study_epochs, args.trials_per_gpu = 2, 1, 2
    device = select_device(args.device)
    print(f"device: {device_description(device)}")
    print(f"seed network, synthetic 64x64, {args.train_images:,} training images, batch {args.batch_size}")
    if not args.no_smoke:
        with tempfile.TemporaryDirectory() as tmp:
            smoke(device, Path(tmp), args.quick)
    images, labels = make_synthetic(args.train_images, 64, seed=0)

    naive = naive_loop(device, images, labels, args.seconds)
    print(f"{'naive loop (DataLoader, fp32, loss.item() every step, batch 128)':<66} {naive:>11,.0f} img/s")
    eager, _, _ = convscope_step(device, images, labels, args.batch_size, args.seconds, graphed=False)
    print(f"{'convscope eager step':<66} {eager:>11,.0f} img/s  {eager / naive:5.2f}x naive")
    ceiling = eager
    if device.type == "cuda":
        graphed, mode, _ = convscope_step(device, images, labels, args.batch_size, args.seconds, graphed=True)
        print(f"{f'convscope graphed step ({mode})':<66} {graphed:>11,.0f} img/s  {graphed / naive:5.2f}x naive")
        single, mode, _ = convscope_step(device, images, labels, args.batch_size, args.seconds, graphed=True,
                                         one_batch_a_pass=True)
        print(f"{f'  the same, batches prepared one at a time ({mode})':<66} {single:>11,.0f} img/s  "
              f"many batches a pass: {graphed / single:.2f}x this")
        for optimizer_step, shown in (("torch single-tensor", "torch's single-tensor AdamW, one-cycle"),
                                      ("torch multi-tensor", "torch's multi-tensor AdamW, beta1 fixed")):
            try:  # a diagnostic row: a failure must not cost the rows after it
                other, mode, _ = convscope_step(device, images, labels, args.batch_size, args.seconds, graphed=True,
                                                optimizer_step=optimizer_step)
            except Exception as error:  # noqa: BLE001 - reported as the row's figure
                print(failed_row(f"  the same on {shown}", error))
            else:
                print(f"{f'  the same on {shown} ({mode})':<66} {other:>11,.0f} img/s  "
                      f"{other / graphed:.2f}x convscope's")
        ceiling = max(ceiling, graphed)
        if not args.no_compile:
            try:  # a compiler failure must not cost the rows after it
                compiled, mode, first = convscope_step(device, images, labels, args.batch_size, args.seconds,
                                                       graphed=True, compiled=True)
            except Exception as error:  # noqa: BLE001 - reported as the row's figure
                print(failed_row("convscope graphed step on torch.compile", error))
            else:
                print(f"{f'convscope graphed step on torch.compile ({mode})':<66} {compiled:>11,.0f} img/s  "
                      f"first step {first:.1f} s (compile included)")
                ceiling = max(ceiling, compiled)
    else:
        print(f"{'convscope graphed step':<66} {'n/a':>11}  (CUDA graphs need a CUDA device)")

    rates: dict[str, float] = {}
    walls: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for visual_epochs, shown in (("off", "visuals off"), ("auto", "visuals on (auto)"), ("all", "visuals on, all")):
            rate, drawn, parts = convscope_train(device, Path(tmp) / f"train-{visual_epochs}", args.batch_size,
                                                 args.train_images, args.epochs, visual_epochs)
            rates[visual_epochs] = rate
            label = f"convscope train, {shown} (whole epochs)"
            print(f"{label:<66} {rate:>11,.0f} img/s  {100 * rate / ceiling:5.1f}% of the ceiling  pictures: {drawn}")
            print(f"{'':<66} {parts}")
        k = args.trials_per_gpu
        for per_gpu, workers_in in ((1, "processes"), (k, "processes"), (k, "threads")):
            wall = study(Path(tmp) / f"study-{per_gpu}-{workers_in}", device, args.trials, per_gpu,
                         args.study_epochs, args.train_images, args.batch_size, workers_in)
            walls[per_gpu, workers_in] = wall
            label = f"study, {args.trials} trials x {args.study_epochs} epochs, {per_gpu} per device"
            label += f" ({workers_in})" if per_gpu > 1 else ""
            images_per_s = args.trials * args.study_epochs * args.train_images / wall
            print(f"{label:<66} {wall:>9.1f} s  {60 * args.trials / wall:5.1f} trials/min  "
                  f"{images_per_s:,.0f} training img/s in all" if math.isfinite(wall) else f"{label:<66} {'failed':>11}")
        if args.target_study:
            (per_gpu, workers_in), _ = min(walls.items(), key=lambda item: item[1])
            trials, epochs = (4, 2) if args.quick else (100, 20)
            wall = study(Path(tmp) / "target-study", device, trials, per_gpu, epochs, args.train_images,
                         args.batch_size, workers_in)
            label = f"target study, {trials} trials x {epochs} epochs, {per_gpu} per device ({workers_in})"
            print(f"{label:<66} {wall:>9.1f} s  {60 * trials / wall:5.1f} trials/min" if math.isfinite(wall)
                  else f"{label:<66} {'failed':>11}")
    if device.type == "cuda":
        verdicts(rates["auto"], ceiling, walls[1, "processes"],
                 {workers_in: walls[k, workers_in] for workers_in in ("processes", "threads")}, k)
        if args.target_study:
            print(f"{'met' if wall <= 300 else 'MISSED':>6}  the 100-trial study in <= 5 minutes ({wall / 60:.1f} min)")


def verdicts(visuals_on: float, ceiling: float, one_per_device: float, k_per_device: dict[str, float], k: int) -> None:
    """One line per GPU target, met or missed; K per device once for each way of running the K workers."""
    targets = [
        (f"visuals-on training >= 50% of the ceiling ({100 * visuals_on / ceiling:.0f}%)", visuals_on >= 0.5 * ceiling),
        (f"visuals-on training >= 300,000 img/s ({visuals_on:,.0f})", visuals_on >= 300_000),
    ]
    targets += [(f"{k} trials per device ({workers_in}) faster than 1 ({one_per_device / wall:.2f}x)",
                 wall < one_per_device) for workers_in, wall in k_per_device.items()]
    for text, met in targets:
        print(f"{'met' if met else 'MISSED':>6}  {text}")


if __name__ == "__main__":
    main()
