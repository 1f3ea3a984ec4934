"""One module per user-facing step: the library function that a ``diffuse`` command calls.

Each step validates its parameters once (a frozen dataclass of :mod:`pipeline.config`), opens the
cluster, and hands the work to :mod:`pipeline.graph`: ``pipeline.api.integrate.integrate``,
``pipeline.api.correct.correct``, ``pipeline.api.run.run_pipeline``, ... (modules are named after
the step, so import the function from its module; ``pipeline.integrate`` etc. are the short forms).
"""
