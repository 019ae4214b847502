"""Where `prepare` reads and writes: local paths, or fsspec URLs (`s3://`, `gs://`, `memory://`, ...).

A plain path or a `file://` URL is a local `Path` and keeps the local fast paths (seek, atomic
rename). Any other URL goes through fsspec (`fsspec.core.url_to_fs`): inputs are opened as
binary streams (a compressed one is decompressed on the fly), and output files are written
whole, in one `put` of a finished local file, which object stores publish atomically (an
object appears only when its upload completes), so a crash leaves no half-written output
there either. The work directory of the stages (markers, records) must be a filesystem path
every worker sees: a local disk, or a shared mount on a cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

Location = Path | str
"""A local Path, or a URL string."""


def location(p: str | os.PathLike) -> Location:
    s = str(p)
    if s.startswith("file://"):
        return Path(s.removeprefix("file://"))
    return s if "://" in s else Path(s)


def is_url(p: str | os.PathLike) -> bool:
    return isinstance(location(p), str)


def _fs(url: str):
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def name(p: Location) -> str:
    return Path(p).name if isinstance(p, Path) else p.rstrip("/").rsplit("/", 1)[-1]


def join(p: Location, child: str) -> Location:
    return p / child if isinstance(p, Path) else f"{p.rstrip('/')}/{child}"


def is_file(p: Location) -> bool:
    if isinstance(p, Path):
        return p.is_file()
    fs, path = _fs(p)
    return fs.isfile(path)


def exists(p: Location) -> bool:
    if isinstance(p, Path):
        return p.exists()
    fs, path = _fs(p)
    return fs.exists(path)


def size(p: Location) -> int:
    if isinstance(p, Path):
        return p.stat().st_size
    fs, path = _fs(p)
    return int(fs.size(path))


def open_binary(p: Location) -> BinaryIO:
    if isinstance(p, Path):
        return open(p, "rb")  # noqa: SIM115 - the caller closes it
    fs, path = _fs(p)
    return fs.open(path, "rb")


def read_text(p: Location) -> str:
    with open_binary(p) as f:
        return f.read().decode("utf-8")


def sha256(p: Location, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_binary(p) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def put(local: Path, dest: Location) -> None:
    """Publish a finished local file at `dest` (a rename locally, an upload elsewhere)."""
    if isinstance(dest, Path):
        os.replace(local, dest)
        return
    fs, path = _fs(dest)
    fs.put_file(str(local), path)
    local.unlink()


def listdir(p: Location) -> list[str]:
    """Names in a directory (empty when it does not exist)."""
    if isinstance(p, Path):
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    fs, path = _fs(p)
    if not fs.exists(path):
        return []
    return sorted(name(x) for x in fs.ls(path, detail=False))


def remove(p: Location) -> None:
    if isinstance(p, Path):
        p.unlink(missing_ok=True)
        return
    fs, path = _fs(p)
    if fs.exists(path):
        fs.rm(path)


def remove_tree(p: Location) -> None:
    if isinstance(p, Path):
        shutil.rmtree(p, ignore_errors=True)
        return
    fs, path = _fs(p)
    if fs.exists(path):
        fs.rm(path, recursive=True)
