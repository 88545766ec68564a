"""Safe file writing: outputs appear whole or not at all, and nothing existing is overwritten by accident."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "free_path", "check_writable"]


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


def _default_mode(path, mode: int) -> None:
    """Give ``path`` the permissions a plain ``open()`` (0o666) or ``mkdir()`` (0o777) would under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _default_mode(tmp, 0o666)  # mkstemp makes 0600: give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        _default_mode(tmp, 0o777)  # mkdtemp makes 0700: give the folder the permissions mkdir() would
        old = None
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        elif path.exists() or path.is_symlink():
            os.unlink(path)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
