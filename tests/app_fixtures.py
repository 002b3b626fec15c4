"""A data folder and app clients for the web app's tests (API and browser)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.io import ImageMetadata, write_image

SHAPE = (9, 64, 80)
CENTRES = ((20, 22), (42, 56))  # (y, x) of the two balls on the middle slice


def ball_stack() -> tuple[np.ndarray, np.ndarray]:
    """(9, 64, 80) uint16: two bright balls spanning slices 1..7, and their labels (1, 2)."""
    rng = np.random.default_rng(5)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    labels = np.zeros(SHAPE, np.uint8)
    for k, (y, x) in enumerate(CENTRES, start=1):
        labels[(2.5 * (zz - 4)) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 10**2] = k
    image = (800 + 900 * (labels > 0) + rng.normal(0, 70, SHAPE)).astype(np.uint16)
    return image, labels


def make_data_root(root: Path) -> dict[str, Any]:
    """A data folder: a stack and its labels, an OME-Zarr copy, a 2-channel volume, a 2D image, an unreadable
    file, a folder of slices, and a text file; plus a secret next to the root and a link pointing at it."""
    image, labels = ball_stack()
    meta = ImageMetadata.for_array(image, spacing=(2.0, 0.5, 0.5), unit="micrometer")
    (root / "stacks").mkdir(parents=True)
    write_image(root / "stacks" / "balls.tif", image, meta)
    write_image(root / "stacks" / "balls_labels.tif", labels, meta, labels=True)
    write_image(root / "stacks" / "balls.ome.zarr", image, meta)
    two = np.stack([image, image[::-1]])
    write_image(root / "stacks" / "two_channels.tif", two, ImageMetadata.for_array(two, axes="CZYX"))
    write_image(root / "plain.tif", image[4], ImageMetadata.for_array(image[4]))
    (root / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF at all")
    write_image(root / "slices", image[:3], ImageMetadata.for_array(image[:3]))
    (root / "notes.txt").write_text("not an image")
    secret = root.parent / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "private.tif").write_bytes(b"secret")
    (root / "escape").symlink_to(secret, target_is_directory=True)
    return {"image": image, "labels": labels}


def wait_job(client: Any, job: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it ends (the page does the same)."""
    t0 = time.time()
    status = job
    while status["state"] in ("queued", "running"):
        if time.time() - t0 > timeout:
            raise TimeoutError(f"job {job['id']} still {status['state']} after {timeout} s")
        time.sleep(0.05)
        status = client.get(f"/api/jobs/{job['id']}").json()
    return status


def raw_array(response: Any) -> np.ndarray:
    """The raw pixels of a slice or labels response."""
    shape = tuple(int(v) for v in response.headers["x-shape"].split(","))
    return np.frombuffer(response.content, dtype=np.dtype(response.headers["x-dtype"]).newbyteorder("<")).reshape(shape)
