"""Attention for padding-free packed batches: causal SDPA row by row, never across the whole pack.

With rows packed into one sequence of T tokens, plain SDPA gets a (T, T) block-diagonal mask and computes
every one of the T^2 scores (and on CPU stores a float copy of the mask per layer for the backward):
for 8 rows of long-tailed lengths (bench/) that is ~5.7x the attention work of the rows on their own. Here, when the
batch carries the rows' boundaries (`cu_seq_lens_q`, as flash-attention's varlen kernels take them),
each row's slice of queries, keys and values goes through causal SDPA on its own. Anything else (no
boundaries, a batch of several rows, a row longer than a sliding window, soft-capping, attention
sinks) goes to the usual SDPA path unchanged, so the model computes exactly what it computes with `sdpa`.

Used by `llm-tuning train` when packing is on and the model runs `sdpa` (train/sft.py); the loss with
it is checked against the padded loss before training (train/speed.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "llm_tuning_packed_sdpa"

# kwargs that change what attention computes: with any of them set, the plain SDPA path decides
_SPECIAL = ("softcap", "s_aux", "position_bias")


def packed_sdpa_forward(
    module: Any,
    query: torch.Tensor,  # (1, heads, T, head_dim)
    key: torch.Tensor,  # (1, kv_heads, T, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA on each packed row; the plain SDPA path whenever that would not be the same maths."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else []
    longest = max((b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)), default=0)
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    special = any(kwargs.get(k) is not None for k in _SPECIAL) or (window and longest > window)
    if not bounds or special or query.shape[0] != 1 or key.shape[2] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      cu_seq_lens_q=cu_seq_lens_q, **kwargs)  # fmt: skip
    gqa = query.shape[1] != key.shape[1]
    parts = [
        F.scaled_dot_product_attention(
            query[:, :, a:b],
            key[:, :, a:b],
            value[:, :, a:b],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]
    out = torch.cat(parts, dim=2)  # (1, heads, T, head_dim)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make NAME a valid `attn_implementation` (its masks are SDPA's, for the fallback path)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_packed_attention(model: Any) -> bool:
    """Switch a model that runs `sdpa` to the row-by-row packed SDPA; False if it runs something else."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(
        model, "set_attn_implementation"
    ):
        return False
    register()
    model.set_attn_implementation(NAME)
    return getattr(model.config, "_attn_implementation", None) == NAME
