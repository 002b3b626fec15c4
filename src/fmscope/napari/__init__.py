"""fmscope inside napari (npe2 plugin ``fmscope``, manifest ``napari.yaml``): a reader for every format fmscope reads,
a writer for Labels layers, the quickstart phantoms as sample data, and a dock widget for interactive segmentation.

The reader, writer, samples and the widget's :mod:`~fmscope.napari.controller` import neither napari nor Qt (they work,
and are tested, with npe2 alone); only :mod:`~fmscope.napari.widget` does, and napari loads it when the widget is
opened. Install inside napari's environment with ``pip install "fmscope[napari]"``.
"""
