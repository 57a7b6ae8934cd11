"""End-to-end ``convscope train`` runs on the synthetic data, read back from both stores."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from e2e_helpers import CONV_LAYERS_SEED, FAST, check_mlflow_run, convscope, only_run
from convscope.servers.servers import free_port, start_process_group, stop_process_group, tensorboard_command, wait_for_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("embedded") / "runs"
    done = convscope("train", "--epochs", "2", "--runs-dir", str(runs), "--quiet", *FAST)
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout
    return runs


def test_embedded_run_in_mlflow(embedded_run: Path, tmp_path: Path) -> None:
    run = only_run(f"sqlite:///{embedded_run / 'mlflow.db'}")
    check_mlflow_run(run, tmp_path)
    assert run.info.info.artifact_uri.startswith((embedded_run / "mlartifacts").as_uri())


def tensorboard_run_dir(runs: Path) -> Path:
    (run_dir,) = list((runs / "tensorboard" / "convscope").iterdir())
    return run_dir


def test_embedded_run_in_tensorboard_events(embedded_run: Path) -> None:
    events = EventAccumulator(str(tensorboard_run_dir(embedded_run)), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for layer in CONV_LAYERS_SEED:
        assert [e.step for e in events.Images(f"feature_maps/{layer}")] == [0, 1, 2]
        assert [e.step for e in events.Scalars(f"act_mean/{layer}")] == [0, 1, 2]
    assert [e.step for e in events.Images("saliency")] == [0, 1, 2]
    assert [e.step for e in events.Scalars("val/accuracy")] == [1, 2]
    image = events.Images("feature_maps/conv5")[0]
    assert 2.4 <= image.width / image.height <= 2.8  # wide, as every picture, even for 256 1x1 maps
    assert [e.step for e in events.Images("confusion_matrix")] == [2]  # after training, not "before"
    for layer in CONV_LAYERS_SEED:
        assert [e.step for e in events.Images(f"all_channels/{layer}")] == [0, 1, 2]


def test_tensorboard_server_serves_every_layer_every_epoch(embedded_run: Path) -> None:
    """A real ``tensorboard``, started the way ``convscope ui`` starts it, over HTTP."""
    port = free_port()
    log = embedded_run / "tb.log"
    proc = start_process_group(tensorboard_command(embedded_run / "tensorboard", "127.0.0.1", port), log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base, timeout=90, proc=proc, log_path=log)
        run_name = f"convscope/{tensorboard_run_dir(embedded_run).name}"
        deadline = time.monotonic() + 60
        while True:  # TensorBoard loads event files in the background
            tags = json.load(urllib.request.urlopen(f"{base}/data/plugin/images/tags"))
            if run_name in tags and all(f"feature_maps/{l}" in tags[run_name] for l in CONV_LAYERS_SEED):
                break
            assert time.monotonic() < deadline, tags
            time.sleep(1)
        for layer in CONV_LAYERS_SEED:
            query = urllib.parse.urlencode({"run": run_name, "tag": f"feature_maps/{layer}", "sample": 0})
            entries = json.load(urllib.request.urlopen(f"{base}/data/plugin/images/images?{query}"))
            assert [e["step"] for e in entries] == [0, 1, 2], layer
        png = urllib.request.urlopen(base + "/data/plugin/images/" + entries[-1]["query"].join(["individualImage?", ""])).read()
        assert png[:4] == b"\x89PNG"
    finally:
        stop_process_group(proc)
    assert proc.poll() is not None


def test_run_against_a_real_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = convscope(
        "train", "--epochs", "2", "--runs-dir", str(runs), "--quiet", "--experiment", "e2e-http",
        "--mlflow-uri", mlflow_server, "--no-tensorboard", *FAST,
    )
    assert done.returncode == 0, done.stderr
    run = only_run(mlflow_server, "e2e-http")
    assert run.info.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
    check_mlflow_run(run, tmp_path)
    assert f"{mlflow_server}/#/experiments/" in done.stdout and "workflowType=machine_learning" in done.stdout
    assert not (runs / "mlflow.db").exists()


def test_sigint_during_epoch_two_ends_killed_with_epoch_one_readable(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "convscope", "train", "--epochs", "5", "--runs-dir", str(runs),
         "--synthetic-size", "4000", "--preset", "seed", "--run-name", "stopped"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/5  train loss" in line:  # the summary line, printed once epoch 1 is logged
            break
    else:
        pytest.fail("".join(lines))
    time.sleep(0.3)  # inside epoch 2
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    said = re.search(r"ended killed; completed epochs stay browsable; the last complete epoch's checkpoint is (\S+); "
                     r"continue with: convscope train --resume (\S+)\n", output)
    assert said is not None and said[1] == said[2] == str(runs / "checkpoints" / "convscope" / "stopped"), output
    run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    assert run.info.info.status == "KILLED"
    assert 1 in run.metric_steps("val/accuracy")
    assert 1 in run.image_steps("feature_maps/conv3")
    assert 5 not in run.metric_steps("val/accuracy")
    events = EventAccumulator(str(tensorboard_run_dir(runs)), size_guidance={"images": 0})
    events.Reload()
    assert 1 in [e.step for e in events.Images("feature_maps/conv1")]


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = convscope("train", "--epochs", "1", "--runs-dir", str(runs), "--quiet", "--run-name", "r", *FAST)
    assert first.returncode == 0, first.stderr
    checkpoint = runs / "checkpoints" / "convscope" / "r"
    channels = json.loads((checkpoint / "config.json").read_text())["visual_channels"]
    assert set(channels) == set(CONV_LAYERS_SEED) and len(channels["conv3"]) == 10
    second = convscope("train", "--resume", str(checkpoint), "--epochs", "2", "--quiet")
    assert second.returncode == 0, second.stderr
    assert json.loads((checkpoint / "config.json").read_text())["visual_channels"] == channels  # same columns
    run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    assert run.info.info.status == "FINISHED"
    assert run.metric_steps("val/accuracy") == [1, 2]
    assert run.image_steps("feature_maps/conv1") == [0, 1, 2]  # step 0 exactly once


def test_resume_refuses_another_network_or_other_data_and_says_when_it_is_finished(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = convscope("train", "--epochs", "1", "--runs-dir", str(runs), "--quiet", "--run-name", "r", *FAST)
    assert first.returncode == 0, first.stderr
    checkpoint = str(runs / "checkpoints" / "convscope" / "r")
    for flags, needle in ((["--depth", "2"], "depth 5 → 2"), (["--widths", "8", "16", "32", "64", "128"], "widths"),
                          (["--data", "synthetic-depth2"], "data 'synthetic' → 'synthetic-depth2'")):
        done = convscope("train", "--resume", checkpoint, "--epochs", "2", "--quiet", *flags)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and needle in lines[0] and "--resume" in lines[0], done.stderr
    finished = convscope("train", "--resume", checkpoint, "--quiet")
    assert finished.returncode == 0, finished.stderr
    assert "already finished its 1 epoch (--epochs 1)" in finished.stdout and "nan" not in finished.stdout
    assert only_run(f"sqlite:///{runs / 'mlflow.db'}").metric_steps("val/accuracy") == [1]  # nothing logged again


def test_a_killed_run_is_ended_by_the_next_command_on_its_runs_folder(tmp_path: Path) -> None:
    """``kill -9`` of ``convscope train``: its run stays RUNNING until the next convscope command on the
    runs folder, which ends it KILLED with the reason and says so."""
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "train", "--runs-dir", str(runs), "--run-name", "victim",
                             "--epochs", "50", "--quiet", *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}"), time.monotonic() + 120
    while time.monotonic() < deadline:
        found = client.search_runs(["1"], "attributes.run_name = 'victim'") if (runs / "mlflow.db").exists() else []
        if found and found[0].data.metrics.get("val/accuracy") is not None:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the run did not get through an epoch")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    victim = found[0].info.run_id
    assert client.get_run(victim).info.status == "RUNNING"
    after = convscope("train", "--runs-dir", str(runs), "--run-name", "next", "--epochs", "1", "--quiet", *FAST)
    assert after.returncode == 0, after.stderr
    assert f"run victim ({victim}) ended killed: process {proc.pid} on " in after.stdout, after.stdout
    run = client.get_run(victim)
    assert run.info.status == "KILLED" and "is gone" in run.data.tags["convscope.killed"]
