"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO[Any]], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then ``os.replace`` it over ``path``.

    A reader never sees a half-written ``path``: an interruption leaves the previous file (or none) and no
    temporary file behind (it is removed on any exception).

    Args:
        path: the file to write.
        mode: ``"w"`` (text, UTF-8, ``newline=""`` for the csv module) or ``"wb"``.
        write: writes the content to the open file it is given.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
