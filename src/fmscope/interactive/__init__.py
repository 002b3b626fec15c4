"""Zero-shot and interactive segmentation: prompts, promptable-model backends (rf, fm, sam, sam2), propagation
through stacks with slice-to-slice enhancement, the human-in-the-loop session and the simulated annotator.

The names below are imported on first use (PEP 562), so that ``fmscope --help`` and the backend table do not load
the whole package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "BACKENDS": "backends",
    "backend_status": "backends",
    "make_backend": "backends",
    "EnhanceConfig": "enhance",
    "enhance": "enhance",
    "PromptedResult": "pipeline",
    "StackConfig": "pipeline",
    "propagate": "pipeline",
    "segment_automatic": "pipeline",
    "segment_prompted": "pipeline",
    "ObjectPrompt": "prompts",
    "load_prompts": "prompts",
    "parse_prompts": "prompts",
    "save_prompts": "prompts",
    "PropagationConfig": "propagate",
    "SliceEmbeddings": "propagate",
    "PromptableModel": "protocol",
    "PromptMask": "protocol",
    "Session": "session",
}

if TYPE_CHECKING:
    from fmscope.interactive.backends import BACKENDS, backend_status, make_backend
    from fmscope.interactive.enhance import EnhanceConfig, enhance
    from fmscope.interactive.pipeline import PromptedResult, StackConfig, propagate, segment_automatic, segment_prompted
    from fmscope.interactive.prompts import ObjectPrompt, load_prompts, parse_prompts, save_prompts
    from fmscope.interactive.propagate import PropagationConfig, SliceEmbeddings
    from fmscope.interactive.protocol import PromptableModel, PromptMask
    from fmscope.interactive.session import Session


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'fmscope.interactive' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fmscope.interactive.{_WHERE[name]}"), name)


__all__ = [
    "BACKENDS",
    "backend_status",
    "EnhanceConfig",
    "ObjectPrompt",
    "PromptMask",
    "PromptableModel",
    "PromptedResult",
    "PropagationConfig",
    "Session",
    "SliceEmbeddings",
    "StackConfig",
    "enhance",
    "load_prompts",
    "make_backend",
    "parse_prompts",
    "propagate",
    "save_prompts",
    "segment_automatic",
    "segment_prompted",
]
