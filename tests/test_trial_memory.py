"""What a study's worker keeps of its trials: nothing. A pruned trial ends with an exception whose
traceback holds the trial's network, optimizer and batches (on a GPU its CUDA graphs and the data on
the device); the memory between trials must be released after that exception is gone, or the worker
keeps every pruned trial for the rest of its life."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import optuna
import pytest

import convscope.train.prepared as prepared_module
from convscope.cli.main import build_parser, parse
from convscope.cli.search_cmd import build_settings
from convscope.search.session import run_study


@pytest.mark.parametrize("pruned", [True, False])
def test_a_worker_keeps_nothing_of_its_finished_or_pruned_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 pruned: bool) -> None:
    built: list[weakref.ref] = []
    real_build = prepared_module.build_model

    def build_model(config):  # type: ignore[no-untyped-def]
        model = real_build(config)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(prepared_module, "build_model", build_model)
    if pruned:
        monkeypatch.setattr(optuna.Trial, "should_prune", lambda self: True)
    args = parse(build_parser(), ["search", "--runs-dir", str(tmp_path), "--preset", "tiny", "--image-size", "32",
                                  "--fix", "synthetic_size=300", "--fix", "epochs=2", "--trials", "3", "--jobs", "1",
                                  "--no-tensorboard", "--pruner", "median"])
    study = run_study(build_settings(args), echo=lambda line: None)
    states = {trial.state for trial in study.trials}
    assert states == {optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE}
    gc.collect()  # frozen objects are out of its reach: whatever survives this was kept for good
    assert len(built) == 3 and [ref for ref in built if ref() is not None] == []
