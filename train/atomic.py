"""Replace a file atomically: readers see the old file or the whole new one, never a partial write."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(temp_path)`` for a uniquely named file next to ``path``, then rename it over ``path``.

    The temp name is random, not the pid: processes in different containers can share a volume
    and a pid. The writer creates the file, so it gets the usual umask permissions. If ``write``
    fails the temp file is removed and the error propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
