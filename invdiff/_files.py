"""Safe file writing: outputs appear whole or not at all, and nothing existing is overwritten by accident."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "free_path", "check_writable"]


def check_writable(path: Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; check the folder exists. Returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it or choose another --out")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder {path.parent} for {path.name} does not exist")
    return path


def free_path(path: Path) -> Path:
    """``path`` if it does not exist, else the first free ``stem-1.suffix``, ``stem-2.suffix``, ..."""
    path = Path(path)
    k = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
