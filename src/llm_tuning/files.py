"""Atomic writes: a file or a folder is either the old complete one or the new complete one, never half.

    from llm_tuning.files import write_text, write_json, atomic_path, replace_folder, install_files

Every write of the tool that replaces something goes through here: a temp name next to the target (same
file system, so the final rename is atomic), then `os.replace`. A folder is swapped in with Linux's
renameat2(RENAME_EXCHANGE) — one system call, so a kill leaves the old folder or the new one — and the
old one is deleted only after. Elsewhere (or where the file system refuses the exchange) it takes two
renames, and the old folder waits under `.NAME.old-*` until the second is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
SWAP_PREFIX = ".llm-tuning-swap-"  # sibling folders of an output_dir while install_files runs
_STAGED_MARK = ".llm-tuning-staged"  # inside a staged folder until it is swapped in


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; when the block ends without error it is renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def temp_folder(target: str | Path) -> Path:
    """A new empty hidden folder next to `target` (same file system), to be filled then swapped in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    return Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent)
    )


def clear_stale(target: Path) -> None:
    """Delete the temp folders a killed process left for `target` (named after its pid, now gone)."""
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        pid = tmp.name[len(target.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one system call (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # glibc < 2.28
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (16, 18, 22, 38, 95):  # EBUSY EXDEV EINVAL ENOSYS EOPNOTSUPP: not here
            return False
        raise OSError(err, os.strerror(err), str(a))
    return True


def replace_folder(new: str | Path, target: str | Path) -> Path:
    """Put the finished folder `new` at `target`, then delete the old `target` (the caller checked that it
    may be deleted). `new` must be on the same file system (see temp_folder)."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
    elif exchange(new, target):
        shutil.rmtree(new)  # `new` now names the old folder
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(new, target)
        shutil.rmtree(old)
    return target


@contextlib.contextmanager
def new_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder; when the block ends without error it replaces `target` as a whole."""
    tmp = temp_folder(target)
    try:
        yield tmp
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _must_stay(out: Path) -> bool:
    """A folder that must keep its identity: a mount point, or one holding our working directory (an
    exchange would leave the process, and the user's shell, in a deleted folder)."""
    if not out.is_dir():
        return False
    cwd = Path.cwd().resolve()
    return os.path.ismount(out) or cwd == out or out in cwd.parents


def staging_path(out: str | Path, name: str = "new") -> Path:
    """Where `staging_folder(out, name)` puts its folder (the same on every rank of a distributed run)."""
    out = Path(out).resolve()
    return out / f"{SWAP_PREFIX}{name}" if _must_stay(out) else out.parent / f".{out.name}{SWAP_PREFIX}{name}"


def staging_folder(out: str | Path, name: str | None = None) -> Path:
    """An empty folder next to `out` to write a new set of files into, for `install_files` (a fresh unique
    one, or the fixed one `staging_path(out, name)`)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    finish_install(out)
    if name is not None:
        staged = staging_path(out, name)
        staged.mkdir()
    else:  # a mount point or the working directory is staged inside: see _must_stay
        where = staging_path(out, "")
        staged = Path(tempfile.mkdtemp(prefix=where.name, dir=where.parent))
    (staged / _STAGED_MARK).touch()
    return staged


def discard_staged(staged: str | Path) -> None:
    """Delete a staging folder that was not swapped in (after the swap its path names the old folder, whose
    other entries must go back: finish_install does that, never this)."""
    staged = Path(staged)
    if (staged / _STAGED_MARK).exists():
        shutil.rmtree(staged, ignore_errors=True)


def install_files(staged: str | Path, out: str | Path) -> Path:
    """Make every file of `staged` appear in `out` at once, keeping `out`'s other entries (checkpoints,
    runs/, the user's files).

    The whole folder is exchanged in one system call: `out` holds the old set of files or the new set,
    never a mix (a new adapter_model.safetensors next to an old adapter_config.json). The other entries
    then move back from the old folder by renames; a kill in between leaves them in a hidden sibling
    `.OUT.llm-tuning-swap-*`, which `finish_install` (called by the next save) puts back.
    """
    staged, out = Path(staged), Path(out).resolve()
    if not out.exists():
        os.replace(staged, out)
    elif not exchange(staged, out):  # no atomic exchange on this system: replace entry by entry
        for entry in staged.iterdir():
            if entry.name != _STAGED_MARK:
                replace_folder(entry, out / entry.name) if entry.is_dir() else os.replace(
                    entry, out / entry.name
                )
        shutil.rmtree(staged)
    finish_install(out)  # the mark went with the new set into `out`: the sibling is now the old folder
    return out


def finish_install(out: str | Path) -> None:
    """Move back the entries an interrupted `install_files` left next to `out`; drop what it replaced."""
    out = Path(out).resolve()
    if not out.parent.is_dir():
        return
    inside = out.glob(f"{SWAP_PREFIX}*") if out.is_dir() else []
    for side in [*out.parent.glob(f".{out.name}{SWAP_PREFIX}*"), *inside]:
        if (side / _STAGED_MARK).exists():  # never swapped in: an unfinished new set
            shutil.rmtree(side, ignore_errors=True)
            continue
        for entry in side.iterdir():  # the old folder: all but the replaced files go back
            if not (out / entry.name).exists():
                os.replace(entry, out / entry.name)
        shutil.rmtree(side)
    (out / _STAGED_MARK).unlink(missing_ok=True)
