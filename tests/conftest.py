"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
