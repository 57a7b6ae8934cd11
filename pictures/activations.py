"""On-disk activation artifacts, read back by the "compare runs" step.

Every artifact is a pair of files with the same stem in one directory: a
safetensors file holding the tensors and a JSON file describing them. The JSON
is written last, so a pair whose JSON exists is complete. Format tag:
``"convscope.activations/1"``.

Probe activations, one pair per epoch (``kind = "probes"``), or a single pair ``latest.*`` rewritten
every epoch by a run that keeps only its latest epoch's (``--visual-epochs ends``)::

    epoch_0003.safetensors   one tensor per layer, key = layer name,
                             (P, C, h, w) float16, contiguous, values
                             clamped to ±65504 (float16's finite range)
    epoch_0003.json          {"format": "convscope.activations/1",
                              "kind": "probes",
                              "step": 3,
                              "layers": ["conv1", …],          # capture order
                              "shapes": {"conv1": [P, C, h, w], …},
                              "dtype": "float16",
                              "probe_ids": [str × P],          # row i ↔ probe i
                              "labels": [int × P],             # true class per probe
                              "class_names": [str × K]}

Pooled activations over an analysis set, one pair per run (``kind = "analysis"``)::

    analysis.safetensors     one (N, C) float16 tensor per layer (channel-mean
                             pooled, see ``capture.capture_pooled``; clamped to
                             float16's range, read back as float32) plus
                             "labels": (N,) int64
    analysis.json            {"format": "convscope.activations/1",
                              "kind": "analysis",
                              "layers": [...], "shapes": {layer: [N, C]},
                              "n": N, "class_names": [...],
                              "data_fingerprint": str,         # the data set (``Splits.fingerprint``)
                              "sample_ids_sha256": str}        # hex SHA-256 of the N sample ids, in row order

``labels`` is therefore a reserved name: no layer may be called that in an
analysis artifact. ``data_fingerprint`` and ``sample_ids_sha256`` are written
when the caller passes the sample ids (older artifacts lack them); two analysis
artifacts with equal values of both hold the same samples in the same rows. :func:`load_activations` returns the tensors (in the JSON's
layer order; for analysis artifacts followed by ``"labels"``) and the JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "convscope.activations/1"
LATEST_PROBES = "latest"  # the stem of the one probe pair of a run that keeps only its latest epoch's
_FLOAT16_MAX = 65504.0


def _check_layers(tensors: Mapping[str, Tensor], ndim: int, what: str) -> None:
    if not tensors:
        raise ValueError(f"no {what} activations to save; pass at least one layer")
    for name, tensor in tensors.items():
        if not name:
            raise ValueError("layer names must be non-empty strings")
        if tensor.dim() != ndim:
            raise ValueError(f"layer {name!r}: expected a {ndim}-D {what} tensor, got shape {tuple(tensor.shape)}")


def _half(tensor: Tensor) -> Tensor:
    """``tensor`` as contiguous float16 on the CPU, clamped to float16's finite range."""
    return tensor.detach().float().clamp(-_FLOAT16_MAX, _FLOAT16_MAX).to("cpu", torch.float16).contiguous()


def _write_pair(directory: Path, stem: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``stem.safetensors`` then ``stem.json``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path = directory / f"{stem}.safetensors"
    json_path = directory / f"{stem}.json"
    save_file(tensors, str(tensor_path), metadata={"format": FORMAT, "kind": str(meta["kind"])})
    json_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return tensor_path, json_path


def save_probe_activations(
    directory: Path,
    step: int,
    activations: Mapping[str, Tensor],
    *,
    probe_ids: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    stem: str | None = None,
) -> tuple[Path, Path]:
    """Write ``epoch_{step:04d}.safetensors`` and ``.json`` (or ``{stem}.*``, the step then only in the
    JSON) into ``directory`` (created if needed).

    ``activations`` maps layer → (P, C, h, w); ``probe_ids`` and ``labels`` have
    one entry per probe row. Returns (safetensors path, json path); existing
    files for the same step are overwritten. See the module docstring for the format.
    """
    _check_layers(activations, 4, "probe (P, C, h, w)")
    probes = {int(tensor.shape[0]) for tensor in activations.values()}
    if len(probes) != 1:
        raise ValueError(f"layers disagree on the number of probes: {sorted(probes)}")
    count = probes.pop()
    if len(probe_ids) != count or len(labels) != count:
        raise ValueError(f"{count} probes but {len(probe_ids)} probe_ids and {len(labels)} labels; pass one of each per probe")
    tensors = {name: _half(tensor) for name, tensor in activations.items()}
    meta = {
        "format": FORMAT,
        "kind": "probes",
        "step": int(step),
        "layers": list(tensors),
        "shapes": {name: list(tensor.shape) for name, tensor in tensors.items()},
        "dtype": "float16",
        "probe_ids": [str(probe) for probe in probe_ids],
        "labels": [int(label) for label in labels],
        "class_names": [str(name) for name in class_names],
    }
    return _write_pair(directory, stem or f"epoch_{int(step):04d}", tensors, meta)


def sample_ids_sha256(sample_ids: Sequence[str]) -> str:
    """Hex SHA-256 of ``sample_ids`` in order (JSON-encoded, so no two id lists collide by joining)."""
    return hashlib.sha256(json.dumps([str(i) for i in sample_ids]).encode("utf-8")).hexdigest()


def save_analysis_activations(
    directory: Path,
    pooled: Mapping[str, Tensor],
    *,
    labels: Sequence[int] | Tensor,
    class_names: Sequence[str],
    sample_ids: Sequence[str] | None = None,
    data_fingerprint: str = "",
) -> tuple[Path, Path]:
    """Write ``analysis.safetensors`` and ``analysis.json`` into ``directory`` (created if needed).

    ``pooled`` maps layer → (N, C) (``capture.capture_pooled``); ``labels`` has
    N class indices; ``sample_ids`` (optional) the N samples' ids, stored as a hash
    beside ``data_fingerprint``. Returns (safetensors path, json path).
    """
    _check_layers(pooled, 2, "pooled (N, C)")
    if "labels" in pooled:
        raise ValueError("'labels' is reserved in analysis artifacts; rename that layer")
    label_tensor = torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(-1).contiguous()
    counts = {int(tensor.shape[0]) for tensor in pooled.values()} | {int(label_tensor.shape[0])}
    if len(counts) != 1:
        raise ValueError(f"layers and labels disagree on the number of samples: {sorted(counts)}")
    if sample_ids is not None and len(sample_ids) != int(label_tensor.shape[0]):
        raise ValueError(f"{int(label_tensor.shape[0])} samples but {len(sample_ids)} sample_ids; pass one per sample")
    tensors = {name: _half(tensor) for name, tensor in pooled.items()}
    meta = {
        "format": FORMAT,
        "kind": "analysis",
        "layers": list(tensors),
        "shapes": {name: list(tensor.shape) for name, tensor in tensors.items()},
        "n": int(label_tensor.shape[0]),
        "dtype": "float16",
        "class_names": [str(name) for name in class_names],
    }
    if sample_ids is not None:
        meta["data_fingerprint"] = str(data_fingerprint)
        meta["sample_ids_sha256"] = sample_ids_sha256(sample_ids)
    tensors["labels"] = label_tensor
    return _write_pair(directory, "analysis", tensors, meta)


def load_activations(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an artifact pair given its ``.safetensors`` (or ``.json``) path.

    Returns (tensors, meta): tensors on CPU, ordered as ``meta["layers"]``
    (analysis artifacts also carry ``"labels"`` last); meta is the parsed JSON.
    Raises ValueError naming the file when the JSON is missing, unreadable or
    of an unknown format, and FileNotFoundError when the tensors are missing.
    """
    path = Path(path)
    tensor_path, json_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not json_path.is_file():
        raise ValueError(f"{json_path} is missing; an activation artifact needs its JSON beside {tensor_path.name}")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{json_path} is not readable JSON: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{json_path} has format {found!r}; this convscope reads {FORMAT!r}")
    if not tensor_path.is_file():
        raise FileNotFoundError(f"{tensor_path} is missing (its JSON {json_path.name} exists)")
    loaded = load_file(str(tensor_path))
    if meta.get("kind") == "analysis":  # stored in half precision (older artifacts: float32), used as float32
        loaded = {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in loaded.items()}
    order = [name for name in meta.get("layers", []) if name in loaded]
    order += [name for name in loaded if name not in order]
    return {name: loaded[name] for name in order}, meta
