"""Small shared helpers: atomic file writes, hashing, the shared data directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    Works for files and directories. A crash inside the block leaves `path` untouched
    (and at most a `*.tmp-<pid>` sibling, which readers ignore).
    """
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"{path.parent}: output directory does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_dir(explicit: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The shared public-data directory: `explicit`, else $OLMO2_DATA_DIR, else ./../shared/data.

    Code never hard-codes the location; the relative default only serves a checkout that
    sits beside `shared/`, as in this project's workspace.
    """
    candidates = [explicit, os.environ.get("OLMO2_DATA_DIR"), Path.cwd().parent / "shared/data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    if required:
        raise FileNotFoundError(
            "no data directory: pass --data-dir or set OLMO2_DATA_DIR "
            "(a directory laid out like shared/data: eval/, pretrain/, posttrain/, tokenizers/)"
        )
    return None
