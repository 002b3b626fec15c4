"""fmscope: foundation models for raw scientific images."""

__version__ = "0.1.0"
