"""Data layer: synthetic phantoms with exact ground truth (manifests, patch sampling and augmentations to come)."""

from fmscope.data.phantoms import EM_CLASSES, LIGHTSHEET_STRUCTURES, Phantom, em_stack_phantom, lightsheet_phantom

__all__ = ["EM_CLASSES", "LIGHTSHEET_STRUCTURES", "Phantom", "em_stack_phantom", "lightsheet_phantom"]
