"""Shared pytest fixtures and test helpers.

pytest's default ``prepend`` import mode puts this folder (no ``__init__.py``) on ``sys.path`` and imports this file
as the module ``conftest``; test modules import the plain helpers below with ``from conftest import ...`` (as they do
``app_fixtures`` and ``session_fakes``). Heavy packages (torch, transformers, fmscope.data) are imported inside the
helpers, so that collecting a numpy-only test module stays light.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from numpy.typing import DTypeLike


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (``../shared/data`` next to the repo, or $FMSCOPE_SHARED_DATA); skip when absent."""
    env = os.environ.get("FMSCOPE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (set FMSCOPE_SHARED_DATA to its location)")
    return path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, oversubscribed OpenMP threads make each step ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the CLI in process
def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``fmscope ARGV...`` in this process: (exit code, stdout, stderr)."""
    from fmscope.cli.main import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- a tiny BERT for the text tower
BERT_WORDS = ["nuclei", "cell", "cells", "image", "of", "a", "the", "stained", "with", "dapi", "confocal", "photo"]
BERT_WORDS += ["cat", "membrane", "mitochondria", "em", "volume"]


def make_tiny_bert(folder: Path, layers: int = 2) -> Path:
    """A random BERT (hidden 32, ``layers`` layers, 4 heads) and a small WordPiece tokenizer (letters, digits and
    BERT_WORDS) saved in ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits]
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits] + BERT_WORDS
    vocab_file = folder / "vocab_src.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-layer BERT folder (read only: shared by every test of the session); skips without transformers."""
    pytest.importorskip("transformers")
    return make_tiny_bert(tmp_path_factory.mktemp("bert"), layers=2)


# ---------------------------------------------------------------- synthetic 2D disks
class Disks(NamedTuple):
    image: np.ndarray
    labels: np.ndarray  # int32 instance ids 1..n, in the order of the centres (a later disk paints over an earlier)
    centres: list[tuple[Any, Any]]  # (y, x) of each disk, after placement and jitter


def disk_labels(shape: tuple[int, int], centres: Sequence[tuple[float, float]], radii: Sequence[float]) -> np.ndarray:
    """Instance labels 1..n of disks (``skimage.draw.disk``: the pixels strictly inside each circle)."""
    from skimage.draw import disk

    labels = np.zeros(shape, np.int32)
    for k, (centre, radius) in enumerate(zip(centres, radii, strict=True), start=1):
        labels[disk(centre, radius, shape=shape)] = k
    return labels


def disks(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centres: int | Sequence[tuple[float, float]],
    radius: float | Sequence[float],
    *,
    background: float,
    foreground: float,
    noise: float,
    jitter: int = 0,
    margin: int = 0,
    dtype: DTypeLike = np.float32,
) -> Disks:
    """Bright disks on a Gaussian-noise background (mean ``background``, inside the disks ``foreground``, standard
    deviation ``noise``), cast to ``dtype``.

    ``centres`` is either the (y, x) of each disk, each moved by up to ``jitter`` px in y and in x, or a number of disks
    placed at random: integer centres ``margin`` px or more from the border (y, x, then the radius, per disk) with an
    integer radius drawn from ``radius = (low, high)``, ``high`` excluded. Otherwise ``radius`` is one radius for all
    disks or one per disk. The positions are drawn from ``rng`` first, then the noise.
    """
    if isinstance(centres, int):
        low, high = radius  # type: ignore[misc]
        placed: list[tuple[Any, Any]] = []
        radii: list[float] = []
        for _ in range(centres):
            placed.append((int(rng.integers(margin, shape[0] - margin)), int(rng.integers(margin, shape[1] - margin))))
            radii.append(int(rng.integers(low, high)))
    else:
        placed = [
            (y + rng.integers(-jitter, jitter + 1), x + rng.integers(-jitter, jitter + 1)) if jitter else (y, x)
            for y, x in centres
        ]
        radii = list(radius) if isinstance(radius, Sequence) else [radius] * len(placed)
    labels = disk_labels(shape, placed, radii)
    image = rng.normal(background, noise, shape)
    image[labels > 0] += foreground - background
    return Disks(image.astype(dtype), labels, placed)


# ---------------------------------------------------------------- fine-tuning data
#: tiny fine-tuning settings (FinetuneConfig keyword arguments): two 2-step epochs of unet-tiny
FINETUNE_TINY: dict[str, Any] = {
    "model": "unet-tiny",
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "freeze_epochs": 1,
    "augment": False,
}


def write_pairs(folder: Path, seeds: list[int], shape: tuple[int, int, int] = (32, 40, 40)) -> Path:
    """Phantom volumes with nuclei masks (NAME.tif + NAME_label.tif) and blurred twins (NAME_blurred.tif)."""
    from fmscope.data import lightsheet_phantom
    from fmscope.data.degradation import DegradationConfig, degrade
    from fmscope.io import ImageMetadata, write_image

    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        ph = lightsheet_phantom(shape, seed=seed, structures=("nuclei",))
        image = ph.image.astype(np.float32)
        name = f"nuclei_patch_{seed:03d}_vol{seed:03d}"
        write_image(folder / f"{name}.tif", image, ImageMetadata.for_array(image))
        label = (ph.semantic > 0).astype(np.uint8)
        write_image(folder / f"{name}_label.tif", label, ImageMetadata.for_array(label))
        blurred = degrade(image, DegradationConfig(sigma=1.5, noise_std=5.0), rng=seed)
        write_image(folder / f"{name}_blurred.tif", blurred, ImageMetadata.for_array(blurred))
    return folder


# ---------------------------------------------------------------- lazy reads
class RecordingArray:
    """Array-like that records the regions read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        out = self.data[key]
        self.reads.append(out.shape)
        return out
