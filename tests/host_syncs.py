"""What a CUDA graph capture refuses, made visible on the CPU: ``HostSyncs`` records every operation
that would copy a value between the host and the device (``Tensor.item`` and every implicit
tensor-to-scalar conversion end in ``aten._local_scalar_dense``; a tensor made from Python data,
``torch.tensor(...)``, is ``aten.lift_fresh``, on CUDA a copy from pageable host memory).
``capturable_on_cpu`` lets torch's ``capturable`` optimizers run on a CPU, which torch refuses; the
update code that runs is the one a CUDA capture records."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_SYNCS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default, torch.ops.aten.lift_fresh.default)


class HostSyncs(TorchDispatchMode):
    """Records every operation that would copy a value between the host and the device."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in HOST_SYNCS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def capturable_on_cpu() -> Iterator[None]:
    adam = importlib.import_module("torch.optim.adam")  # torch.optim hides the module's name
    supported = adam._get_capturable_supported_devices
    adam._get_capturable_supported_devices = lambda supports_xla=True: [*supported(supports_xla), "cpu"]
    try:
        yield
    finally:
        adam._get_capturable_supported_devices = supported
