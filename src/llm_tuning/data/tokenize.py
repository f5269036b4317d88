"""Tokenize an instruction file once, with loss masks, into a cached `datasets` folder.

    llm-tuning tokenize --model_checkpoint smollm2-135m-instruct --input_file simple_math_4op.json \
        --prompt_key q --target_key a --save_name simple_math_4op --max_seq_length 2000 --skip_overlength False

The folder holds the dataset (input_ids, labels, length) and `llm_tuning_manifest.json` (model,
tokenizer hash, flags, source hash, row counts). Tokenizing the same thing again reuses it; a change of
model, tokenizer, flag or file content re-tokenizes. It is written to a temp folder and renamed, so a
half-written folder is never taken for a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llm_tuning.config import DataOptions, option, validate_groups
from llm_tuning.data.encode import encode_segments, truncate
from llm_tuning.data.formats import row_to_messages
from llm_tuning.data.read import DataError, iter_rows
from llm_tuning.data.template import adds_bos, conversation_segments
from llm_tuning.models.resolve import llm_tuning_home, resolve_model

logger = logging.getLogger(__name__)

MANIFEST = "llm_tuning_manifest.json"
FORMAT_VERSION = 2  # bump when the encoding changes, so old caches are not reused
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

    def __post_init__(self) -> None:
        validate_groups(self)
        if not self.input_file:
            raise DataError("--input_file", None, "no data file given", hint="pass --input_file data.jsonl")


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


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def row_prompt_loss(row: dict[str, Any], default: bool, source: Path, number: int) -> bool:
    """A row's own `prompt_loss` (as `sde render` writes it) overrides the --prompt_loss flag."""
    value = row.get("prompt_loss", default)
    if not isinstance(value, bool):
        raise DataError(source, number, f"must be true or false, got {value!r}", "prompt_loss")
    return value


def encode_file(cfg: TokenizeConfig, source: Path, tokenizer: Any) -> tuple[dict[str, list], dict[str, int]]:
    """Columns input_ids / labels / length, and counts of truncated and skipped rows."""
    columns: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
    counts = {"total": 0, "truncated": 0, "skipped": 0}
    bos = tokenizer.bos_token_id if cfg.template == "none" and adds_bos(tokenizer) else None
    batch: list[list] = []
    batch_prompt_loss: list[bool] = []

    def flush() -> None:
        for input_ids, labels in encode_segments(tokenizer, batch, batch_prompt_loss, bos):
            encoded = truncate(input_ids, labels, cfg.max_seq_length)
            if encoded.truncated and (cfg.skip_overlength or all(x == -100 for x in encoded.labels)):
                counts["skipped"] += 1  # dropped on request, or nothing left to train on
                continue
            counts["truncated"] += encoded.truncated
            columns["input_ids"].append(encoded.input_ids)
            columns["labels"].append(encoded.labels)
            columns["length"].append(len(encoded.input_ids))
        batch.clear()
        batch_prompt_loss.clear()

    for number, row in tqdm(iter_rows(source), desc=f"tokenizing {source.name}", unit=" rows"):
        messages = row_to_messages(row, cfg.prompt_key, cfg.target_key, source, number)
        batch.append(conversation_segments(tokenizer, messages, cfg.template, cfg.system_prompt))
        batch_prompt_loss.append(row_prompt_loss(row, cfg.prompt_loss, source, number))
        counts["total"] += 1
        if len(batch) >= cfg.batch_rows:
            flush()
    flush()
    if counts["total"] == 0:
        raise DataError(source, None, "has no rows", hint="the file is empty")
    return columns, counts


def run(cfg: TokenizeConfig) -> TokenizeResult:
    """Tokenize `cfg.input_file` unless an identical tokenization is already on disk."""
    from datasets import Dataset

    from llm_tuning.models.load import load_tokenizer

    source = find_input_file(cfg.input_file)
    if not source.is_file():
        raise DataError(
            source, None, "file does not exist", hint="pass --input_file with an existing .json/.jsonl/.csv"
        )
    parts = fingerprint(cfg, source)
    folder = output_folder(cfg, source, parts["fingerprint"])
    manifest = read_manifest(folder)
    if manifest and manifest.get("fingerprint") == parts["fingerprint"]:
        logger.info("reusing tokenized data in %s (%d rows)", folder, manifest["counts"]["rows"])
        c = manifest["counts"]
        return TokenizeResult(folder, c["rows"], c["total"], c["truncated"], c["skipped"], reused=True)

    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    columns, counts = encode_file(cfg, source, tokenizer)
    counts["rows"] = len(columns["input_ids"])
    if counts["rows"] == 0:
        raise DataError(source, None, f"every row is longer than --max_seq_length {cfg.max_seq_length}",
                        hint="raise --max_seq_length or drop --skip_overlength")  # fmt: skip
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        Dataset.from_dict(columns).save_to_disk(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps({**parts, "counts": counts}, indent=2, ensure_ascii=False))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("tokenized %d of %d rows (%d truncated, %d skipped as over %d tokens) -> %s", counts["rows"],
                counts["total"], counts["truncated"], counts["skipped"], cfg.max_seq_length, folder)  # fmt: skip
    return TokenizeResult(
        folder, counts["rows"], counts["total"], counts["truncated"], counts["skipped"], reused=False
    )
