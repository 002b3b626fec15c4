"""Readers and writers for raw scientific images (TIFF/OME-TIFF, OME-Zarr, NIfTI, HDF5, MRC, slice folders, PNG/JPEG).

See ``fmscope.io.registry`` for the format x dtype support matrix. No torch here.
"""

from fmscope.io._common import ANGSTROM_PER_UNIT, normalize_unit
from fmscope.io.registry import SUPPORTED_FORMATS, detect_format, read_image, read_spatial, write_image
from fmscope.io.types import Image, ImageMetadata, default_axes, spatial_axes

__all__ = [
    "ANGSTROM_PER_UNIT",
    "normalize_unit",
    "SUPPORTED_FORMATS",
    "Image",
    "ImageMetadata",
    "default_axes",
    "detect_format",
    "read_image",
    "read_spatial",
    "spatial_axes",
    "write_image",
]
