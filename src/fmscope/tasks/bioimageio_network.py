"""The network of an fmscope model exported to bioimage.io (``pytorch_state_dict`` weights): this file travels inside
the package as its architecture source, and rebuilds the dense network of a task model from the saved configuration.

``FmscopeDense(backbone=..., task=...)`` takes the two dictionaries of the package's ``rdf.yaml``
(``weights.pytorch_state_dict.architecture.kwargs``) and maps a preprocessed ``(B, C_in, *spatial)`` tensor to what
fmscope blends: class probabilities (segment) or the restored image (deblur). It needs ``fmscope`` installed (it builds
the MONAI network through it); the package's ``torchscript`` weights need only torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FmscopeDense(nn.Module):
    """An fmscope task model (backbone + head) whose ``forward`` is its dense output."""

    def __init__(self, backbone: dict[str, Any], task: dict[str, Any]) -> None:
        super().__init__()
        from fmscope.config import from_dict
        from fmscope.models import Backbone, BackboneConfig
        from fmscope.tasks.model import TaskModel, TaskSpec

        self.model = TaskModel(Backbone(from_dict(BackboneConfig, backbone)), from_dict(TaskSpec, task))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.dense(x)
