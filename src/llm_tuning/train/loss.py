"""The SFT loss with the vocabulary logits computed only where the loss is taken (`--lean_logits`).

    llm-tuning train --data train.jsonl --lean_logits true      # the default

A causal LM computes (batch, seq, vocab) fp32 logits at every position; with a 49k vocabulary that is
~200 KB per token, plus as much again for the log-softmax and its gradient, and ~20% of the model's
FLOPs. The loss only needs the positions whose next token is trained (the answer, not the prompt or the
padding). A forward pre-hook on the output layer keeps just those hidden states, so the model's own
head (and any logit scaling or soft-capping after it) runs on (1, K, hidden) instead of
(batch, seq, hidden). The loss is the sum of token cross-entropies over `num_items_in_batch`, as
transformers' ForCausalLMLoss computes it, so gradient accumulation and multi-device averaging are
unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import Trainer

from llm_tuning.data.encode import IGNORE_INDEX


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """(batch, seq) targets: position i predicts labels[i + 1]; the last position predicts nothing."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


@contextmanager
def head_only_at(model: Any, keep: torch.Tensor) -> Iterator[None]:
    """While active, the model's output layer sees only the hidden states where `keep` (batch, seq) is True."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no output embeddings to restrict; use --lean_logits false"
        )

    def select(_module: Any, args: tuple) -> tuple:
        hidden = args[0]  # (batch, seq, hidden)
        if hidden.shape[:2] != keep.shape:
            raise ValueError(f"lean logits: the head got hidden states {tuple(hidden.shape)}, expected "
                             f"{tuple(keep.shape)} + (hidden,); use --lean_logits false for this model")  # fmt: skip
        return (hidden[keep.to(hidden.device)].unsqueeze(0), *args[1:])  # (1, K, hidden)

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


CHUNK_ELEMENTS = 1 << 23  # fp32 work arrays of 32 MiB


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of (K, vocab) logits against (K,) targets, in fp32 one chunk of rows at a time.

    F.cross_entropy keeps fp32 log-probabilities (K, vocab) for the backward, which then makes two more
    arrays of that size; bf16 logits also get an fp32 copy first. This keeps the logits as they are and one
    log-sum-exp per row, and builds the gradient chunk by chunk: one (K, vocab) array in the backward
    instead of three, and no fp32 copy of all of them.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        chunk = max(1, CHUNK_ELEMENTS // logits.shape[-1])
        lse = torch.cat([torch.logsumexp(part.float(), dim=-1) for part in logits.split(chunk)])
        valid = targets != IGNORE_INDEX
        picked = logits.gather(1, targets.clamp_min(0)[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        return torch.where(valid, lse - picked, 0.0).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            probs = (logits[rows].float() - lse[rows, None]).exp_()  # softmax
            target = targets[rows]
            probs[torch.arange(len(target), device=probs.device), target.clamp_min(0)] -= 1.0
            probs.mul_(torch.where(target != IGNORE_INDEX, grad, 0.0)[:, None])
            out[rows] = probs
        return out, None


def token_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_items: torch.Tensor | int | None
) -> torch.Tensor:
    """Cross-entropy of (K, vocab) logits against (K,) targets: summed over `num_items`, else the mean."""
    logits = logits.reshape(-1, logits.shape[-1])
    total = ChunkedCrossEntropy.apply(logits, targets.to(logits.device))
    if num_items is None:
        return total / max(int((targets != IGNORE_INDEX).sum()), 1)
    if torch.is_tensor(num_items):
        num_items = num_items.to(total.device)
    return total / num_items


def lean_forward(
    model: Any, inputs: dict[str, Any], num_items: torch.Tensor | int | None, core: Any = None
) -> tuple[torch.Tensor, Any]:
    """(loss, outputs) with logits only at trained positions; `inputs` holds `labels` (batch, seq).

    `model` is what runs the forward (maybe wrapped by DDP / DeepSpeed); `core` the unwrapped model.
    """
    inputs = dict(inputs)
    targets = next_token_targets(inputs.pop("labels"))
    keep = targets != IGNORE_INDEX
    with head_only_at(core if core is not None else model, keep):
        outputs = model(**inputs)
    return token_loss(outputs.logits, targets[keep], num_items), outputs


class LeanLossTrainer(Trainer):
    """Trainer whose causal-LM loss computes the vocabulary logits only at trained positions."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if "labels" not in inputs or self.args.n_gpu > 1:  # nn.DataParallel splits the batch under the hook
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = lean_forward(model, inputs, num_items_in_batch, self.accelerator.unwrap_model(model))
        # as Trainer.compute_loss: num_items_in_batch counts every rank's tokens and DDP averages the gradients
        scaled = self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
        if scaled and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
