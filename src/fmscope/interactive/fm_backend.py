"""The ``fm`` backend: the random-forest prompter on our own pretrained features (plus the filter bank).

``embed`` windows the slice like the rf backend, runs the model folder's backbone (``fmscope pretrain`` or a task
folder of ``fmscope finetune``: anything :func:`fmscope.models.load_model` reads) and appends its full-resolution dense
features to the multi-scale filter features; ``predict`` is the rf backend's. A 3D backbone sees the slice as a slab
of ``divisor`` copies (the dense features of its middle plane are used); a 2D backbone sees the slice. The slice is
padded by reflection to a multiple of the network's downsampling factor and cropped back.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.interactive.protocol import file_stamp
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.models.serialization import load_model
from fmscope.models.shipped import resolve_model_dir
from fmscope.utils.device import resolve_device

logger = logging.getLogger(__name__)


class FoundationPrompter(RandomForestPrompter):
    """Promptable segmentation on pretrained features; keyword arguments go to :class:`RandomForestPrompter`."""

    name = "fm"

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir = resolve_model_dir(model_dir)  # a folder or a shipped name (``fmscope models``)
        self.device = resolve_device(device)
        self.backbone = load_model(self.model_dir, map_location="cpu").model.to(self.device).eval()
        config = self.backbone.config
        if config.in_channels != 1:
            raise InvalidInputError(
                f"model_dir: '{model_dir}' takes {config.in_channels} input channels; the fm backend feeds one"
            )
        self.divisor = int(config.divisor)
        self.spatial_dims = int(config.spatial_dims)

    def signature(self) -> dict[str, Any]:
        """The rf backend's settings and the model folder (its files' sizes)."""
        return {**super().signature(), "model_dir": file_stamp(self.model_dir)}

    def dense_features(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(Y, X, C)`` dense backbone features of a windowed 2D slice."""
        h, w = window.shape
        d = self.divisor
        padded = np.pad(window, ((0, -h % d), (0, -w % d)), mode="reflect")
        x = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None, None]
        if self.spatial_dims == 3:
            x = x[:, :, None].expand(-1, -1, d, -1, -1).contiguous()
        with torch.inference_mode():
            dense = self.backbone(x.to(self.device)).dense
        if self.spatial_dims == 3:
            dense = dense[:, :, d // 2]
        return np.ascontiguousarray(dense[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy())

    def features(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """The rf backend's filter-bank features with the backbone's dense features appended."""
        return np.concatenate([super().features(window), self.dense_features(window)], axis=-1)
