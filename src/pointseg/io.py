"""Files: atomic writes (a crash never leaves a half-written file behind), JSON lines, and reading torch files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600 files; the result should look like any other file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def error_message(e: BaseException) -> str:
    """What went wrong, in a line: ``<file>: <reason>`` for OS errors (permission, disk full, ...), the message
    itself otherwise (the command line and the app show errors this way)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def check_writable(directory: str | os.PathLike) -> None:
    """Fail early, before any work, if ``directory`` cannot be created or written (nothing is left behind).

    Raises:
        ValueError: naming the directory and the reason (read-only, not a directory, no permission, ...).
    """
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{directory}: cannot write here ({existing} is not a directory)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(f"{directory}: cannot write here ({e.strerror or e})") from e


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and atomically rename the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files ``atomic_path(path)`` leaves when its process is killed mid-write (and the
    files a writer kept beside such a temporary, named after it, e.g. a COG's scratch copy)."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}{path.suffix}*")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def truncate_jsonl(path: str | os.PathLike, key: str, last: int) -> None:
    """Keep the lines of a JSON-lines file whose ``key`` is at most ``last``; drop a torn (unparsable) line.

    A run resumed from step ``last`` logs the steps after it again, so they must not stay twice.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get(key, last + 1) <= last:
            kept.append(line)
    if kept != lines:
        write_text(path, "".join(line + "\n" for line in kept))


def write_torch_file(path: str | os.PathLike, obj: Any, what: str) -> Path:
    """``torch.save`` of ``obj`` to ``path``, atomically; a failed write (a full disk, a file size limit) is
    ``OSError("<path>: cannot write <what> (...)")`` instead of torch's internal message, and leaves nothing."""
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            free = size_text(free_bytes(Path(path).parent))
            raise OSError(f"{path}: cannot write {what} ({free} free on its disk; is it full, or a file size limit "
                          "reached?)") from e
    return Path(path)


def read_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load`` of ``path`` with one error for every way a file can be unreadable (truncated, foreign, not a
    torch file): ``ValueError("<path>: cannot read <what> (<reason>)")``; a missing file is ``FileNotFoundError``."""
    import torch

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # torch raises several types for truncated or foreign files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read {what} ({reason})") from e


def read_list(path: str | os.PathLike, what: str) -> list[str]:
    """The entries of a list file, one per line (surrounding blanks stripped; blank lines and ``#`` comments
    skipped); an unreadable or empty list is ``ValueError("<path>: ...")`` naming ``what`` it lists."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the list of {what} ({e})") from e
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise ValueError(f"{path}: the list of {what} is empty")
    return entries


class NotEnoughSpace(OSError):
    """A command would write more than the disk (or the cache's cap) holds: refused before anything is written."""


def free_bytes(directory: str | os.PathLike) -> int:
    """Free bytes on the disk that holds ``directory`` (or its nearest existing parent)."""
    existing = Path(directory)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_space(directory: str | os.PathLike, needed: int, what: str, hint: str) -> None:
    """``NotEnoughSpace`` naming ``what`` needs ``needed`` bytes and what the disk of ``directory`` has free, with the
    ``hint`` of what changes it."""
    free = free_bytes(directory)
    if needed > free:
        raise NotEnoughSpace(f"{directory}: {what} needs about {size_text(needed)}, but only {size_text(free)} are "
                             f"free there; {hint}")


def size_text(n: int | float) -> str:
    """``n`` bytes for people: ``3.4 GB``, ``120.0 MB``, ``16.4 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"
