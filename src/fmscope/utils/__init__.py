"""Small shared helpers: atomic outputs, progress callbacks, logging set-up."""

from fmscope.utils.atomic import atomic_output, check_output_path
from fmscope.utils.progress import ProgressCallback, make_progress, null_progress

__all__ = ["atomic_output", "check_output_path", "ProgressCallback", "make_progress", "null_progress"]
