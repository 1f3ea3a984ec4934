"""The one loop that runs a batch of tasks: submit, collect as they finish, advance the progress bar,
and cancel what is left when anything goes wrong.

::

    with run_tasks(client, run_map_task, todo, ctx=ctx, name="map", bar=bar) as results:
        for record in results:      # in completion order
            ...

A task that raises re-raises here; an error in the caller's loop body, Ctrl-C or SIGTERM leaves the
block too. Either way the tasks not yet finished are cancelled, so none keeps writing into a work
directory the caller is about to remove. With ``client=None`` the tasks run one after the other in
this process (small inputs; tests).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = ["run_tasks"]


@contextlib.contextmanager
def run_tasks(
    client,
    func: Callable,
    *iterables: Sequence,
    name: str,
    ids: Iterable | None = None,
    bar=None,
    detail: Callable[[object], str] | None = None,
    **kwargs,
) -> Iterator[Iterator]:
    """Run ``func(*args, **kwargs)`` for each tuple of ``iterables``; yield an iterator of results.

    ``name`` and ``ids`` (default: the task's position) make the dask keys (``name-id-token``);
    ``bar`` (a :mod:`pipeline.progress` bar) is advanced once per result, with ``detail(result)``.
    """
    n = len(iterables[0]) if iterables else 0
    ids = list(range(n)) if ids is None else list(ids)

    def advance(result):
        if bar is not None:
            bar.advance(detail=detail(result) if detail else None)
        return result

    if client is None:
        yield (advance(func(*args, **kwargs)) for args in zip(*iterables, strict=True))
        return
    if getattr(client, "in_process", False):  # pipeline.cluster.threads.ThreadClient
        as_completed = client.as_completed
    else:
        from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = client.map(func, *iterables, pure=False, key=[f"{name}-{i}-{token}" for i in ids], **kwargs)
    try:
        yield (advance(future.result()) for future in as_completed(futures))
    except BaseException:
        client.cancel(futures)
        raise
