"""``FanOut`` and ``BackgroundTracker``, driven through a recording fake sink."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from convscope.tracking.background import BackgroundTracker
from convscope.tracking.base import FanOut, NullTracker, RunStatus
from convscope.tracking.tensorboard_sink import TensorBoardTracker


class Recorder(NullTracker):
    """Records calls; optionally slow, failing or blocking."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None,
                 gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.delay, self.fail_on, self.gate = delay, fail_on, gate
        self.started = threading.Event()

    def _record(self, *call: Any) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        if call[0] == self.fail_on:
            raise RuntimeError(f"{call[0]} exploded")
        self.calls.append(call)

    def log_metrics(self, metrics: Any, step: int) -> None:
        self._record("log_metrics", dict(metrics), step)

    def log_image(self, key: str, image: Any, step: int) -> None:
        self._record("log_image", key, step)

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        self._record("close", status)


def test_fanout_closes_every_sink_even_if_one_raises() -> None:
    first, broken, last = Recorder(), Recorder(fail_on="close"), Recorder()
    with pytest.raises(RuntimeError, match="close exploded"):
        FanOut([first, broken, last]).close(RunStatus.KILLED)
    assert first.calls == [("close", RunStatus.KILLED)]
    assert last.calls == [("close", RunStatus.KILLED)]


class TestBackgroundTracker:
    def test_order_is_kept_and_close_flushes(self) -> None:
        inner = Recorder(delay=0.01)
        bg = BackgroundTracker(inner, maxsize=4)
        for step in range(5):
            bg.log_metrics({"loss": step}, step)
            bg.submit(lambda s=step: bg.inner.log_image("maps", None, s))
        bg.close(RunStatus.PRUNED)
        expected: list[tuple[Any, ...]] = []
        for step in range(5):
            expected += [("log_metrics", {"loss": step}, step), ("log_image", "maps", step)]
        assert inner.calls == expected + [("close", RunStatus.PRUNED)]
        assert not bg._thread.is_alive()

    def test_flush_waits_for_pending_calls(self) -> None:
        inner = Recorder(delay=0.02)
        bg = BackgroundTracker(inner)
        for step in range(5):
            bg.log_metrics({"m": 1.0}, step)
        bg.flush()
        assert [c[2] for c in inner.calls] == [0, 1, 2, 3, 4]
        bg.close()

    def test_failures_are_counted_and_later_jobs_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        inner = Recorder(fail_on="log_image")
        bg = BackgroundTracker(inner)

        def render_and_crash() -> None:
            raise ValueError("bad activations")

        with caplog.at_level(logging.WARNING, logger="convscope.tracking.background"):
            bg.submit(render_and_crash)
            bg.log_image("feature_maps/conv1", None, 2)
            bg.log_metrics({"loss": 0.1}, 3)
            bg.flush()
        assert bg.errors == 2
        assert "render_and_crash" in caplog.text and "bad activations" in caplog.text
        assert "log_image('feature_maps/conv1', step=2)" in caplog.text
        assert inner.calls == [("log_metrics", {"loss": 0.1}, 3)]
        bg.close()
        assert inner.calls[-1] == ("close", RunStatus.FINISHED)

    def test_back_pressure_blocks_the_caller(self) -> None:
        gate = threading.Event()
        inner = Recorder(gate=gate)
        bg = BackgroundTracker(inner, maxsize=1)
        bg.log_metrics({"m": 0}, 0)
        assert inner.started.wait(5)  # the worker holds call 0; call 1 fills the queue
        bg.log_metrics({"m": 1}, 1)
        third = threading.Thread(target=bg.log_metrics, args=({"m": 2}, 2))
        third.start()
        third.join(0.3)
        assert third.is_alive(), "a full queue must block the caller"
        gate.set()
        third.join(5)
        assert not third.is_alive()
        bg.close()
        assert [c[2] for c in inner.calls if c[0] == "log_metrics"] == [0, 1, 2]

    def test_jobs_may_log_to_the_tracker_itself(self) -> None:
        inner = Recorder()
        bg = BackgroundTracker(inner, maxsize=1)
        for step in range(3):  # would deadlock on the full queue if re-enqueued
            bg.submit(lambda s=step: bg.log_image("maps", None, s))
        bg.close()
        assert [c[2] for c in inner.calls if c[0] == "log_image"] == [0, 1, 2]

    def test_close_is_idempotent_and_later_calls_raise(self) -> None:
        inner = Recorder()
        bg = BackgroundTracker(inner)
        bg.close(RunStatus.FAILED)
        bg.close(RunStatus.FINISHED)
        assert inner.calls == [("close", RunStatus.FAILED)]
        with pytest.raises(RuntimeError, match="closed"):
            bg.log_metrics({"m": 1}, 0)

    def test_close_after_keyboard_interrupt(self) -> None:
        inner = Recorder(delay=0.01)
        bg = BackgroundTracker(inner, maxsize=2)
        try:
            for step in range(1000):
                bg.log_metrics({"m": step}, step)
                if step == 5:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bg.close(RunStatus.KILLED)
        assert [c[2] for c in inner.calls[:-1]] == list(range(6))
        assert inner.calls[-1] == ("close", RunStatus.KILLED)

    def test_links_delegate(self, tmp_path: Path) -> None:
        bg = BackgroundTracker(TensorBoardTracker(tmp_path))
        assert bg.links() == {"tensorboard_dir": str(tmp_path)}
        bg.close()



class TestOffer:
    """``BackgroundTracker.offer``: a side thread that never makes the caller wait (``tracking.latest_lane``)."""

    def test_a_job_not_begun_is_replaced_by_a_newer_one_unless_kept(self) -> None:
        gate = threading.Event()
        inner = Recorder(gate=gate)
        bg = BackgroundTracker(inner)
        bg.offer(lambda: inner.log_image("maps", None, 0), "epoch 0")
        assert inner.started.wait(10)  # epoch 0 is being drawn and waits for the gate
        bg.offer(lambda: inner.log_image("maps", None, 1), "epoch 1", keep=True)
        for step in (2, 3, 4):  # each returns at once
            bg.offer(lambda s=step: inner.log_image("maps", None, s), f"epoch {step}")
        gate.set()
        bg.flush()
        assert [call[2] for call in inner.calls] == [0, 1, 4]
        assert bg.dropped == ["epoch 2", "epoch 3"]
        bg.close()

    def test_close_waits_for_the_side_thread_before_closing_the_sinks(self) -> None:
        inner = Recorder(delay=0.05)
        bg = BackgroundTracker(inner)
        bg.offer(lambda: inner.log_image("maps", None, 7), "epoch 7")
        bg.close(RunStatus.FINISHED)
        assert inner.calls == [("log_image", "maps", 7), ("close", RunStatus.FINISHED)]
        with pytest.raises(RuntimeError, match="offered to a closed"):
            bg.offer(lambda: None, "late")

    def test_a_failing_job_is_counted_and_the_side_thread_goes_on(self, caplog: pytest.LogCaptureFixture) -> None:
        inner = Recorder(fail_on="log_image")
        bg = BackgroundTracker(inner)
        with caplog.at_level(logging.WARNING):
            bg.offer(lambda: inner.log_image("maps", None, 1), "epoch 1 pictures")
            bg.flush()
            bg.offer(lambda: inner.log_metrics({"a": 1.0}, 2), "epoch 2 statistics")
            bg.flush()
        assert bg.errors == 1 and "epoch 1 pictures failed: RuntimeError: log_image exploded" in caplog.text
        assert inner.calls == [("log_metrics", {"a": 1.0}, 2)]
        bg.close()

    def test_a_close_that_times_out_on_the_side_thread_says_so(self) -> None:
        gate = threading.Event()
        inner = Recorder(gate=gate)
        bg = BackgroundTracker(inner, close_timeout=0.2)
        bg.offer(lambda: inner.log_image("maps", None, 1), "stuck")
        assert inner.started.wait(10)
        bg.close()
        assert isinstance(bg.close_error, TimeoutError)
        gate.set()
