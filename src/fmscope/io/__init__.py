"""Readers and writers for raw scientific images (TIFF/OME-TIFF, OME-Zarr, NIfTI, HDF5, MRC, slice folders, PNG/JPEG).

The formats are one table (``fmscope.io.formats.FORMATS``); ``format_table_markdown()`` renders its support matrix
(format x dtype, axes, laziness, options, compression). No torch here.
"""

from fmscope.io._common import ANGSTROM_PER_UNIT, normalize_unit
from fmscope.io.formats import FORMATS, FormatSpec, format_table_markdown, get_format
from fmscope.io.registry import SUPPORTED_FORMATS, detect_format, read_image, read_spatial, write_image
from fmscope.io.types import Image, ImageMetadata, default_axes, spatial_axes

__all__ = [
    "ANGSTROM_PER_UNIT",
    "FORMATS",
    "normalize_unit",
    "SUPPORTED_FORMATS",
    "FormatSpec",
    "Image",
    "ImageMetadata",
    "default_axes",
    "detect_format",
    "format_table_markdown",
    "get_format",
    "read_image",
    "read_spatial",
    "spatial_axes",
    "write_image",
]
