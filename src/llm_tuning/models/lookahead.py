"""Prompt-lookup drafts for greedy rows of the batch engine, verified in one forward (exact for greedy).

    draft = find_draft(prompt_ids + generated, 4)       # the tokens that followed the last n-gram before
    j = accepted(draft, greedy_next_tokens)               # how many of them the model itself would produce

A row's next tokens are often a copy of something earlier in its prompt or reply (names, numbers, quoted
text). The engine feeds [last token, draft...] in one forward; the greedy token after each position says
which draft tokens the model would have produced itself, so the accepted ones plus the model's own next
token are exactly what one-token-at-a-time greedy decoding gives. On CPU a forward's cost is mostly reading
the weights while the batch is small, so checking a few extra tokens is nearly free there, and the engine
only drafts while rows x (draft + 1) stays under a token budget (BatchDecoder's `lookahead_tokens`).
"""

from __future__ import annotations

import torch


def find_draft(sequence: list[int], length: int, max_ngram: int = 3) -> list[int]:
    """Up to `length` tokens that followed the earliest earlier occurrence of the sequence's last n-gram
    (longest n first, n from `max_ngram` down to 1); [] when nothing matches."""
    for n in range(min(max_ngram, len(sequence) - 1), 0, -1):
        tail = sequence[-n:]
        first = tail[0]
        for start in range(len(sequence) - n):
            if sequence[start] == first and sequence[start : start + n] == tail:
                return sequence[start + n : start + n + length]
    return []


def accepted(draft: list[int], predicted: list[int]) -> int:
    """How many leading draft tokens equal the model's own greedy choices at those positions."""
    count = 0
    while count < len(draft) and draft[count] == predicted[count]:
        count += 1
    return count


def shift_right(t: torch.Tensor, shifts: torch.Tensor, dim: int) -> torch.Tensor:
    """Each row b of `t` moved `shifts[b]` places toward the end along `dim` (dropping what falls off the
    end; what enters at the start is arbitrary and must be masked out). `dim` counts from the batch dim 0."""
    length = t.shape[dim]
    index = (torch.arange(length, device=t.device)[None, :] - shifts[:, None]).clamp(min=0)  # (batch, length)
    shape = [t.shape[0]] + [1] * (t.dim() - 1)
    shape[dim] = length
    return t.gather(dim, index.view(shape).expand(t.shape))
