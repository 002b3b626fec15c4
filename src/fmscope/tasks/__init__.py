"""Fine-tuning tasks: segmentation, classification and deblurring from a pretrained or random backbone."""

from fmscope.data.degradation import DegradationConfig, degrade, degrade_torch
from fmscope.data.labelled import LabelledItem, LabelledSet, check_train_val, load_labelled, stack_slices
from fmscope.data.labels import LabelMapping, check_label
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import FinetuneResult, finetune, validate
from fmscope.tasks.model import (
    TaskModel,
    TaskSpec,
    collapse_depth,
    init_backbone,
    load_task_model,
    save_task_model,
)
from fmscope.tasks.predict import PredictionResult, classify_array, predict_array, predict_file
from fmscope.tasks.restoration import DeblurLossWeights, deblur_loss, restoration_metrics

__all__ = [
    "DeblurLossWeights",
    "DegradationConfig",
    "FinetuneConfig",
    "FinetuneResult",
    "LabelMapping",
    "LabelledItem",
    "LabelledSet",
    "PredictionResult",
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
    "init_backbone",
    "load_labelled",
    "load_task_model",
    "predict_array",
    "predict_file",
    "restoration_metrics",
    "save_task_model",
    "stack_slices",
    "validate",
]
