"""Classical segmentation baselines (thresholds, clean-up, connected components, watershed) on 2D/3D images."""

from fmscope.segment.classical import ClassicalConfig, ClassicalResult, segment_classical
from fmscope.segment.postprocess import clean_mask, label_components, narrow_labels, watershed_split
from fmscope.segment.threshold import local_threshold_mask, multiotsu_mask, threshold_mask, threshold_value

__all__ = [
    "ClassicalConfig",
    "ClassicalResult",
    "clean_mask",
    "label_components",
    "narrow_labels",
    "local_threshold_mask",
    "multiotsu_mask",
    "segment_classical",
    "threshold_mask",
    "threshold_value",
    "watershed_split",
]
