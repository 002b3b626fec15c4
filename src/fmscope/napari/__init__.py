"""fmscope inside napari (npe2 plugin ``fmscope``, manifest ``napari.yaml``): a reader for every format fmscope reads,
a writer for Labels layers, and the quickstart phantoms as sample data.

Nothing here imports napari or Qt: the reader and writer are plain functions on arrays and layer metadata, so they
work (and are tested) with npe2 alone. Install inside napari's environment with ``pip install "fmscope[napari]"``.
"""
