"""Prompt-lookup drafts: the pure pieces (which tokens are drafted, how many are kept, the cache shift)."""

from __future__ import annotations

import torch

from llm_tuning.models.lookahead import accepted, find_draft, shift_right


def test_find_draft_takes_what_followed_the_longest_earlier_ngram():
    seq = [5, 6, 7, 8, 9, 1, 6, 7]
    assert find_draft(seq, 2) == [8, 9]  # "6 7" came before, followed by 8 9
    assert find_draft(seq, 10) == [8, 9, 1, 6, 7]  # up to the end of what is known
    assert find_draft([1, 2, 3, 4], 3) == []  # nothing repeats
    assert find_draft([4, 1, 2, 9, 2], 2, max_ngram=3) == [9, 2]  # falls back to the 1-gram "2"
    assert find_draft([7], 3) == []


def test_accepted_counts_the_leading_agreement():
    assert accepted([1, 2, 3], [1, 2, 4, 5]) == 2
    assert accepted([1, 2, 3], [9, 2, 3, 5]) == 0
    assert accepted([1, 2], [1, 2, 7]) == 2
    assert accepted([], [4]) == 0


def test_shift_right_moves_each_row_by_its_own_amount():
    t = torch.arange(12).view(2, 6)  # (batch, length)
    out = shift_right(t, torch.tensor([2, 0]), 1)
    assert out[0, 2:].tolist() == [0, 1, 2, 3] and out[1].tolist() == t[1].tolist()
    cache = torch.arange(2 * 3 * 5 * 4).view(2, 3, 5, 4).float()  # (batch, heads, length, dim)
    moved = shift_right(cache, torch.tensor([1, 3]), 2)
    assert torch.equal(moved[0, :, 1:], cache[0, :, :4]) and torch.equal(moved[1, :, 3:], cache[1, :, :2])
