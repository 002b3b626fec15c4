"""napari sample data: the quickstart phantoms (synthetic, exact ground truth), as an image and a Labels layer."""

from __future__ import annotations

from typing import Any

from fmscope.data import Phantom, em_stack_phantom, lightsheet_phantom


def _layers(phantom: Phantom, name: str) -> list[tuple[Any, dict[str, Any], str]]:
    scale = tuple(phantom.spacing)
    meta = {"fmscope": {"unit": phantom.unit, "classes": list(phantom.class_names), "caption": phantom.caption}}
    return [
        (phantom.image, {"name": name, "scale": scale, "metadata": meta}, "image"),
        (phantom.instances, {"name": f"{name} objects (truth)", "scale": scale, "metadata": meta}, "labels"),
    ]


def lightsheet() -> list[tuple[Any, dict[str, Any], str]]:
    """A 64 x 96 x 96 light-sheet phantom (nuclei, plaques, vessels), seed 0."""
    return _layers(lightsheet_phantom(seed=0), "light-sheet phantom")


def em_stack() -> list[tuple[Any, dict[str, Any], str]]:
    """A 32 x 128 x 128 FIB-SEM phantom (a porous layer with drifting particles), seed 0."""
    return _layers(em_stack_phantom(seed=0), "FIB-SEM phantom")
