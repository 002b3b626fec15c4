"""The ``fmscope`` command line: a thin consumer of the public API."""
