"""Write outputs so that a crash, Ctrl-C or ``kill -9`` never leaves a half-written file or folder behind.

An output is built under a temporary sibling name (``.<name>.<pid>.<random>.tmp``) and only moved onto
its real name once complete. Replacing an existing output is atomic: a reader sees the old output or
the new one, never neither. Plain files get ``rename(2)``; a folder (which ``rename`` cannot put over a
non-empty folder) is swapped in with one ``renameat2(RENAME_EXCHANGE)`` call on Linux
(``renamex_np(RENAME_SWAP)`` on macOS), after which the old version, now under the temporary name, is
deleted. We chose the exchange over a symlink swap (``out -> out.v2``) because it keeps every output a
plain folder, which DVC and Snakemake track as is. Where no exchange call exists (another OS, or a file
system that refuses it) the old folder is renamed aside first and the new one moved in: not atomic,
a reader may find nothing for the instant between the two renames.

The temporary name carries the writer's process id, so a later run can tell leftovers of a killed
writer (its process is gone) from a writer still at work, and deletes them before it writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator

#: errors of the disk rather than of the program: reported as an OutputError naming the output
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
_OWN_TEMPS: set[Path] = set()  # temporaries this process is writing right now


class OutputError(OSError):
    """An output could not be written for a reason outside the program (disk full, quota, read-only)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two existing paths (files or folders); False where the OS or file system cannot."""
    if _LIBC is None:
        return False
    a, b = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(_LIBC, "renameat2"):
        result = _LIBC.renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(_LIBC, "renamex_np"):
        result = _LIBC.renamex_np(a, b, _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # no such call here, or the file system does not support swapping
    raise OSError(code, os.strerror(code), os.fsdecode(b))


def remove(path: str | os.PathLike) -> None:
    """Delete a file, symlink or folder tree; nothing if absent."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def temporary_sibling(target: Path) -> Path:
    """A fresh, not yet existing temporary name beside ``target``, marked as this process's."""
    while True:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        if not os.path.lexists(tmp):
            return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete temporaries of ``target`` left by writers that were killed; returns what was removed.

    A temporary whose process still runs (another writer of the same output) is left alone.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    removed = []
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or entry in _OWN_TEMPS:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not _alive(pid):
            remove(entry)
            removed.append(entry)
    return removed


def publish(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the finished ``source`` onto ``target`` (same folder), replacing any old ``target`` atomically."""
    source, target = Path(source), Path(target)
    if not os.path.lexists(target):
        os.rename(source, target)
        return
    if not source.is_dir() and not target.is_dir():
        os.replace(source, target)  # rename(2) replaces a file or symlink atomically
        return
    if exchange(source, target):
        remove(source)  # the old version now lives under the temporary name
        return
    aside = temporary_sibling(target)  # fallback, not atomic: see the module docstring
    _OWN_TEMPS.add(aside)
    try:
        os.rename(target, aside)
        os.rename(source, target)
    finally:
        remove(aside)
        _OWN_TEMPS.discard(aside)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``target`` only if the block succeeds.

    Works for files and folders alike: the block creates whatever it wants at the yielded path.
    Temporaries of ``target`` left by a killed earlier writer are deleted first. A full disk (or quota,
    or read-only file system) surfaces as an :class:`OutputError` naming ``target``; nothing of the
    new output remains and an old ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target)
    tmp = temporary_sibling(target)
    _OWN_TEMPS.add(tmp)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(errno.ENOENT, f"the block wrote nothing for {target}", str(tmp))
        publish(tmp, target)
    except OSError as error:
        if error.errno in DISK_ERRNOS and not isinstance(error, OutputError):
            raise OutputError(error.errno, f"cannot write {target}: {os.strerror(error.errno).lower()}; "
                              "nothing was written (free some space and rerun)", str(target)) from error
        raise
    finally:
        remove(tmp)
        _OWN_TEMPS.discard(tmp)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")
