"""Files written whole or not at all: a temporary file beside the target, renamed over it only
once everything is written and on disk, so a failed write (disk full, a file-size limit, Ctrl-C)
leaves the old file as it was and no half-written one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, TextIO

from promptlab.errors import UsageError


@contextmanager
def replaced(path: Path, what: str, newline: str | None = None) -> Iterator[TextIO]:
    """A text stream whose content becomes `path` when the block ends without an error; an OSError
    is bad input naming the file (`what`: what was being written)."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _mode(path))  # mkstemp's 0600 would change who may read the file
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the {what} ({exc.strerror or exc}); the file is unchanged; "
                         f"check the path and the free space") from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)


def _mode(path: Path) -> int:
    """The file's own permissions, or for a new one what the umask gives (as open() would)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
