"""Logging set-up. Only entry points (CLI, app) call this; library modules just use ``logging.getLogger``."""

from __future__ import annotations

import logging


def configure_logging(verbosity: int = 0) -> None:
    """Configure the root ``fmscope`` logger: 0 = warnings, 1 = info, 2+ = debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("fmscope")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
