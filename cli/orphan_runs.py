"""What every command on a runs folder does first: end the runs whose process is gone (KILLED, with
the reason in the tag ``convscope.killed``), one line each."""

from __future__ import annotations

from typing import Any


def end_orphaned_runs(stores: Any) -> None:
    """``tracking.orphans.close_orphans`` on ``stores``' MLflow store (an embedded one only if it exists)."""
    if stores.embedded and not stores.layout.mlflow_db.is_file():
        return
    from convscope.tracking.orphans import close_orphans
    from convscope.tracking.stores import first_open_lock

    try:
        with first_open_lock(stores):  # a store another process is creating right now is read once it is complete
            ended = close_orphans(stores.mlflow_uri)
    except OSError:  # a read-only runs folder: nothing can be closed there, and reading it needs no lock
        return
    for run_id, name, reason in ended:
        print(f"run {name} ({run_id}) ended killed: {reason}")
