"""Progress bars that stay readable in logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 30.0


def progress(iterable: Iterable[T], *, file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that refreshes live on a terminal and every 30 s when written to a file.

    A redirected run (``nohup``, CI, a scheduler) would otherwise append a full bar line about ten times a
    second, which buries the few lines of a multi-hour log that matter.
    """
    stream = sys.stderr if file is None else file
    is_tty = getattr(stream, "isatty", lambda: False)()
    kwargs.setdefault("mininterval", 0.1 if is_tty else LOG_INTERVAL_S)
    return tqdm(iterable, file=stream, **kwargs)
