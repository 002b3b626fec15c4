"""Zero-shot and interactive segmentation: prompts, promptable-model backends, propagation through stacks."""

from fmscope.interactive.prompts import ObjectPrompt, load_prompts, parse_prompts, save_prompts

__all__ = ["ObjectPrompt", "load_prompts", "parse_prompts", "save_prompts"]
