"""The models `eval` and `forgetting` compare: the base, each --adapter, and their mix when weighted, all
on one PeftModel (switched with `use_adapter`), each adapter checked to fit the base model first."""

from __future__ import annotations

from typing import Any

from llm_tuning.infer.compare import variant_model
from llm_tuning.models.adapters import BASE, load_adapters, parse_adapter_spec
from llm_tuning.models.load import load_model, load_tokenizer


def load_variants(cfg: Any, mix_unweighted: bool = True) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, variant names starting with 'base') for an InferenceOptions config; several
    adapters are also mixed, unless `mix_unweighted` is False or --mix is given and every weight is 1 (checkpoints of
    one run); each --mix adds a variant computed per request (llm_tuning.models.row_mix)."""
    specs = [parse_adapter_spec(s, i) for i, s in enumerate(cfg.adapter)]
    tokenizer = load_tokenizer(cfg.model, cfg.trust_remote_code)
    model = load_model(cfg.model, cfg.dtype, cfg.device, cfg.trust_remote_code)
    if not specs:
        return model, tokenizer, [BASE]
    if not mix_unweighted and all(s.weight == 1.0 for s in specs) and not cfg.mix:
        return load_adapters(model, specs), tokenizer, [BASE, *(s.name for s in specs)]
    peft_model, names = variant_model(model, specs, cfg.mix_method, cfg.mix_density, cfg.mix)
    return peft_model, tokenizer, names
