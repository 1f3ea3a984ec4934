"""Quality control of hkl tables and image stacks: ``diffuse qc`` and ``diffuse find-hot-pixels``.

- :mod:`pipeline.qc.stats`, :mod:`pipeline.qc.hotpixels`: pure numpy kernels (streaming statistics of
  table rows; the per-window hot-pixel test on image blocks);
- :mod:`pipeline.qc.tablescan`, :mod:`pipeline.qc.hotscan`: passes over a table's row ranges and over
  an image stack's storage chunks;
- :mod:`pipeline.qc.checks`, :mod:`pipeline.qc.figures`, :mod:`pipeline.qc.report`: verdicts, PNGs,
  qc.json and the self-contained qc.html;
- :mod:`pipeline.qc.api`: the entry points.
"""

from pipeline.qc.api import find_hot_pixels, qc_table

__all__ = ["find_hot_pixels", "qc_table"]
