"""Where a study's workers run: in this process, in worker processes, or as threads.

``run_workers`` starts ``settings.jobs`` workers (``search.study.worker``) that share the trials:

- one worker runs in this process;
- with ``--workers-in processes`` (the default) each further worker is a process of its own,
  replaced when it dies mid-trial (``search.dead_workers``);
- with ``--workers-in threads`` the workers on one device are threads of one process (this one
  when there is one device), each on a CUDA stream of its own: the kernels of different trials
  can run on the device at once instead of taking turns as different processes' kernels do
  without NVIDIA's MPS, and the trials share one copy of the libraries, one CUDA context and the
  synthetic data. Which pays on a GPU is for ``benchmarks/gpu.py`` to measure. Their
  Python work shares one interpreter. Ctrl-C or SIGTERM stops each thread's trial at the end of
  its epoch (``search.budget.stop_requested``), its run KILLED and its trial retried first by the
  next run, as in a worker process. What sharing a process costs in reproducibility is said in
  ``train.random_state``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import optuna

from convscope.search.budget import clear_thread_stop, stop_threads
from convscope.search.objective import StudySettings
from convscope.search.study import STOP_GRACE_SECONDS, load, mark_run_killed, worker
from convscope.train.interrupts import Terminated

Unit = tuple[tuple[int, ...], int | None, str | None]
"""What one worker process runs: its workers' indices, torch's threads (None: as they are), its device."""


def run_workers(
    settings: StudySettings, remaining: int | None, *, pruner: optuna.pruners.BasePruner | None = None
) -> None:
    """``settings.jobs`` workers share ``remaining`` trials (None: until the deadline), where the module
    docstring says. Each worker gets the same absolute deadline in ``settings``.

    On a CPU, worker processes split the cores instead of oversubscribing them; on a GPU
    (``--trials-per-gpu K`` sets the jobs) they share the device.
    """
    jobs = max(1, settings.jobs if remaining is None else min(settings.jobs, remaining))
    cores = os.cpu_count() or 1
    devices = worker_devices(settings.device, jobs, visible_gpus())
    if jobs == 1:
        worker(settings, 0, None, devices[0], pruner)
        return
    if settings.workers_in == "threads":
        teams = device_teams(devices)
        if len(teams) == 1:
            workers_in_threads(settings, teams[0][0], teams[0][1], pruner)
            return
        units: list[Unit] = [(indices, None, device) for indices, device in teams]
    else:
        threads = max(1, cores // jobs)
        units = [((index,), threads, devices[index]) for index in range(jobs)]
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes = [
        context.Process(target=_worker_process, args=(stop, settings, *unit), name=f"convscope-worker-{index}")
        for index, unit in enumerate(units)
    ]
    # the workers start with Ctrl-C ignored (inherited), so one that is still importing when it comes
    # prints no traceback; each takes Ctrl-C again once it runs, and leaves at once if it was stopped
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _supervise(processes, context, stop, settings, units)
    except Terminated:
        # SIGTERM reached this process only (a terminal's Ctrl-C reaches the whole group):
        # pass it on as Ctrl-C so each worker ends its trial KILLED and flushes its run.
        stop.set()
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join(timeout=STOP_GRACE_SECONDS)
        raise
    except KeyboardInterrupt:
        stop.set()
        for process in processes:
            process.join(timeout=STOP_GRACE_SECONDS)
        raise
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.terminate()


def _supervise(processes: list[Any], context: Any, stop: Any, settings: StudySettings, units: list[Unit]) -> None:
    """Wait for the workers; one that dies mid-trial (``search.dead_workers``) has its trial failed and
    queued again, and another worker takes its place."""
    from multiprocessing.connection import wait

    from convscope.search.dead_workers import death, requeue_dead_worker_trials

    running = list(enumerate(processes))
    while running:
        wait([process.sentinel for _, process in running])
        for index, process in [item for item in running if not item[1].is_alive()]:
            running.remove((index, process))
            why = death(process.exitcode)
            if why is None or stop.is_set():
                continue
            study = load(settings, None, index)
            numbers = requeue_dead_worker_trials(study, process.pid, why, partial(mark_run_killed, settings))
            print(f"worker {index} (process {process.pid}) died, {why}"
                  + (f": trial {', '.join(map(str, numbers))} failed and queued again" if numbers else "")
                  + "; another worker takes its place", flush=True)
            replacement = context.Process(target=_worker_process, args=(stop, settings, *units[index]),
                                          name=f"convscope-worker-{index}")
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                replacement.start()
            finally:
                signal.signal(signal.SIGINT, previous)
            processes.append(replacement)
            running.append((index, replacement))


def _worker_process(stop: Any, settings: StudySettings, indices: tuple[int, ...], threads: int | None,
                    device: str | None) -> None:
    """A worker process's entry: the worker ``indices[0]``, or the workers ``indices`` as threads.
    Ctrl-C is handled from here on; nothing to do once the study was stopped.

    The worker dies with the ``convscope search`` process that started it: Linux sends it SIGTERM
    when that process dies (even by SIGKILL), its trial's run ends KILLED as on Ctrl-C, and it
    closes the study's parent run that no process holds any more."""
    from convscope.train.interrupts import end_with_parent, sigterm_as_interrupt

    from convscope.search.budget import watch_stop

    signal.signal(signal.SIGINT, signal.default_int_handler)
    watch_stop(stop)
    sys.unraisablehook = _quiet_lost_interrupts
    parent = os.getppid()
    try:
        with sigterm_as_interrupt():
            end_with_parent()
            if stop.is_set():
                return
            if len(indices) == 1:
                worker(settings, indices[0], threads, device)
            else:
                workers_in_threads(settings, indices, device)
    except KeyboardInterrupt:  # its trial's run is closed KILLED already; the parent says "interrupted"
        if os.getppid() != parent:
            _close_orphaned_parent(settings)
        raise SystemExit(130) from None


def _quiet_lost_interrupts(unraisable: Any) -> None:
    """An interrupt that landed in a finaliser is dropped by Python with a traceback; the worker sees
    the stop at the next epoch's end (``stop_requested``), so only other such errors are shown."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _close_orphaned_parent(settings: StudySettings) -> None:
    """The study's parent run and every trial run under it still RUNNING, KILLED with the reason, once
    the parent's process is gone: no process holds them any more (a trial whose worker was stopped
    between opening its run and training closes nothing itself). Best effort: the next convscope
    search of the study closes the parent otherwise."""
    from mlflow import MlflowClient

    from convscope.tracking.base import RunStatus
    from convscope.tracking.mlflow_sink import end_run
    from convscope.tracking.orphans import KILLED_TAG, close_orphaned_runs

    try:
        uri = settings.stores().mlflow_uri
        close_orphaned_runs(uri, settings.base.tracking.experiment,
                            {"convscope.kind": "study", "optuna.study": settings.study_name})
        if settings.parent_run_id:
            client = MlflowClient(uri)
            parent = client.get_run(settings.parent_run_id)
            for run in client.search_runs([parent.info.experiment_id],
                                          f"tags.`mlflow.parentRunId` = '{settings.parent_run_id}' "
                                          "and attributes.status = 'RUNNING'"):
                end_run(client, run.info.run_id, RunStatus.KILLED,
                        {KILLED_TAG: "its convscope search process died"})
    except Exception:  # noqa: BLE001 - another worker or the next command does it
        pass


def visible_gpus() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES / a container's reservation)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_devices(device: str, jobs: int, gpus: int) -> list[str | None]:
    """The device of each worker: with several GPUs and ``--device auto`` or ``cuda``, workers
    go round-robin over them (``cuda:0``, ``cuda:1``, …); otherwise every worker uses ``device``
    (None: the run's own setting)."""
    if gpus > 1 and device in ("auto", "cuda"):
        return [f"cuda:{index % gpus}" for index in range(jobs)]
    return [None] * jobs




def device_teams(devices: list[str | None]) -> list[tuple[tuple[int, ...], str | None]]:
    """The workers (their indices) of each device, in the order the devices first appear."""
    teams: dict[str | None, list[int]] = {}
    for index, device in enumerate(devices):
        teams.setdefault(device, []).append(index)
    return [(tuple(indices), device) for device, indices in teams.items()]


def workers_in_threads(settings: StudySettings, indices: tuple[int, ...], device: str | None,
                       pruner: optuna.pruners.BasePruner | None = None) -> None:
    """The workers ``indices`` on ``device`` (None: the run's own), each a thread of this process on a
    stream of its own, until all are done. Ctrl-C or SIGTERM here stops each thread's trial at the
    end of its epoch; the threads get ``STOP_GRACE_SECONDS`` in all to close their runs, then the
    interrupt goes on. A worker that raised anything else has its error raised here once all are done."""
    clear_thread_stop()
    failures: list[BaseException] = []
    # each thread says it is done through an event: a Thread.join that an interrupt broke off can
    # return at once from then on while the thread still runs
    done = [threading.Event() for _ in indices]
    team = [threading.Thread(target=_worker_thread, args=(settings, index, device, pruner, failures, finished),
                             name=f"convscope-worker-{index}", daemon=True) for index, finished in zip(indices, done)]
    try:
        for thread in team:
            thread.start()
        for finished in done:
            while not finished.wait(1.0):  # a bounded wait, so an interrupt is handled within a second
                pass
    except KeyboardInterrupt:
        stop_threads()
        deadline = time.monotonic() + STOP_GRACE_SECONDS  # for all of them together
        for thread, finished in zip(team, done):
            if thread.ident is not None:  # started
                finished.wait(max(0.0, deadline - time.monotonic()))
        raise
    if failures:
        raise failures[0]


def _worker_thread(settings: StudySettings, index: int, device: str | None, pruner: optuna.pruners.BasePruner | None,
                   failures: list[BaseException], finished: threading.Event) -> None:
    try:
        with own_stream(device or settings.device):
            worker(settings, index, None, device, pruner, shares_process=True)
    except KeyboardInterrupt:  # its trial's run is closed KILLED; the team's caller reports the stop
        pass
    except BaseException as error:  # noqa: BLE001 - raised again by the team once all are done
        failures.append(error)
    finally:
        finished.set()


@contextlib.contextmanager
def own_stream(device_name: str) -> Iterator[None]:
    """On CUDA, a new stream of ``device_name`` current in this thread (and that device); else nothing."""
    from convscope.train.loop import select_device

    device = select_device(device_name)
    if device.type != "cuda":
        yield
        return
    import torch

    with torch.cuda.device(device), torch.cuda.stream(torch.cuda.Stream(device)):
        yield
