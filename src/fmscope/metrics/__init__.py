"""Metrics (numpy/scipy only, no torch): overlap, instance matching, classification and image similarity."""

from fmscope.metrics.binary import (
    MulticlassScores,
    SegmentationScores,
    binary_scores,
    dice,
    iou,
    multiclass_scores,
)
from fmscope.metrics.classification import ClassificationScores, classification_scores
from fmscope.metrics.image import psnr, ssim
from fmscope.metrics.instance import (
    InstanceMatch,
    InstanceScores,
    ThresholdScores,
    count_ratio,
    instance_scores,
    match_instances,
)

__all__ = [
    "ClassificationScores",
    "InstanceMatch",
    "InstanceScores",
    "MulticlassScores",
    "SegmentationScores",
    "ThresholdScores",
    "binary_scores",
    "classification_scores",
    "count_ratio",
    "dice",
    "instance_scores",
    "iou",
    "match_instances",
    "multiclass_scores",
    "psnr",
    "ssim",
]
