"""Masked statistics and per-token log-probabilities: the tensor helpers under every RLHF loss.

Pure functions over torch tensors, used by `llm-tuning ppo` / `grpo` (advantage whitening, token-mean
losses) and `llm-tuning dpo` (sequence log-probs). A mask is 1 (or True) where a token counts, 0
where it is padding or prompt; it has the shape of the values it masks.

    from llm_tuning.rlhf.masked_ops import logprobs_from_logits, masked_mean
    logps = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])  # (batch, seq - 1)
    mean_logp = masked_mean(logps, response_mask[:, 1:])
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is set; masked positions are ignored even if they hold NaN or inf."""
    mask = mask.to(values.dtype)
    # where(), not values * mask: padding can hold -inf log-probs, and -inf * 0 is NaN
    kept = torch.where(mask != 0, values * mask, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: int | None = None, keepdim: bool = False
) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is set; 0 (not NaN) when nothing is set.

    dim=None reduces over every element (a token mean over the whole batch, as TRL and OpenRLHF do
    for the PPO losses); dim=-1 gives one mean per sequence.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        total, count = masked_sum(values, mask), mask.sum()
    else:
        total, count = masked_sum(values, mask, dim), mask.sum(dim)
    # when count is 0 the total is 0 too, so dividing by a tiny positive number gives 0, with 0 gradient
    mean = total / count.clamp(min=torch.finfo(values.dtype).tiny)
    if keepdim and dim is not None:
        mean = mean.unsqueeze(dim)
    return mean


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked-in `values` (all dimensions together), a 0-dim tensor.

    unbiased=True applies Bessel's correction n / (n - 1) as TRL does; with fewer than two tokens the
    unbiased variance is undefined and 0 is returned, so whitening then maps every token to 0.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if not unbiased:
        return var
    count = mask.sum()
    safe_denominator = torch.where(count > 1, count - 1, torch.ones_like(count))
    bessel = torch.where(count > 1, count / safe_denominator, torch.zeros_like(count))
    return var * bessel


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise the masked-in `values` to unit variance; positions outside the mask become 0.

    shift_mean=True also centres them on 0 (advantages); shift_mean=False adds the mean back, so
    only the scale changes (TRL's option, used to whiten rewards without changing their sign balance).
    Statistics are taken over every masked-in token of the batch together.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def _gather_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # log_softmax(x)[y] = x[y] - logsumexp(x): avoids a second (..., vocab) tensor of log-probs
    picked = torch.gather(logits, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Log-probability of each label under the softmax of its logits.

    logits: (batch, seq, vocab); labels: (batch, seq) token ids, already aligned with the logits
    (for a causal LM pass `logits[:, :-1]` and `input_ids[:, 1:]`). Positions whose label is
    `ignore_index` get 0. Returns (batch, seq), in float32 when the logits are fp16 / bf16.
    """
    ignored = labels == ignore_index
    safe_labels = labels.masked_fill(ignored, 0)
    if logits.dtype in (torch.float16, torch.bfloat16):
        # a float32 copy of the whole (batch, seq, vocab) tensor can be the largest in a step: go row by row
        rows = [
            _gather_logprobs(row.float(), row_labels)
            for row, row_labels in zip(logits, safe_labels, strict=True)
        ]
        logps = torch.stack(rows)
    else:
        logps = _gather_logprobs(logits, safe_labels)
    return logps.masked_fill(ignored, 0.0)
