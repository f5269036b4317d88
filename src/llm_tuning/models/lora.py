"""Find LoRA targets for any architecture and attach a new or an earlier adapter.

    llm-tuning train --data train.jsonl                      # targets found by inspecting the model
    llm-tuning train --data train.jsonl --lora_on_router     # mixture of experts: adapt the routers too

The original project hard-coded `query_key_value` (ChatGLM), `W_pack` (Baichuan), `q_proj,v_proj`
(LLaMA) per script. Here the targets are found by inspecting the model (models/targets.py): every
linear projection inside the transformer blocks (nn.Linear subclasses included), the fused 3-D expert
weights of mixtures of experts through PEFT's `target_parameters`, never the LM head, the embeddings,
a classification head or (unless asked) a router. What was adapted is logged per block kind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from llm_tuning.config import ConfigError, LoraOptions
from llm_tuning.models.targets import (
    LoraTargets,
    find_targets,
    module_target_spec,
    shared_weight_groups,
    targets_by_name,
)

logger = logging.getLogger(__name__)


def find_lora_targets(model: nn.Module) -> list[str]:
    """Sorted short names of every adaptable linear projection, e.g. ['down_proj', 'k_proj', ...]."""
    targets = find_targets(model)
    if not targets.modules and not targets.parameters:
        raise ConfigError(
            f"found no linear layers to adapt in {type(model).__name__}; pass --target_modules by name"
        )
    return targets.short_names()


def lora_config(
    model: nn.Module,
    options: LoraOptions | None = None,
    *,
    dropout: float | None = None,
    task_type: str = "CAUSAL_LM",
    modules_to_save: list[str] | None = None,
) -> Any:
    """A PEFT LoraConfig from the LoRA option group (rank, alpha, dropout, targets, DoRA, rsLoRA, routers).

    target_modules "auto" means every linear projection and expert weight; `dropout` overrides the group's
    (the RL loop needs none: its log-probs must be reproducible).
    """
    from peft import LoraConfig

    options = options if options is not None else LoraOptions()
    rank, alpha, target_modules = options.lora_rank, options.lora_alpha, options.target_modules
    use_dora, use_rslora, on_router = options.use_dora, options.use_rslora, options.lora_on_router
    dropout = options.lora_dropout if dropout is None else dropout

    if target_modules == "auto":
        targets = find_targets(model, on_router=on_router)
    else:
        names = target_modules.split(",") if isinstance(target_modules, str) else list(target_modules)
        targets = targets_by_name(model, [n.strip() for n in names if n.strip()])
    if not targets.modules and not targets.parameters:
        raise ConfigError(
            f"found no linear layers to adapt in {type(model).__name__}; pass --target_modules by name"
        )
    if targets.parameters and (dropout > 0 or use_dora):
        raise ConfigError(
            f"{type(model).__name__} keeps its experts as fused 3-D weights, whose LoRA (PEFT's target_parameters) "
            "has no dropout or DoRA: pass --lora_dropout 0 without --use_dora, or --target_modules to leave the "
            "experts out"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=module_target_spec(model, targets.modules) if targets.modules else [],
        target_parameters=sorted(targets.parameters) or None,
        use_dora=use_dora,
        use_rslora=use_rslora,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )
    config.llm_tuning_targets = targets  # read by attach_lora for the start-up summary; not saved by PEFT
    return config


@contextmanager
def native_targets() -> Iterator[None]:
    """Keep PEFT from renaming an adapter's targets as if it were written for transformers 4.

    For some mixtures of experts (DeepSeek-V2/V3, Qwen3-MoE, GLM-4-MoE, ...) PEFT 0.21 rewrites a config's
    `gate_proj` / `up_proj` / `down_proj` into fused expert `target_parameters`, which drops those names
    from the dense first-layer MLP and the shared experts (they get no LoRA, and their saved weights are
    silently not loaded). A config that already lists `target_parameters` was written for the fused
    experts: it is left as it is. Adapters of transformers 4 (no target_parameters) are still converted.
    """
    import peft.utils.transformers_weight_conversion as conversion

    original = conversion.convert_peft_config_for_transformers

    def convert(peft_config: Any, model: Any, conversions: Any) -> None:
        if not getattr(peft_config, "target_parameters", None):
            original(peft_config, model, conversions)

    conversion.convert_peft_config_for_transformers = convert
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original


def attach_lora(
    model: nn.Module, config: Any, previous_adapter: str | None = None, flag: str = "--previous_lora_weights"
) -> Any:
    """A PeftModel with one trainable adapter: new from `config`, or continued from a folder."""
    from peft import PeftModel, get_peft_model

    from llm_tuning.models.adapter_check import check_adapter_fits

    targets = getattr(config, "llm_tuning_targets", None) if config is not None else None
    with native_targets():
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
    for line in adapted_summary(peft_model, targets):
        logger.info(line)
    shared = shared_weight_groups(peft_model)
    if shared:
        logger.warning(
            "LoRA adapts %d weights that several layers share (e.g. %s): the adapter is right unmerged "
            "(--adapter), but `llm-tuning merge` will refuse it, as one merged weight cannot hold a "
            "different change per layer",
            len(shared),
            " = ".join(_plain_path(p) for p in shared[0]),
        )
    return peft_model


def adapted_summary(peft_model: nn.Module, targets: LoraTargets | None = None) -> list[str]:
    """One line per block kind: what LoRA adapts there and its trainable parameters, e.g.
    'LoRA on experts: 4 weights (experts.gate_up_proj, experts.down_proj), 2,048 trainable parameters'."""
    from llm_tuning.models.targets import block_kind, expert_parameters

    moe = bool(expert_parameters(peft_model))
    per_kind: dict[str, list[str]] = {}
    params: dict[str, int] = {}
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or not len(module.lora_A):
            continue
        path = _plain_path(name)
        if getattr(module, "parameter_name", None):  # PEFT's wrapper of a 3-D expert weight
            path = f"{path}.{module.parameter_name}"
        kind = targets.kinds.get(path) if targets and path in targets.kinds else block_kind(path, moe)
        per_kind.setdefault(kind, []).append(path)
        # this layer's own LoRA weights only: a wrapped expert weight nests the next one inside it
        own = [getattr(module, a, None) for a in ("lora_A", "lora_B", "lora_magnitude_vector")]
        params[kind] = params.get(kind, 0) + sum(
            p.numel() for part in own if part is not None for p in part.parameters() if p.requires_grad
        )
    lines = []
    for kind, paths in sorted(per_kind.items()):
        names = sorted({".".join(p.split(".")[-2:]) if p.split(".")[-1].isdigit() else p.split(".")[-1]
                        for p in paths})  # fmt: skip
        lines.append(
            f"LoRA on {kind}: {len(paths)} weights ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}), "
            f"{params[kind]:,} trainable parameters"
        )
    if targets:
        for kind, paths in sorted(targets.skipped.items()):
            lines.append(
                f"LoRA not on {kind}: {len(paths)} weights left frozen ({targets.skip_reasons[kind]})"
            )
    return lines


def _plain_path(name: str) -> str:
    """A module path inside a PeftModel without PEFT's wrapping parts (base_model.model., base_layer.)."""
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace(".base_layer", "")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
