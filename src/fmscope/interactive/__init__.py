"""Zero-shot and interactive segmentation: prompts, promptable-model backends (rf, fm, sam, sam2), propagation
through stacks with slice-to-slice enhancement, the human-in-the-loop session and the simulated annotator."""

from fmscope.interactive.backends import BACKENDS, backend_status, make_backend
from fmscope.interactive.enhance import EnhanceConfig, enhance
from fmscope.interactive.pipeline import PromptedResult, StackConfig, propagate, segment_automatic, segment_prompted
from fmscope.interactive.prompts import ObjectPrompt, load_prompts, parse_prompts, save_prompts
from fmscope.interactive.propagate import PropagationConfig, SliceEmbeddings
from fmscope.interactive.protocol import PromptableModel, PromptMask
from fmscope.interactive.session import Session

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
