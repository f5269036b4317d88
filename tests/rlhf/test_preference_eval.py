"""rlhf/preference_eval.py: the held-out scores every preference method is compared by, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from llm_tuning.rlhf.preference_eval import label_scores, pair_scores


def test_pair_scores_compare_log_ratios_to_the_start_model():
    # pair 0: chosen up 1, rejected down 1 -> margin +2; pair 1: both up 1 -> 0 (not counted);
    # pair 2: chosen down 0.5 -> -0.5. The policy itself prefers chosen on pairs 0 and 1 only.
    scores = pair_scores(
        policy_chosen=torch.tensor([-4.0, -2.0, -6.5]),
        policy_rejected=torch.tensor([-7.0, -3.0, -5.0]),
        start_chosen=torch.tensor([-5.0, -3.0, -6.0]),
        start_rejected=torch.tensor([-6.0, -4.0, -5.0]),
    )
    assert scores["preference_accuracy"] == pytest.approx(1 / 3)
    assert scores["logratio_margin"] == pytest.approx((2.0 + 0.0 - 0.5) / 3)
    assert scores["policy_accuracy"] == pytest.approx(2 / 3)
    assert scores["rows"] == 3


def test_label_scores_count_moves_in_the_labelled_direction():
    policy = torch.tensor([-1.0, -3.0, -2.0, -4.0])
    start = torch.tensor([-2.0, -2.0, -2.0, -5.0])  # log-ratios +1, -1, 0, +1
    labels = torch.tensor([True, False, False, False])
    scores = label_scores(policy, start, labels)
    assert scores["label_agreement"] == pytest.approx(2 / 4)  # a log-ratio of 0 agrees with neither label
    assert scores["desirable_logratio"] == pytest.approx(1.0)
    assert scores["undesirable_logratio"] == pytest.approx(0.0)
    assert "desirable_logratio" not in label_scores(policy, start, torch.zeros(4, dtype=torch.bool))
