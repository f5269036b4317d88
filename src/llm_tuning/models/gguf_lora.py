"""Write one LoRA adapter (or a mix) as a GGUF LoRA for llama.cpp: `llama-cli -m base.gguf --lora FILE`.

    llm-tuning export --adapter weights/math --format gguf-lora --output math-lora.gguf

As llama.cpp's convert_lora_to_gguf.py: general.type `adapter`, adapter.type `lora`, adapter.lora.alpha, and
for each adapted weight `blk.N.attn_q.weight.lora_a` (r, in) and `.lora_b` (out, r), with B's rows permuted
like the weight's for Llama-type q/k. The architecture must be the base GGUF's (llama.cpp checks).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llm_tuning.config import ConfigError
from llm_tuning.models.gguf_export import (
    GgufArch,
    check_exportable,
    gguf_tensor_name,
    new_writer,
    outtype_types,
    permute_rows,
    tensor_name_map,
    write_atomically,
    write_tensors,
)

logger = logging.getLogger(__name__)


def lora_tensors(peft_model: Any, adapter: str, arch: GgufArch) -> tuple[float, list[tuple[str, np.ndarray]]]:
    """(alpha, [(blk.N.attn_q.weight.lora_a, A (r, in)), (... .lora_b, B (out, r)), ...]) for llama.cpp.

    llama.cpp scales every pair by alpha / r (r read from the tensor). PEFT's own per-module scaling can
    differ from that (rsLoRA, rank or alpha patterns, a mix): that module's B absorbs the difference, so
    the file computes exactly what PEFT does under one alpha.
    """
    base = peft_model.get_base_model()
    config = base.config
    name_map = tensor_name_map(arch, config.num_hidden_layers)
    out, emb = base.get_output_embeddings(), base.get_input_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
    pairs = []
    for module_name, module in base.named_modules():
        if adapter in getattr(module, "lora_embedding_A", {}):
            raise ConfigError(f"{module_name}: LoRA on embeddings cannot be written as a GGUF LoRA; "
                              "use --format gguf, which merges it")  # fmt: skip
        if adapter not in getattr(module, "lora_A", {}):
            continue
        name = gguf_tensor_name(name_map, f"{module_name}.weight")
        if tied and name.startswith("output."):
            raise ConfigError("the adapter changes the LM head, which this model ties to its embeddings; llama.cpp "
                              "cannot apply that as a LoRA: use --format gguf, which merges it")  # fmt: skip
        a = module.lora_A[adapter].weight.detach().float().cpu().numpy()  # (r, in)
        b = module.lora_B[adapter].weight.detach().float().cpu().numpy()  # (out, r)
        pairs.append((name, a, b, float(module.scaling[adapter]) * a.shape[0]))
    if not pairs:
        raise ConfigError(f"adapter {adapter!r} has no LoRA layers on {config.model_type} weights")
    alpha = Counter(round(p[3], 6) for p in pairs).most_common(1)[0][0]
    tensors = []
    for name, a, b, effective_alpha in pairs:
        b = b * np.float32(effective_alpha / alpha) if abs(effective_alpha - alpha) > 1e-6 else b
        if arch.permute_qk and ".attn_q." in name:
            b = permute_rows(b, config.num_attention_heads)  # B makes the output rows llama.cpp reorders
        elif arch.permute_qk and ".attn_k." in name:
            b = permute_rows(b, config.num_key_value_heads)
        tensors += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]
    return alpha, tensors


def write_lora_gguf(
    peft_model: Any, adapter: str, path: str | Path, outtype: str = "f16", name: str = ""
) -> dict:
    """Write adapter `adapter` of a PeftModel as a llama.cpp LoRA GGUF (`llama-cli -m base.gguf --lora FILE`)."""
    from gguf import Keys

    peft_config = peft_model.peft_config[adapter]
    if getattr(peft_config, "use_dora", False):
        raise ConfigError(
            "llama.cpp's --lora has no DoRA (magnitude vectors); use --format gguf, which merges it"
        )
    arch = check_exportable(peft_model.get_base_model().config)
    file_type, _ = outtype_types(outtype)
    alpha, tensors = lora_tensors(peft_model, adapter, arch)
    writer = new_writer(arch)
    writer.add_type("adapter")
    writer.add_name(name or Path(path).stem)
    writer.add_file_type(int(file_type))
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_quantization_version(2)
    counts: dict = {}
    write_atomically(path, lambda tmp: counts.update(write_tensors(writer, iter(tensors), outtype, tmp)))
    logger.info(
        "wrote LoRA %s (%s, alpha %g, %d pairs: %s)", path, arch.name, alpha, len(tensors) // 2, counts
    )
    return counts
