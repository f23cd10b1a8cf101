"""Writing a file so that nobody ever sees half of it.

Every file soundvj writes (a preset, a model file, a checkpoint, a video, a screenshot, a cache) is
written to a temp file beside its final name, flushed to disk, and renamed over the final name in
one step. A killed writer, a full disk or an exception leaves the old file as it was and no temp file
behind. The temp file sits in the same folder, so the rename never crosses file systems.

- `atomic_path(path)`: a context manager yielding the temp path, for writers that want a path
  (safetensors, PyAV, Qt). `suffix` gives the temp name the extension such a writer reads its format
  from.
- `atomic_open(path, mode)`: the same, yielding an open file.
- `write_bytes_atomic` / `write_text_atomic`: the one-call forms.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; some file systems refuse this.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path_beside(path: str | os.PathLike, suffix: str = ".partial") -> Path:
    """Create an empty temp file beside `path` and return its name (`.NAME.XXXX<suffix>`).

    Raises `OSError` when the folder cannot be written: callers that check an output early use it
    as a probe (then remove the file)."""
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent if str(final.parent) else ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the result unreadable to others
    return Path(tmp)


def _replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:  # some writers (safetensors, PyAV, Qt) do not fsync what they wrote
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_folder(final.parent if str(final.parent) else Path("."))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block ends normally, the temp file replaces `path`.

    If the block raises (or the process is interrupted), the temp file is removed and `path` is left
    as it was. A block that leaves the temp file missing or empty on purpose should raise instead."""
    final = Path(path)
    tmp = temp_path_beside(final, suffix)
    try:
        yield tmp
        _replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """`open(path, mode)` written atomically: the file appears whole when the block ends normally."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open: mode must write a new file ('w' or 'wb'), got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh
        fh.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)
