"""Evaluation: comparing predictions with ground truth, reports, the quickstart pipeline."""

from fmscope.evaluation.masks import MaskEvaluation, binarize, evaluate_segmentation

__all__ = ["MaskEvaluation", "binarize", "evaluate_segmentation"]
