"""``convscope ui``: the MLflow UI, TensorBoard and (with a study) optuna-dashboard on the runs folder."""

from __future__ import annotations

import argparse
import os
import sys
import time

from convscope.train.errors import ConfigError


def add_ui_parser(subparsers: argparse._SubParsersAction) -> None:
    from convscope.tracking.stores import DEFAULT_MLFLOW_PORT, DEFAULT_TENSORBOARD_PORT, DEFAULT_UI_HOST

    parser = subparsers.add_parser(
        "ui",
        help="start the MLflow UI and TensorBoard on the runs folder",
        description="Start `mlflow ui` and `tensorboard` against the embedded stores and print both URLs.",
    )
    parser.add_argument("--runs-dir", default="runs", help="the runs folder (default: runs)")
    parser.add_argument("--host", default=DEFAULT_UI_HOST, help=f"address to bind (default: {DEFAULT_UI_HOST})")
    parser.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT, help="MLflow UI port (default: 5000)")
    parser.add_argument(
        "--tensorboard-port", type=int, default=DEFAULT_TENSORBOARD_PORT, help="TensorBoard port (default: 6006)"
    )
    parser.add_argument("--dashboard-port", type=int, default=8080,
                        help="optuna-dashboard port, started when the runs folder holds a study (default: 8080)")
    parser.set_defaults(handler=handle_ui)


def handle_ui(args: argparse.Namespace) -> int:
    """Start the UIs and wait. Ctrl-C, SIGTERM, SIGHUP (the terminal closed) and the death of the
    process that started this one all stop every server it started (``stop_process_group``); a
    SIGKILL of this process is handled by each server's guard (``servers.servers``). Started with
    SIGHUP ignored (``nohup convscope ui &``) it outlives the shell that started it: only Ctrl-C and
    SIGTERM (``kill PID``) stop it."""
    import signal

    from convscope.train.interrupts import end_with_parent, sigterm_as_interrupt

    detached = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    with sigterm_as_interrupt(hangup=not detached):
        if not detached:
            end_with_parent()
        return _serve_uis(args)


def _serve_uis(args: argparse.Namespace) -> int:
    from convscope.servers.servers import (
        UI_MLFLOW_WORKERS,
        mlflow_server_command,
        optuna_dashboard_command,
        start_process_group,
        stop_process_group,
        tensorboard_command,
        wait_for_http,
    )
    from convscope.tracking.stores import resolve_stores

    from convscope.cli.serve_cmd import check_host, check_port, check_port_free
    from convscope.tracking.faults import check_writable

    for flag in ("--mlflow-port", "--tensorboard-port", "--dashboard-port"):
        check_port(getattr(args, flag[2:].replace("-", "_")), flag)
    check_host(args.host)
    stores = resolve_stores(args.runs_dir)
    if not stores.embedded:
        raise ConfigError("MLFLOW_TRACKING_URI points at a server: open that server's own UI instead of `convscope ui`")
    runs = stores.runs_dir
    if not runs.is_dir():
        raise ConfigError(f"--runs-dir {args.runs_dir}: no such folder; train a run first (convscope train)")
    check_writable(runs, "--runs-dir")  # the servers' logs and MLflow's store are written there
    journal = stores.layout.study_journal
    for flag in ("--mlflow-port", "--tensorboard-port", *(("--dashboard-port",) if journal.is_file() else ())):
        check_port_free(args.host, getattr(args, flag[2:].replace("-", "_")), flag)  # the dashboard serves studies
    from convscope.cli.orphan_runs import end_orphaned_runs

    end_orphaned_runs(stores)
    logs = stores.layout.logs
    logs.mkdir(exist_ok=True)
    processes = []
    try:
        mlflow_cmd = mlflow_server_command(stores.mlflow_uri, args.host, args.mlflow_port, ui_only=True,
                                           workers=UI_MLFLOW_WORKERS)
        tensorboard_cmd = tensorboard_command(stores.tensorboard_root, args.host, args.tensorboard_port)
        stores.tensorboard_root.mkdir(parents=True, exist_ok=True)
        processes.append(start_process_group(mlflow_cmd, logs / "mlflow-ui.log"))
        processes.append(start_process_group(tensorboard_cmd, logs / "tensorboard.log"))
        mlflow_url = f"http://{args.host}:{args.mlflow_port}"
        tensorboard_url = f"http://{args.host}:{args.tensorboard_port}"
        if journal.is_file():
            processes.append(start_process_group(
                optuna_dashboard_command(journal, args.host, args.dashboard_port), logs / "optuna-dashboard.log"
            ))
        wait_for_http(mlflow_url + "/health", timeout=60, proc=processes[0])
        shown = mlflow_url.replace("://0.0.0.0:", "://127.0.0.1:")
        stores.layout.ui_address.write_text(f"{shown} {os.getpid()}\n")  # where other commands' links point
        wait_for_http(tensorboard_url, timeout=60, proc=processes[1])
        print(f"MLflow:      {mlflow_url}/#/experiments?workflowType=machine_learning")
        print(f"TensorBoard: {tensorboard_url}")
        if journal.is_file():
            dashboard_url = f"http://{args.host}:{args.dashboard_port}"
            wait_for_http(dashboard_url, timeout=60, proc=processes[2])
            print(f"Optuna:      {dashboard_url}")
        print(f"Ctrl-C stops {'both' if len(processes) == 2 else 'all three'}.", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        print("a UI process exited; see " + str(logs), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stores.layout.ui_address.unlink(missing_ok=True)
        for process in processes:
            stop_process_group(process)
