"""Workers that share one process as threads (``search.workers``, ``--workers-in threads``): how they
are grouped by device, stopped and reported, and the lock on the default random generators
(``train.random_state``) that keeps their seeding, eager steps and captures apart."""

from __future__ import annotations

import _thread
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import convscope.search.workers as workers
import convscope.train.prepared as prepared_module
from convscope.search.budget import clear_thread_stop, stop_requested, stop_threads
from convscope.search.objective import StudySettings
from convscope.train.config import build_config
from convscope.train.random_state import DEFAULT_GENERATORS
from convscope.train.step import Captured


def taken_by_another_thread() -> bool:
    """Whether ``DEFAULT_GENERATORS`` is held by some thread other than a fresh one (asked from one)."""
    answer: list[bool] = []

    def ask() -> None:
        got = DEFAULT_GENERATORS.acquire(blocking=False)
        if got:
            DEFAULT_GENERATORS.release()
        answer.append(not got)

    asker = threading.Thread(target=ask)
    asker.start()
    asker.join()
    return answer[0]


@pytest.mark.parametrize("devices, teams", [
    ([None, None, None], [((0, 1, 2), None)]),
    (["cuda:0", "cuda:1", "cuda:0", "cuda:1"], [((0, 2), "cuda:0"), ((1, 3), "cuda:1")]),
])
def test_workers_are_grouped_by_device_in_the_order_devices_appear(devices: list[str | None],
                                                                   teams: list[tuple[tuple[int, ...], str | None]]) -> None:
    assert workers.device_teams(devices) == teams


def test_a_stop_of_the_threads_is_seen_until_cleared() -> None:
    clear_thread_stop()
    assert not stop_requested()
    stop_threads()
    assert stop_requested()
    clear_thread_stop()
    assert not stop_requested()


def test_eager_steps_hold_the_generator_lock_and_nothing_else_does() -> None:
    seen: list[bool] = []
    captured = Captured(lambda x, y: seen.append(taken_by_another_thread()), enabled=False, name="test",
                        say=lambda _: None)
    assert not taken_by_another_thread()
    captured(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    captured(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    assert seen == [True, True] and not taken_by_another_thread()


def test_the_weights_are_initialised_under_the_generator_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = prepared_module.build_model
    held: list[bool] = []

    def build(config: Any) -> torch.nn.Module:
        held.append(taken_by_another_thread())
        return real(config)

    monkeypatch.setattr(prepared_module, "build_model", build)
    config = build_config("tiny", {"data": {"synthetic_size": 64}, "model": {"image_size": 16},
                                   "tracking": {"runs_dir": str(tmp_path)}})
    prepared_module.prepare(config, echo=lambda line: None, progress=False)
    assert held == [True]


def _settings() -> StudySettings:
    from convscope.search.storage import StudyStorage

    return StudySettings(study_name="s", storage=StudyStorage("unused", "journal"),
                         base=build_config("tiny"), space=None, device="cpu")  # type: ignore[arg-type]


def test_every_thread_runs_one_worker_that_knows_it_shares_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def fake_worker(settings: StudySettings, index: int, threads: int | None, device: str | None, pruner: Any,
                    *, shares_process: bool = False) -> None:
        with lock:
            calls.append((index, threads, device, shares_process, threading.current_thread().name))

    monkeypatch.setattr(workers, "worker", fake_worker)
    workers.workers_in_threads(_settings(), (3, 5), None)
    assert sorted(calls) == [(3, None, None, True, "convscope-worker-3"), (5, None, None, True, "convscope-worker-5")]


def test_a_workers_error_is_raised_once_all_are_done(monkeypatch: pytest.MonkeyPatch) -> None:
    finished: list[int] = []

    def fake_worker(settings: StudySettings, index: int, *args: Any, **kwargs: Any) -> None:
        if index == 0:
            raise ValueError("the storage went away")
        if index == 1:
            raise KeyboardInterrupt  # a stopped trial: its run is closed; not an error of the team
        finished.append(index)

    monkeypatch.setattr(workers, "worker", fake_worker)
    with pytest.raises(ValueError, match="the storage went away"):
        workers.workers_in_threads(_settings(), (0, 1, 2), None)
    assert finished == [2]


def test_ctrl_c_in_the_main_thread_stops_the_worker_threads_then_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches the main thread only: the workers see ``stop_requested`` (at their epoch's end),
    finish, and the interrupt is raised again once they have."""
    stopped: list[int] = []
    both_running = threading.Barrier(2, timeout=60)

    def fake_worker(settings: StudySettings, index: int, *args: Any, **kwargs: Any) -> None:
        both_running.wait()
        if index == 0:
            _thread.interrupt_main()  # as a terminal's Ctrl-C
        for _ in range(6000):  # an epoch's end, every 10 ms, until the stop comes (at most a minute)
            if stop_requested():
                stopped.append(index)
                return
            threading.Event().wait(0.01)

    monkeypatch.setattr(workers, "worker", fake_worker)
    try:
        with pytest.raises(KeyboardInterrupt):
            workers.workers_in_threads(_settings(), (0, 1), None)
    finally:
        clear_thread_stop()
    assert sorted(stopped) == [0, 1]
