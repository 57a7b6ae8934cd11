"""TensorBoard HParams: one experiment config per study folder, one session per trial run.

Read back twice: from the event files (which folders hold which hparams summaries) and
through a real ``tensorboard`` server's hparams plugin HTTP API, with request bodies
shaped like the ones the HParams dashboard posts.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from convscope.tracking.base import RunStatus
from convscope.tracking.hparams import (
    RUN_STATUS_TO_SESSION_STATUS,
    session_end_summary,
    session_status,
    write_experiment_config,
)
from convscope.servers.servers import free_port, start_process_group, stop_process_group, tensorboard_command, wait_for_http
from convscope.tracking.tensorboard_sink import TensorBoardTracker

DOMAINS: dict[str, list[Any] | None] = {"depth": [2, 3, 4], "width": None, "dropout": None, "act": ["relu", "gelu"]}
METRIC = "val/accuracy"
TRIALS = {  # run folder -> (hparams, close status, last val/accuracy)
    "trial_0000": ({"depth": 2, "width": 16, "dropout": 0.1, "act": "relu"}, RunStatus.FINISHED, 0.75),
    "trial_0001": ({"depth": 3, "width": 32, "dropout": 0.25, "act": "gelu"}, RunStatus.PRUNED, 0.55),
    "trial_0002": ({"depth": 4, "width": 8, "dropout": 0.0, "act": "relu"}, RunStatus.FAILED, 0.5),
}
EXPECTED_STATUS = {"trial_0000": "STATUS_SUCCESS", "trial_0001": "STATUS_UNKNOWN", "trial_0002": "STATUS_FAILURE"}
HPARAMS_TAGS = {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder: the experiment config at its root, three trial runs below it."""
    study = tmp_path_factory.mktemp("tb") / "convscope" / "study-a"
    write_experiment_config(study, DOMAINS, [METRIC])
    for run, (hparams, status, last) in TRIALS.items():
        tracker = TensorBoardTracker(study / run, hparams=hparams)
        for epoch, value in enumerate([0.5, (0.5 + last) / 2, last]):
            tracker.log_metrics({METRIC: value, "train/loss": 1.0 - value}, step=epoch)
        tracker.close(status)
    return study


def hparams_tags(run_dir: Path) -> dict[str, bytes]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.PluginTagToContent("hparams")


def test_status_mapping_covers_every_run_status() -> None:
    assert set(RUN_STATUS_TO_SESSION_STATUS) == set(RunStatus)
    assert session_status(RunStatus.FINISHED) == "SUCCESS"
    assert session_status(RunStatus.KILLED) == "FAILURE"
    with pytest.raises(ValueError, match="unknown hparams session status"):
        session_end_summary("PRUNED")


def test_event_files_hold_one_config_and_one_session_per_trial(study_dir: Path) -> None:
    event_dirs = {path.parent.relative_to(study_dir).as_posix() for path in study_dir.rglob("events.out.tfevents.*")}
    assert event_dirs == {".", *TRIALS}  # no extra run folders (add_hparams would add one per call)
    assert set(hparams_tags(study_dir)) == {"_hparams_/experiment"}
    for run in TRIALS:
        assert set(hparams_tags(study_dir / run)) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}


def test_tensorboard_constructor_rejects_unsupported_hparam(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'shape'"):
        TensorBoardTracker(tmp_path / "run", hparams={"shape": {"a": 1}})
    with pytest.raises(ValueError, match="domain"):
        write_experiment_config(tmp_path, {"depth": []}, [METRIC])


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_tensorboard_hparams_plugin_lists_every_trial(study_dir: Path, tmp_path: Path) -> None:
    """A real ``tensorboard`` on the study folder, started the way ``convscope ui`` starts it."""
    port = free_port()
    log = tmp_path / "tb.log"
    proc = start_process_group(tensorboard_command(study_dir, "127.0.0.1", port), log)
    base = f"http://127.0.0.1:{port}"
    # The bodies the HParams dashboard posts (tf-hparams-query-pane / tf-hparams-main).
    metric_name = {"group": "", "tag": METRIC}
    groups_request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"],
        "colParams": [{"hparam": name, "includeInResult": True} for name in DOMAINS]
        + [{"metric": metric_name, "includeInResult": True}],
        "startIndex": 0,
        "sliceSize": 100,
    }
    try:
        wait_for_http(base, timeout=90, proc=proc, log_path=log)
        deadline = time.monotonic() + 60
        while True:  # TensorBoard loads event files in the background
            groups = post_json(f"{base}/data/plugin/hparams/session_groups", groups_request)
            sessions = [s for g in groups.get("sessionGroups", []) for s in g["sessions"]]
            if len(sessions) == len(TRIALS) and all(s.get("metricValues") for s in sessions):
                break
            assert time.monotonic() < deadline, groups
            time.sleep(1)
        experiment = post_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})
        runs = json.load(urllib.request.urlopen(f"{base}/data/runs"))
    finally:
        stop_process_group(proc)

    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert set(infos) == set(DOMAINS)
    assert infos["depth"]["type"] == "DATA_TYPE_FLOAT64" and infos["depth"]["domainDiscrete"] == [2, 3, 4]
    assert infos["act"]["type"] == "DATA_TYPE_STRING" and infos["act"]["domainDiscrete"] == ["gelu", "relu"]  # sorted by summary_v2
    assert [m["name"] for m in experiment["metricInfos"]] == [metric_name]

    assert sorted(runs) == sorted([".", *TRIALS])
    assert groups["totalSize"] == len(TRIALS)
    by_name = {group["name"]: group for group in groups["sessionGroups"]}
    assert set(by_name) == set(TRIALS)  # no group name: each trial is its own group
    for run, (hparams, _status, last) in TRIALS.items():
        group = by_name[run]
        assert group["hparams"] == hparams
        (session,) = group["sessions"]
        assert session["status"] == EXPECTED_STATUS[run]
        assert session["endTimeSecs"] >= session["startTimeSecs"] > 0
        (metric,) = session["metricValues"]
        assert metric["name"] == metric_name
        assert metric["value"] == pytest.approx(last) and metric["trainingStep"] == 2
