"""The board reads and writes only under its working folder: every path from the page goes through here.

    inside(workdir, "data/train.jsonl")  -> the resolved path, or PathRefused for ../, /etc, a symlink out

Paths are resolved (symlinks followed, `..` collapsed) before the check, so a link inside the folder that
points outside it is refused like an absolute path outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

HIDDEN = ".board"  # the board's own state (jobs, logs) under the working folder


class PathRefused(ValueError):
    """A path from the page that is not under the working folder."""


def inside(workdir: str | Path, user_path: str | Path) -> Path:
    """`user_path` (relative to `workdir`, or absolute) resolved; PathRefused unless it stays under `workdir`."""
    root = Path(workdir).resolve()
    text = str(user_path).strip()
    if not text or "\0" in text:
        raise PathRefused("give a path under the working folder")
    path = (root / text).resolve()  # an absolute `text` replaces root here, then fails the check below
    if path != root and root not in path.parents:
        raise PathRefused(
            f"{text!r} is outside the working folder {root}; the board only uses files under it"
        )
    return path


def relative(workdir: str | Path, path: Path) -> str:
    """`path` as the page shows it: relative to the working folder, with forward slashes."""
    return Path(os.path.relpath(path, Path(workdir).resolve())).as_posix()


def list_files(workdir: str | Path, suffixes: tuple[str, ...] = (), limit: int = 2000) -> list[str]:
    """Files under `workdir` (not the board's own state, hidden folders or symlinks out), sorted."""
    root = Path(workdir).resolve()
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("runs", "__pycache__"))
        for name in sorted(files):
            if suffixes and not name.lower().endswith(suffixes):
                continue
            path = Path(folder) / name
            try:
                inside(root, path)
            except PathRefused:
                continue
            found.append(relative(root, path))
            if len(found) >= limit:
                return found
    return found


def find_folders(workdir: str | Path, marker: str, limit: int = 500) -> list[str]:
    """Folders under `workdir` that hold the file `marker` (adapter_config.json, report.md), not checkpoints."""
    root = Path(workdir).resolve()
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.startswith("checkpoint-")
                         and d not in ("runs", "__pycache__"))  # fmt: skip
        if marker in files:
            try:
                found.append(relative(root, inside(root, folder)))
            except PathRefused:
                continue
        if len(found) >= limit:
            break
    return sorted(found)
