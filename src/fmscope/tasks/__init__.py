"""Fine-tuning tasks as plug-ins (segment, classify, deblur; :mod:`fmscope.tasks.registry`), one training recipe for
all of them, and prediction of any-size images with a fine-tuned model.

The names below are imported on first use (PEP 562), so that the CLI can list the registered tasks without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Task": "fmscope.tasks.base",
    "validate": "fmscope.tasks.base",
    "FinetuneConfig": "fmscope.tasks.config",
    "FinetuneResult": "fmscope.tasks.finetune",
    "finetune": "fmscope.tasks.finetune",
    "TaskModel": "fmscope.tasks.model",
    "TaskSpec": "fmscope.tasks.model",
    "collapse_depth": "fmscope.tasks.model",
    "init_backbone": "fmscope.tasks.model",
    "load_task_model": "fmscope.tasks.model",
    "save_task_model": "fmscope.tasks.model",
    "PredictionResult": "fmscope.tasks.predict",
    "classify_array": "fmscope.tasks.predict",
    "predict_array": "fmscope.tasks.predict",
    "predict_file": "fmscope.tasks.predict",
    "get_task": "fmscope.tasks.registry",
    "register_task": "fmscope.tasks.registry",
    "task_names": "fmscope.tasks.registry",
    "unregister_task": "fmscope.tasks.registry",
    "DeblurLossWeights": "fmscope.tasks.restoration",
    "deblur_loss": "fmscope.tasks.restoration",
    "restoration_metrics": "fmscope.tasks.restoration",
    # labelled data and degradation live in fmscope.data; kept here for the fine-tuning API in one place
    "DegradationConfig": "fmscope.data.degradation",
    "degrade": "fmscope.data.degradation",
    "degrade_torch": "fmscope.data.degradation",
    "LabelledItem": "fmscope.data.labelled",
    "LabelledSet": "fmscope.data.labelled",
    "check_train_val": "fmscope.data.labelled",
    "load_labelled": "fmscope.data.labelled",
    "stack_slices": "fmscope.data.labelled",
    "LabelMapping": "fmscope.data.labels",
    "check_label": "fmscope.data.labels",
}

if TYPE_CHECKING:
    from fmscope.data.degradation import DegradationConfig, degrade, degrade_torch
    from fmscope.data.labelled import LabelledItem, LabelledSet, check_train_val, load_labelled, stack_slices
    from fmscope.data.labels import LabelMapping, check_label
    from fmscope.tasks.base import Task, validate
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.finetune import FinetuneResult, finetune
    from fmscope.tasks.model import (
        TaskModel,
        TaskSpec,
        collapse_depth,
        init_backbone,
        load_task_model,
        save_task_model,
    )
    from fmscope.tasks.predict import PredictionResult, classify_array, predict_array, predict_file
    from fmscope.tasks.registry import get_task, register_task, task_names, unregister_task
    from fmscope.tasks.restoration import DeblurLossWeights, deblur_loss, restoration_metrics


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'fmscope.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "DeblurLossWeights",
    "DegradationConfig",
    "FinetuneConfig",
    "FinetuneResult",
    "LabelMapping",
    "LabelledItem",
    "LabelledSet",
    "PredictionResult",
    "Task",
    "TaskModel",
    "TaskSpec",
    "check_label",
    "check_train_val",
    "classify_array",
    "collapse_depth",
    "deblur_loss",
    "degrade",
    "degrade_torch",
    "finetune",
    "get_task",
    "init_backbone",
    "load_labelled",
    "load_task_model",
    "predict_array",
    "predict_file",
    "register_task",
    "restoration_metrics",
    "save_task_model",
    "stack_slices",
    "task_names",
    "unregister_task",
    "validate",
]
