"""Write a causal LM (a merged fine-tune) as one GGUF file for llama.cpp, Ollama and LM Studio.

    llm-tuning export --adapter weights/math --format gguf --outtype q8_0 --output math.gguf

This is a model *format*, like the GGUF reading in resolve.py, so it lives in models/ next to load and
adapters; the `export` command (infer/export.py) only merges, checks flags and names files. Tensors,
hyper-parameters and tokenizer follow llama.cpp's own converter (convert_hf_to_gguf.py):

- names from the gguf library's map (`model.layers.0.self_attn.q_proj` -> `blk.0.attn_q`);
- Llama-type models (llama, mistral) store q/k rows permuted for llama.cpp's rotary layout; transformers'
  GGUF reader un-permutes them (LlamaTensorProcessor), Qwen2 is stored as is (NEOX rotary);
- 1-D tensors and norms stay F32; a tied LM head is left out (llama.cpp reuses token_embd);
- q8_0 falls back to F16 for a tensor whose rows are not a multiple of 32.

gguf_lora.py writes an adapter alone with the same names and layout. Every file is written next to its
destination under a hidden temporary name and renamed when complete, so an interrupted export never
leaves a half-written .gguf behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm_tuning.config import ConfigError

logger = logging.getLogger(__name__)

OUTTYPES = ("f16", "q8_0", "f32")


@dataclass(frozen=True)
class GgufArch:
    name: str  # general.architecture, as llama.cpp names it
    permute_qk: bool  # llama.cpp's "normal" rope wants q/k rows interleaved per head


# transformers model_type -> llama.cpp architecture; llama.cpp runs Mistral (v0.1-v0.3) as llama.
ARCHS = {
    "llama": GgufArch("llama", True),
    "mistral": GgufArch("llama", True),
    "qwen2": GgufArch("qwen2", False),
}


def gguf_arch(config: Any) -> GgufArch:
    """The llama.cpp architecture of a transformers config, or a ConfigError naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHS:
        raise ConfigError(
            f"GGUF export does not support architecture {model_type!r} yet; supported: {', '.join(ARCHS)} "
            "(use `llm-tuning merge` for a safetensors folder, which llama.cpp's convert_hf_to_gguf.py may convert)"
        )
    return ARCHS[model_type]


def outtype_types(outtype: str) -> tuple[Any, Any]:
    """(llama file type, default tensor type) for --outtype."""
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    table = {"f32": (F.ALL_F32, Q.F32), "f16": (F.MOSTLY_F16, Q.F16), "q8_0": (F.MOSTLY_Q8_0, Q.Q8_0)}
    if outtype not in table:
        raise ConfigError(f"--outtype {outtype!r} is not valid; choose one of: {', '.join(OUTTYPES)}")
    return table[outtype]


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, the two rotary halves interleaved (convert_hf_to_gguf.permute).

    (n_head * head_dim, ...) -> same shape; transformers' `_reverse_permute_weights` is its inverse.
    """
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope(config: Any) -> tuple[float, str, float | None]:
    """(rope theta, rope type, scaling factor) from a transformers 4 or 5 config (5 keeps them in rope_parameters)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type")) or "default"
    return float(theta), kind, params.get("factor")


def check_exportable(config: Any) -> GgufArch:
    """Refuse what would load in llama.cpp but compute something else than the merged model."""
    arch = gguf_arch(config)
    _, kind, _ = _rope(config)
    if kind != "default":  # transformers' GGUF reader drops rope scaling, so the export could not be checked
        raise ConfigError(
            f"GGUF export writes models without rope scaling; this one uses {kind!r} rope scaling "
            "(llama.cpp's convert_hf_to_gguf.py on a `llm-tuning merge` folder handles it)"
        )
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    if window and window < config.max_position_embeddings:
        logger.warning("llama.cpp ignores the %d-token sliding window of this %s model: contexts longer "
                       "than it give different outputs there", window, config.model_type)  # fmt: skip
    return arch


def tensor_type(gguf_name: str, array: np.ndarray, outtype: str) -> Any:
    """The GGML type of one tensor: F32 for vectors and norms (as llama.cpp), q8_0 only for full blocks."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    _, default = outtype_types(outtype)
    matrix = gguf_name.endswith((".weight", ".lora_a", ".lora_b"))
    if array.ndim <= 1 or gguf_name.endswith("_norm.weight") or not matrix:
        return Q.F32
    if default == Q.Q8_0 and array.shape[-1] % GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16  # a row of a length that is not a multiple of the block cannot be q8_0
    return default


def tensor_name_map(arch: GgufArch, n_layers: int) -> Any:
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    enum = next(key for key, value in MODEL_ARCH_NAMES.items() if value == arch.name)
    return get_tensor_name_map(enum, n_layers)


def gguf_tensor_name(name_map: Any, hf_name: str) -> str:
    """`model.layers.0.self_attn.q_proj.weight` -> `blk.0.attn_q.weight`; ConfigError if llama.cpp has none."""
    stem, _, suffix = hf_name.rpartition(".")
    mapped = name_map.get_name(stem)
    if mapped is None:
        raise ConfigError(f"tensor {hf_name!r} has no GGUF name for llama.cpp; this model cannot be exported")
    return f"{mapped}.{suffix}"


def model_tensors(model: Any, arch: GgufArch) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every weight, q/k permuted where llama.cpp wants it."""
    config = model.config
    name_map = tensor_name_map(arch, config.num_hidden_layers)
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
    for hf_name, tensor in model.state_dict().items():
        name = gguf_tensor_name(name_map, hf_name)
        if tied and name.startswith("output."):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        array = tensor.detach().float().cpu().numpy()
        if arch.permute_qk and ".attn_q." in name:
            array = permute_rows(array, config.num_attention_heads)
        elif arch.permute_qk and ".attn_k." in name:
            array = permute_rows(array, config.num_key_value_heads)
        yield name, array


def add_hparams(writer: Any, config: Any, file_type: Any, name: str) -> None:
    """The hyper-parameters llama.cpp reads (and transformers' GGUF reader maps back to a config)."""
    theta, _, _ = _rope(config)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(int(file_type))
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if _head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))
    writer.add_quantization_version(2)


def _pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for the tokenizer's split rule (it selects llama.cpp's regex)."""
    try:  # the split rules transformers' GGUF reader applies for each name: the round trip then matches
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # another transformers version: known layouts below still work
        GGUF_PRE_TOKENIZER_SPLITS = {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        pattern = steps[0].get("pattern", {}).get("Regex")
        preferred = ("llama-bpe", "qwen2", "tekken", "gpt-4o", "qwen35")  # llama.cpp's names for these rules
        names = [n for n, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex == pattern]
        if names:
            return next((n for n in preferred if n in names), names[0])
    logger.warning("pre-tokenizer %s is not one llama.cpp knows by name; writing 'default', which may split "
                   "text differently from transformers", kinds)  # fmt: skip
    return "default"


def vocab_tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order with llama.cpp's token types; ids the tokenizer lacks become [PAD{id}] (UNUSED)."""
    from gguf import TokenType

    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    if len(reverse) > vocab_size or max(reverse) >= vocab_size:
        raise ConfigError(
            f"the tokenizer has ids up to {max(reverse)} but the model only {vocab_size} embeddings"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(reverse[index])
        if index in added:
            types.append(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def check_tokenizer(tokenizer: Any) -> dict:
    """The tokenizer's tokenizer.json as a dict, if it is byte-level BPE, the kind this writer handles.

    SentencePiece-style BPE (Llama 2, Mistral 7B v0.1-v0.3) needs the scores only tokenizer.model holds.
    """
    data = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    model = data.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = f"{model.get('type', 'a slow tokenizer')}{' with byte fallback' if model.get('byte_fallback') else ''}"
        raise ConfigError(
            f"GGUF export writes byte-level BPE tokenizers (SmolLM2, Qwen2, Llama 3); this one is {kind} "
            "(SentencePiece style): write a folder with `llm-tuning merge` and convert it with llama.cpp's "
            "convert_hf_to_gguf.py, which reads tokenizer.model"
        )
    return data


def add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Byte-level BPE vocabulary, merges, special ids, add-BOS flag and chat template (gguf.SpecialVocab)."""
    from gguf import SpecialVocab

    data = check_tokenizer(tokenizer)
    tokens, types = vocab_tokens(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(data))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="llm-tuning-tokenizer.") as folder:
        tokenizer.save_pretrained(folder)  # SpecialVocab reads merges, ids and template from the files
        special = SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # llama.cpp's default for adding BOS depends on the pre-tokenizer: state what the tokenizer does.
    plain, full = tokenizer("a", add_special_tokens=False).input_ids, tokenizer("a").input_ids
    extra = len(full) > len(plain)
    special.add_special_token["bos"] = extra and full[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = extra and full[-1] == tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)


def write_atomically(path: str | Path, fill: Any) -> Path:
    """Call `fill(tmp_path)` on a hidden file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        fill(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_tensors(
    writer: Any, tensors: Iterator[tuple[str, np.ndarray]], outtype: str, path: Path
) -> dict[str, int]:
    """Quantize and write the tensors; returns how many tensors got each GGML type."""
    counts: Counter = Counter()
    try:
        _add_tensors(writer, tensors, outtype, counts)
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return dict(counts)


def new_writer(arch: GgufArch) -> Any:
    """A GGUFWriter without the library's INFO lines (endianness, a plan naming our temporary file)."""
    from gguf import GGUFWriter

    logging.getLogger("gguf.gguf_writer").setLevel(logging.WARNING)
    return GGUFWriter(None, arch.name)


def _add_tensors(
    writer: Any, tensors: Iterator[tuple[str, np.ndarray]], outtype: str, counts: Counter
) -> None:
    from gguf import quants

    for name, array in tensors:
        kind = tensor_type(name, array, outtype)
        writer.add_tensor(name, quants.quantize(np.ascontiguousarray(array), kind), raw_dtype=kind)
        counts[kind.name] += 1


def write_model_gguf(
    model: Any, tokenizer: Any, path: str | Path, outtype: str = "f16", name: str = ""
) -> dict:
    """Write `model` (no adapters left on it) with its tokenizer as one GGUF file; returns tensor type counts."""
    arch = check_exportable(model.config)
    file_type, _ = outtype_types(outtype)
    writer = new_writer(arch)
    add_hparams(writer, model.config, file_type, name or Path(path).stem)
    add_tokenizer(writer, tokenizer, model.config.vocab_size)
    counts: dict = {}
    write_atomically(
        path, lambda tmp: counts.update(write_tensors(writer, model_tensors(model, arch), outtype, tmp))
    )
    logger.info("wrote %s (%s: %s)", path, arch.name, counts)
    return counts
