"""Tokenize an instruction file once, with loss masks, into a cached `datasets` folder.

    llm-tuning tokenize --model_checkpoint smollm2-135m-instruct --input_file simple_math_4op.json \
        --prompt_key q --target_key a --save_name simple_math_4op --max_seq_length 2000 --skip_overlength False

The folder holds the dataset (input_ids, labels, length) and `llm_tuning_manifest.json` (model,
tokenizer hash, flags, source hash, row counts). Tokenizing the same thing again reuses it; a change of
model, tokenizer, flag or file content re-tokenizes. It is written to a temp folder and renamed, so a
half-written folder is never taken for a complete one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from llm_tuning.config import ConfigError, DataOptions, check_output_path, option, validate_groups
from llm_tuning.data.encode import IGNORE_INDEX, encode_segments, truncate
from llm_tuning.data.formats import row_to_messages
from llm_tuning.data.read import DataError, iter_rows
from llm_tuning.data.template import adds_bos, conversation_segments
from llm_tuning.files import new_folder, write_json
from llm_tuning.models.resolve import llm_tuning_home, resolve_model

logger = logging.getLogger(__name__)

MANIFEST = "llm_tuning_manifest.json"
FORMAT_VERSION = 3  # bump when the encoding changes, so old caches are not reused
TOKENIZED_DIR = Path("data") / "tokenized_data"  # where the original kept --save_name folders


@dataclass
class TokenizeConfig(DataOptions):
    """Tokenize a JSON / JSONL / CSV instruction file with loss masks, cached by fingerprint."""

    input_file: str = option("", "the data file (a bare name is also looked up in data/, as the original did)",
                             aliases=("data_path", "data"))  # fmt: skip
    model: str = option("smollm2-135m-instruct", "model whose tokenizer and chat template to use",
                        aliases=("model_checkpoint", "model_name_or_path"))  # fmt: skip
    save_name: str | None = option(None, "save under data/tokenized_data/NAME (default: the cache)")
    output_dir: str | None = option(None, "save in this folder instead")
    trust_remote_code: bool = option(False, "run the model repository's own tokenizer code")
    batch_rows: int = option(1000, "rows tokenized per batched call")
    num_proc: int = option(0, "worker processes (0: one per CPU core; 1: none)")

    def __post_init__(self) -> None:
        validate_groups(self)
        if self.num_proc < 0 or self.batch_rows < 1:
            raise ConfigError("--num_proc must be >= 0 and --batch_rows >= 1")
        check_output_path("output_dir", self.output_dir, folder=True)
        if not self.input_file:
            raise DataError("--input_file", None, "no data file given", hint="pass --input_file data.jsonl")
        name = self.save_name
        if name is not None and (name in ("", ".", "..") or "/" in name or os.sep in name or "\\" in name):
            raise ConfigError(f"--save_name {name!r}: give a plain folder name (no '/', '.' or '..'); it is "
                              f"saved under {TOKENIZED_DIR}/ (use --output_dir for another place)")  # fmt: skip


@dataclass
class TokenizeResult:
    path: Path
    rows: int  # rows kept
    total: int  # rows read
    truncated: int
    skipped: int
    reused: bool


def find_input_file(name: str) -> Path:
    path = Path(name)
    if not path.exists() and (Path("data") / name).exists():
        return Path("data") / name
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(model: str) -> str:
    """A hash of the tokenizer files (vocabulary, merges, chat template) of a local model."""
    folder = Path(resolve_model(model))
    digest = hashlib.sha256(model.encode())
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
                digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()


def fingerprint(cfg: TokenizeConfig, source: Path) -> dict[str, Any]:
    flags = {k: getattr(cfg, k) for k in ("prompt_key", "target_key", "max_seq_length", "skip_overlength",
                                           "template", "prompt_loss", "system_prompt")}  # fmt: skip
    parts = {"format": FORMAT_VERSION, "model": cfg.model, "tokenizer": tokenizer_fingerprint(cfg.model),
             "flags": flags, "source": str(source.resolve()), "source_sha256": _file_sha256(source)}  # fmt: skip
    parts["fingerprint"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def output_folder(cfg: TokenizeConfig, source: Path, key: str) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if cfg.save_name:
        return TOKENIZED_DIR / cfg.save_name
    return llm_tuning_home() / "datasets" / f"{source.stem}-{key[:16]}"


def _dataset_file(name: str) -> bool:
    """A file `Dataset.save_to_disk` writes, or our manifest."""
    return name in (MANIFEST, "dataset_info.json", "state.json") or (
        name.startswith("data-") and name.endswith(".arrow")
    )


def check_replaceable(folder: Path, source: Path) -> None:
    """Refuse an output folder the tool may not replace: one that holds (or is) the input file, a file, or
    a folder that is not a tokenized set of ours (no manifest, or other files in it)."""
    if source.resolve() == folder.resolve() or folder.resolve() in source.resolve().parents:
        raise ConfigError(f"output folder {folder} holds the input file {source}: it would be replaced; "
                          "choose another --output_dir / --save_name")  # fmt: skip
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise ConfigError(f"output folder {folder} exists and is not a folder; choose another --output_dir")
    entries = [p.name for p in folder.iterdir()]
    if not entries:
        return
    if read_manifest(folder) is None:
        raise ConfigError(f"output folder {folder} exists and was not written by `llm-tuning tokenize` (no "
                          f"{MANIFEST}): not replacing it; choose another --output_dir / --save_name")  # fmt: skip
    foreign = sorted(n for n in entries if not _dataset_file(n))
    if foreign:
        raise ConfigError(f"output folder {folder} also holds {foreign[0]!r}, which tokenize did not write: "
                          "not replacing it; move that file or choose another --output_dir")  # fmt: skip


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def row_prompt_loss(row: dict[str, Any], default: bool, source: Path, number: int) -> bool:
    """A row's own `prompt_loss` (as `sde render` writes it) overrides the --prompt_loss flag."""
    value = row.get("prompt_loss", default)
    if not isinstance(value, bool):
        raise DataError(source, number, f"must be true or false, got {value!r}", "prompt_loss")
    return value


@dataclass
class Chunk:
    """Encoded rows: ids and labels end to end (int32), each kept row's length, and row counts."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    total: int = 0
    truncated: int = 0
    skipped: int = 0


def encode_rows(cfg: TokenizeConfig, source: Path, tokenizer: Any, rows: list[tuple[int, dict]]) -> Chunk:
    """Render, tokenize (one batched call), mask, truncate or skip the numbered rows of `source`."""
    bos = tokenizer.bos_token_id if cfg.template == "none" and adds_bos(tokenizer) else None
    segments, prompt_loss = [], []
    for number, row in rows:
        messages = row_to_messages(row, cfg.prompt_key, cfg.target_key, source, number)
        segments.append(conversation_segments(tokenizer, messages, cfg.template, cfg.system_prompt))
        prompt_loss.append(row_prompt_loss(row, cfg.prompt_loss, source, number))
    ids: list[int] = []
    labels: list[int] = []
    lengths: list[int] = []
    truncated = skipped = 0
    for input_ids, row_labels in encode_segments(tokenizer, segments, prompt_loss, bos):
        encoded = truncate(input_ids, row_labels, cfg.max_seq_length)
        if encoded.truncated and (cfg.skip_overlength or all(x == IGNORE_INDEX for x in encoded.labels)):
            skipped += 1  # dropped on request, or nothing left to train on
            continue
        truncated += encoded.truncated
        ids.extend(encoded.input_ids)
        labels.extend(encoded.labels)
        lengths.append(len(encoded.input_ids))
    return Chunk(np.array(ids, np.int32), np.array(labels, np.int32), np.array(lengths, np.int64),
                 len(rows), truncated, skipped)  # fmt: skip


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel kills this worker when its parent dies (even by SIGKILL), so no
    ~350 MB orphan keeps tokenizing; the pid check covers a parent that died before the prctl."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: workers are not used there (worker_count)
        pass
    if os.getppid() != parent:
        os._exit(1)


_JOB: tuple | None = None  # (cfg, source, tokenizer, chunks) for forked workers, which inherit it


def _encode_chunk(index: int) -> Chunk:
    cfg, source, tokenizer, chunks = _JOB
    return encode_rows(cfg, source, tokenizer, chunks[index])


def worker_count(requested: int, chunks: int) -> int:
    """Worker processes: `requested`, or one per CPU core for 0; one off Linux (fork is unsafe on macOS and
    missing on Windows)."""
    if not sys.platform.startswith("linux"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(requested or cores, chunks))


def encode_file(cfg: TokenizeConfig, source: Path, tokenizer: Any) -> Chunk:
    """Every row of `source`, encoded in chunks of `batch_rows` rows, by `num_proc` forked workers."""
    global _JOB
    rows = list(iter_rows(source))
    if not rows:
        raise DataError(source, None, "has no rows", hint="the file is empty")
    chunks = [rows[i : i + cfg.batch_rows] for i in range(0, len(rows), cfg.batch_rows)]
    workers = worker_count(cfg.num_proc, len(chunks))
    progress = tqdm(total=len(rows), desc=f"tokenizing {source.name}", unit=" rows")
    parts = []
    _JOB = (cfg, source, tokenizer, chunks)
    try:
        if workers == 1:
            for i in range(len(chunks)):
                parts.append(_encode_chunk(i))
                progress.update(parts[-1].total)
        else:
            # each worker tokenizes its own chunks on one thread; this also keeps the tokenizers
            # library from warning that its thread pool cannot survive the fork
            with (
                _env("TOKENIZERS_PARALLELISM", "false"),
                ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("fork"),
                    initializer=die_with_parent,
                    initargs=(os.getpid(),),
                ) as pool,  # fmt: skip
            ):
                for part in pool.map(_encode_chunk, range(len(chunks))):
                    parts.append(part)
                    progress.update(part.total)
    finally:
        _JOB = None
        progress.close()
    return Chunk(
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.lengths for p in parts]),
        *(sum(getattr(p, k) for p in parts) for k in ("total", "truncated", "skipped")),
    )


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def to_table(chunk: Chunk) -> Any:
    """An Arrow table (input_ids, labels, length) built from the flat arrays, without Python lists."""
    import pyarrow as pa

    offsets = np.zeros(len(chunk.lengths) + 1, np.int64)
    np.cumsum(chunk.lengths, out=offsets[1:])
    lists = pa.ListArray if offsets[-1] < 2**31 else pa.LargeListArray
    offsets = pa.array(offsets.astype(np.int32) if lists is pa.ListArray else offsets)
    return pa.table({
        "input_ids": lists.from_arrays(offsets, pa.array(chunk.ids)),
        "labels": lists.from_arrays(offsets, pa.array(chunk.labels)),
        "length": pa.array(chunk.lengths),
    })  # fmt: skip


def run(cfg: TokenizeConfig) -> TokenizeResult:
    """Tokenize `cfg.input_file` unless an identical tokenization is already on disk."""
    from datasets import Dataset

    from llm_tuning.models.load import load_tokenizer

    source = find_input_file(cfg.input_file)
    if source.is_dir():
        raise DataError(source, None, "is a folder", hint="pass --input_file with a .json/.jsonl/.csv file")
    if not source.is_file():
        raise DataError(
            source, None, "file does not exist", hint="pass --input_file with an existing .json/.jsonl/.csv"
        )
    parts = fingerprint(cfg, source)
    folder = output_folder(cfg, source, parts["fingerprint"])
    check_replaceable(folder, source)  # before any work: refuse early, and never delete a user's folder
    manifest = read_manifest(folder)
    if manifest and manifest.get("fingerprint") == parts["fingerprint"]:
        logger.info("reusing tokenized data in %s (%d rows)", folder, manifest["counts"]["rows"])
        c = manifest["counts"]
        return TokenizeResult(folder, c["rows"], c["total"], c["truncated"], c["skipped"], reused=True)

    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    encoded = encode_file(cfg, source, tokenizer)
    counts = {"total": encoded.total, "truncated": encoded.truncated, "skipped": encoded.skipped,
              "rows": len(encoded.lengths)}  # fmt: skip
    if counts["rows"] == 0:
        raise DataError(source, None, f"every row is longer than --max_seq_length {cfg.max_seq_length}",
                        hint="raise --max_seq_length or drop --skip_overlength")  # fmt: skip
    check_replaceable(folder, source)  # again: it may have changed while we tokenized
    # the manifest is written last, inside the temp folder, and the folder is swapped in whole: a kill
    # leaves the old set or the new one, and a folder without a manifest is never reused
    with new_folder(folder) as tmp:
        # a fingerprint of the content (not a random one, nor the file's path): a training run's identity
        # (checkpoints.py) stays the same if the set is made again, or from a copy of the file
        content = {k: v for k, v in parts.items() if k not in ("source", "fingerprint")}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        Dataset(to_table(encoded), fingerprint=digest).save_to_disk(str(tmp))
        write_json(tmp / MANIFEST, {**parts, "counts": counts})
    logger.info("tokenized %d of %d rows (%d truncated, %d skipped as over %d tokens) -> %s", counts["rows"],
                counts["total"], counts["truncated"], counts["skipped"], cfg.max_seq_length, folder)  # fmt: skip
    return TokenizeResult(
        folder, counts["rows"], counts["total"], counts["truncated"], counts["skipped"], reused=False
    )
