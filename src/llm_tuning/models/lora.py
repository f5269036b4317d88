"""Find LoRA targets for any architecture and attach a new or an earlier adapter.

The original project hard-coded `query_key_value` (ChatGLM), `W_pack` (Baichuan), `q_proj,v_proj`
(LLaMA) per script. Here the targets are found by inspecting the model: every linear projection
inside the transformer blocks, never the LM head, the embeddings or a classification head.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from llm_tuning.config import ConfigError

logger = logging.getLogger(__name__)

# Linear-like layers PEFT can wrap: GPT-2's Conv1D and bitsandbytes' quantized linears included.
LINEAR_CLASS_NAMES = {"Linear", "Conv1D", "Linear4bit", "Linear8bitLt", "QuantLinear"}
HEAD_NAMES = {"lm_head", "embed_out", "output_layer", "score", "classifier", "v_head", "summary"}


def find_lora_targets(model: nn.Module) -> list[str]:
    """Sorted module-name suffixes of every linear projection, e.g. ['down_proj', 'k_proj', ...]."""
    excluded: set[int] = set()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        excluded.add(id(output))
    targets: set[str] = set()
    for name, module in model.named_modules():
        if id(module) in excluded or type(module).__name__ not in LINEAR_CLASS_NAMES:
            continue
        if any(part in HEAD_NAMES for part in name.split(".")):
            continue
        targets.add(name.rsplit(".", 1)[-1])
    if not targets:
        raise ValueError(
            f"found no linear layers to adapt in {type(model).__name__}; pass --target_modules by name"
        )
    return sorted(targets)


def lora_config(
    model: nn.Module,
    rank: int = 8,
    alpha: int | None = None,
    dropout: float = 0.05,
    target_modules: str | list[str] = "auto",
    use_dora: bool = False,
    use_rslora: bool = False,
    task_type: str = "CAUSAL_LM",
    modules_to_save: list[str] | None = None,
) -> Any:
    """A PEFT LoraConfig; target_modules "auto" means every linear projection of the model."""
    from peft import LoraConfig

    if target_modules == "auto":
        targets = find_lora_targets(model)
    elif isinstance(target_modules, str):
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    else:
        targets = list(target_modules)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:  # a ConfigError, so the CLI reports it as a clean flag error
        raise ConfigError(
            f"--target_modules {','.join(missing)} not found in {type(model).__name__}; "
            f"its linear layers are: {','.join(find_lora_targets(model))}"
        )
    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=targets,
        use_dora=use_dora,
        use_rslora=use_rslora,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def attach_lora(
    model: nn.Module, config: Any, previous_adapter: str | None = None, flag: str = "--previous_lora_weights"
) -> Any:
    """A PeftModel with one trainable adapter: new from `config`, or continued from a folder."""
    from peft import PeftModel, get_peft_model

    from llm_tuning.models.adapter_check import check_adapter_fits

    if previous_adapter:
        check_adapter_fits(model, previous_adapter, flag)
        logger.info("continuing from adapter %s", previous_adapter)
        peft_model = PeftModel.from_pretrained(model, previous_adapter, is_trainable=True)
    else:
        peft_model = get_peft_model(model, config)
    trainable, total = count_parameters(peft_model)
    logger.info(
        "trainable parameters: %s of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total
    )
    return peft_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
