"""Read instruction rows from JSON arrays, JSONL or CSV, with errors that name file, row and field.

Row numbers are 1-based: the line number for JSONL, the element index + 1 for a JSON array, and the
data row (header excluded) for CSV.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_tuning.files import atomic_path


class DataError(ValueError):
    """Bad input data: the message names the file, the row, the field and the fix."""

    def __init__(
        self, path: str | Path, row: int | None, problem: str, field: str | None = None, hint: str = ""
    ):
        where = (
            f"{path}" + (f", row {row}" if row is not None else "") + (f", field {field!r}" if field else "")
        )
        super().__init__(f"{where}: {problem}" + (f". {hint}" if hint else ""))
        self.path, self.row, self.field = str(path), row, field
        self._parts = (path, row, problem, field, hint)

    def __reduce__(self) -> tuple:  # raised in a tokenizing worker process, re-raised in the main one
        return type(self), self._parts


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            path, line, f"is not valid UTF-8 (byte {err.start})", hint="re-save the file as UTF-8"
        ) from err


def read_text(path: str | Path) -> str:
    """A file's text (UTF-8, a BOM dropped); a DataError naming the line of the first byte that is not UTF-8."""
    return _decode(Path(path))


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, number, f"broken JSON ({err.msg} at column {err.colno})",
                            hint="each line must be one JSON object") from err  # fmt: skip
        yield number, row


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """CSV rows as dicts; a row with more or fewer values than the header is an error, not a shifted row."""
    try:
        reader = csv.DictReader(io.StringIO(text))
        for number, row in enumerate(reader, start=1):
            columns = len(reader.fieldnames or [])
            if None in row:  # more values than columns: csv puts the rest under the key None
                raise DataError(path, number, f"has {columns + len(row[None])} values but the header has {columns} "
                                "columns", hint="quote values that contain commas")  # fmt: skip
            missing = [k for k, v in row.items() if v is None]
            if missing:
                raise DataError(path, number, f"has {columns - len(missing)} values but the header has {columns} "
                                "columns", missing[0], "give every column a value (empty is allowed)")  # fmt: skip
            yield number, row
    except csv.Error as err:
        raise DataError(path, None, f"is not valid CSV ({err})") from None


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row dict) for every row of a .json, .jsonl or .csv file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder", hint="pass a .json, .jsonl or .csv file")
    if not path.is_file():
        raise DataError(
            path, None, "file does not exist", hint="pass --input_file / --data_path with an existing file"
        )
    suffix = path.suffix.lower()
    text = _decode(path)
    if suffix == ".csv":
        rows: Iterator[tuple[int, Any]] = _csv_rows(path, text)
    elif suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = enumerate(json.loads(text), start=1)
        except json.JSONDecodeError as err:
            raise DataError(
                path, err.lineno, f"broken JSON array ({err.msg})", hint="fix the JSON or use JSONL"
            ) from err
    elif suffix in (".json", ".jsonl", ".ndjson"):  # the original's .json files were JSON lines
        rows = _jsonl_rows(path, text)
    else:
        raise DataError(path, None, f"unknown file type {suffix!r}", hint="use .json, .jsonl or .csv")
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(
                path,
                number,
                f"is a {type(row).__name__}, not an object",
                hint="each row must be a JSON object",
            )
        yield number, row


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_rows(path)]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL through a temp file, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
