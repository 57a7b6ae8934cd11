"""The CPU thread policy (train/threads.py): pure logic, no timing."""

from __future__ import annotations

import os

import torch

from convscope.train import threads
from convscope.train.threads import ThreadChoice, choose_cpu_threads


def test_one_core_spare_by_default():
    assert choose_cpu_threads({}, 2).threads == 1
    assert choose_cpu_threads({}, 8).threads == 7
    assert choose_cpu_threads({}, 1).threads == 1
    assert choose_cpu_threads({}, 0).threads == 1  # os.cpu_count() unknown


def test_omp_num_threads_wins():
    assert choose_cpu_threads({"OMP_NUM_THREADS": "2"}, 2) == ThreadChoice(2, "OMP_NUM_THREADS")
    assert choose_cpu_threads({"OMP_NUM_THREADS": "3,1"}, 8).threads == 3  # nested-levels syntax
    assert choose_cpu_threads({"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "passive"}, 8, 2, 8).threads == 4


def test_bad_omp_num_threads_falls_back_to_the_policy():
    assert choose_cpu_threads({"OMP_NUM_THREADS": "lots"}, 4).threads == 3
    assert choose_cpu_threads({"OMP_NUM_THREADS": "0"}, 4).threads == 3
    assert choose_cpu_threads({"OMP_NUM_THREADS": ""}, 4).threads == 3


def test_a_count_the_program_set_is_kept():
    choice = choose_cpu_threads({}, 16, current=8, startup=16)  # e.g. a search worker splitting the cores
    assert choice == ThreadChoice(8, "set by the program")
    assert choose_cpu_threads({}, 16, current=16, startup=16).threads == 15


def test_passive_waiting_keeps_one_thread_per_core():
    assert choose_cpu_threads({"OMP_WAIT_POLICY": "PASSIVE"}, 2, 2, 2).threads == 2
    assert choose_cpu_threads({"OMP_WAIT_POLICY": "passive"}, 4).threads == 4
    assert choose_cpu_threads({"OMP_WAIT_POLICY": "active"}, 4).threads == 3


def test_the_line_names_the_choice_and_the_override():
    line = choose_cpu_threads({}, 2).line()
    assert line.startswith("cpu threads: 1 (") and "OMP_NUM_THREADS" in line


def test_apply_leaves_non_cpu_devices_alone(monkeypatch):
    lines: list[str] = []
    before = torch.get_num_threads()
    assert threads.apply_cpu_threads(torch.device("cuda"), lines.append) is None
    assert threads.apply_cpu_threads(torch.device("meta"), lines.append) is None
    assert lines == [] and torch.get_num_threads() == before


def test_apply_sets_and_echoes_on_cpu(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    lines: list[str] = []
    try:
        choice = threads.apply_cpu_threads(torch.device("cpu"), lines.append)
        assert choice is not None and choice.threads == 1 and torch.get_num_threads() == 1
        assert lines == [choice.line()]
    finally:
        torch.set_num_threads(before)


def test_a_run_alone_takes_the_cores_that_are_idle() -> None:
    from convscope.train.threads import idle_cores, threads_for_idle

    assert [threads_for_idle(4, idle) for idle in (4.0, 3.4, 2.6, 0.2, None)] == [4, 3, 3, 1, 4]
    assert threads_for_idle(2, 7.0) == 2  # never more than the cores
    measured = idle_cores(0.05)
    assert measured is None or 0.0 <= measured <= (os.cpu_count() or 1) + 1e-9
