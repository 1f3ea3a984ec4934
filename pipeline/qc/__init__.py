"""Quality control of hkl tables and image stacks: ``diffuse qc`` and ``diffuse find-hot-pixels``.

- :mod:`pipeline.qc.stats`, :mod:`pipeline.qc.hotpixels`: pure numpy kernels (streaming statistics of
  table rows; the per-window hot-pixel test on image blocks);
- :mod:`pipeline.qc.tablescan`, :mod:`pipeline.qc.hotscan`: passes over a table's row ranges and over
  an image stack's storage chunks;
- :mod:`pipeline.qc.checks`, :mod:`pipeline.qc.figures`, :mod:`pipeline.qc.report`: verdicts, PNGs,
  qc.json and the self-contained qc.html;
- :mod:`pipeline.qc.api`: the entry points.
"""

__all__ = ["find_hot_pixels", "qc_table"]


def __getattr__(name: str):
    # lazy: importing a submodule (pipeline.qc.map_slice) need not import the whole of qc.api
    if name in __all__:
        from pipeline.qc import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline.qc' has no attribute {name!r}")
