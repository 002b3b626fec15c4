"""The one device resolver: ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.

An unknown name or a device that is not available raises :class:`~fmscope.errors.InvalidInputError` naming the
parameter; under ``torchrun`` ``'auto'`` picks the process's ``LOCAL_RANK`` GPU.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fmscope.errors import InvalidInputError

if TYPE_CHECKING:
    import torch


def resolve_device(name: object = "auto", *, what: str = "device") -> torch.device:
    """The ``torch.device`` of ``name`` (see the module doc); ``what`` names the parameter in errors."""
    import torch

    if not isinstance(name, str | torch.device):
        raise InvalidInputError(f"{what}: expected 'auto', 'cpu', 'cuda[:N]' or 'mps', got {name!r}")
    if str(name) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))
        if not local.isdigit() or int(local) >= torch.cuda.device_count():
            raise InvalidInputError(
                f"LOCAL_RANK: expected a GPU index below {torch.cuda.device_count()} for {what}='auto', got {local!r}"
            )
        return torch.device("cuda", int(local))
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(f"{what}: expected 'auto', 'cpu', 'cuda[:N]' or 'mps', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"{what}: {str(name)!r} requested on a machine without CUDA (use 'cpu' or 'auto')")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"{what}: {str(name)!r} requested on a machine without MPS (use 'cpu' or 'auto')")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"{what}: expected 'auto', 'cpu', 'cuda[:N]' or 'mps', got {name!r}")
    return device
