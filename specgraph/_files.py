"""Writing output files all at once: a reader never sees half a file, and nothing is left on failure."""

from __future__ import annotations

import os
import tempfile

__all__ = ["write_new"]


def write_new(path: str, text: str, force: bool) -> bool:
    """Write ``text`` to a temp file beside ``path``, then move it in place: readers never see half a file.
    Without ``force`` an existing file is kept and False returned."""
    target = os.path.abspath(path)
    if os.path.exists(target) and not force:
        return False
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".specgraph-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it an ordinary file's mode
        if force:
            os.replace(tmp, target)
            return True
        try:
            os.link(tmp, target)  # fails if the file appeared meanwhile, unlike a rename
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            if os.path.exists(target):
                return False
            os.replace(tmp, target)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
