"""What every command on a runs folder does first: end the runs whose process is gone (KILLED, with
the reason in the tag ``convscope.killed``), one line each."""

from __future__ import annotations

from typing import Any


def end_orphaned_runs(stores: Any) -> None:
    """``tracking.orphans.close_orphans`` on ``stores``' MLflow store (an embedded one only if it exists)."""
    if stores.embedded and not stores.layout.mlflow_db.is_file():
        return
    from convscope.tracking.orphans import close_orphans

    for run_id, name, reason in close_orphans(stores.mlflow_uri):
        print(f"run {name} ({run_id}) ended killed: {reason}")
