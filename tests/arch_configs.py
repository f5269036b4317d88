"""Tiny random configs of every causal-LM architecture in the installed transformers.

    from arch_configs import causal_lm_types, tiny_config

`tiny_config(model_type, vocab_size)` shrinks a model type's default config to hidden 64, 2 layers and a
small vocabulary (and 4 experts of which 2 are active, for mixtures of experts), so that each builds in
about a second on a CPU. The keys are set only where the default config has them.
"""

from __future__ import annotations

from typing import Any

SIZES: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
    "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256, "n_ctx": 256, "n_inner": 128,
    "d_model": 64, "d_ff": 128, "ffn_dim": 128, "num_layers": 2, "n_layers": 2, "n_heads": 4,
    "decoder_layers": 2, "decoder_attention_heads": 4, "decoder_ffn_dim": 128, "encoder_layers": 2,
    "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "emb_size": 64, "d_kv": 16, "dim": 64,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "expert_intermediate_size": 32,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "top_k": 2, "moe_k": 2, "n_shared_experts": 1,
    "num_shared_experts": 1, "moe_num_shared_experts": 1, "first_k_dense_replace": 1,
    "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "n_group": 1, "topk_group": 1, "num_key_value_groups": 1,
    "state_size": 8, "expand": 2, "conv_kernel": 4, "mamba_d_state": 8, "mamba_n_heads": 8,
    "mamba_d_head": 16, "mamba_headdim": 16, "mamba_expand": 2, "ssm_state_size": 8, "time_step_rank": 8,
    "attention_hidden_size": 64, "hidden_size_per_head": 16, "n_mamba_heads": 2,
    "linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 16,
    "linear_value_head_dim": 16, "rotary_dim": 8, "num_experts_per_token": 2, "num_heads": 8,
    "attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
    "num_dense_layers": 1, "n_groups": 1, "dff": 128,
}  # fmt: skip
# keys whose default may be None (derived later) that a tiny mixture of experts still needs
NULLABLE = {"num_experts_per_tok", "n_routed_experts", "n_shared_experts", "n_group", "topk_group",
            "num_key_value_heads", "intermediate_size", "head_dim"}  # fmt: skip
# what the generic shrinking gets wrong for a few types (None removes a key)
OVERRIDES: dict[str, dict[str, Any]] = {
    # two hybrid layers, so that the shared transformer block really is shared
    "zamba": {"num_hidden_layers": 4, "attention_head_dim": 32, "attention_hidden_size": 128, "num_key_value_heads": 4,
              "layers_block_type": ["linear_attention", "hybrid", "linear_attention", "hybrid"]},
    "zamba2": {"num_hidden_layers": 4, "head_dim": None, "attention_head_dim": 32, "mamba_headdim": 16,
               "attention_hidden_size": 128, "num_key_value_heads": 4,
               "hybrid_layer_ids": [1, 3],
               "layers_block_type": ["linear_attention", "hybrid", "linear_attention", "hybrid"]},
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "attention"]},
    "nemotron_h": {"layers_block_type": ["linear_attention", "moe", "full_attention", "mlp"],
                   "num_hidden_layers": 4, "mamba_num_heads": 8, "mamba_head_dim": 16},
    "falcon_h1": {"mamba_d_ssm": 128, "mamba_d_head": 16},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    "gemma3n_text": {"activation_sparsity_pattern": [0.0, 0.0], "num_kv_shared_layers": 0,
                     "vocab_size_per_layer_input": 256, "hidden_size_per_layer_input": 16},
}  # fmt: skip

# ids the test tokenizer uses; a config's own special ids may lie outside a small vocabulary
SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "decoder_start_token_id": 1}


def causal_lm_types() -> list[str]:
    """Every model type transformers' AutoModelForCausalLM knows."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _shrink(defaults: Any, vocab_size: int) -> dict[str, Any]:
    known = defaults.to_dict()
    kwargs = {k: v for k, v in SIZES.items() if k in known and (known[k] is not None or k in NULLABLE)}
    if known.get("qk_rope_head_dim") and "head_dim" in kwargs:  # multi-head latent attention: rope dims
        kwargs["head_dim"] = SIZES["qk_rope_head_dim"]
    if known.get("qk_rope_head_dim") and "num_key_value_heads" in kwargs:  # latent attention: no grouped kv
        kwargs["num_key_value_heads"] = SIZES["num_attention_heads"]
    kwargs.update({k: v for k, v in SPECIAL.items() if k in known})
    for key in ("vocab_size", "n_vocab", "padded_vocab_size"):
        if key in known:
            kwargs[key] = vocab_size
    for key in ("layer_types", "layers_block_type", "block_types", "mlp_layer_types", "attention_layers"):
        value = known.get(key)
        if isinstance(value, list) and len(value) > 2:
            kinds = list(dict.fromkeys(value))[:2]  # keep the first two kinds of layer
            kwargs[key] = kinds if len(kinds) == 2 else value[:2]
    for key, value in OVERRIDES.get(getattr(defaults, "model_type", ""), {}).items():
        if value is None:
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    return kwargs


def tiny_config(model_type: str, vocab_size: int = 256) -> Any:
    """A small random config of `model_type` (sub-configs such as `text_config` shrunk too)."""
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(model_type)
    kwargs = _shrink(defaults, vocab_size)
    for sub in ("text_config", "decoder", "llm_config"):
        child = getattr(defaults, sub, None)
        if child is not None and hasattr(child, "to_dict"):
            kwargs[sub] = {**child.to_dict(), **_shrink(child, vocab_size)}
    return AutoConfig.for_model(model_type, **kwargs)
