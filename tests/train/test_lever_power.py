"""The start-up lever check can see what packing changes: token by token, and by structure where the
numbers alone could miss it (models without position_ids, recurrent layers); a NaN model stops it."""

from __future__ import annotations

import logging

import pytest
import torch
from arch_configs import tiny_config
from remote_model import write_remote_model

from llm_tuning.models.load import NonFiniteError
from llm_tuning.train.packed_attention import use_packed_attention
from llm_tuning.train.speed import check_levers, packing_blocker


def tiny(arch: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=256))


@pytest.mark.parametrize(("arch", "reason"), [("rwkv", "takes no position_ids"), ("mamba", "takes no position_ids"),
                                              ("jamba", "carry a state")])  # fmt: skip
def test_packing_off_for_models_whose_state_crosses_rows(arch, reason, caplog):
    model = tiny(arch)
    assert reason in packing_blocker(model)
    with caplog.at_level(logging.INFO, logger="llm_tuning.train.speed"):
        assert not check_levers(model, packing=True, lean_logits=False).packing
    assert any(reason in r.getMessage() for r in caplog.records)


def test_attention_models_have_no_structural_blocker(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert packing_blocker(model) is None
    assert use_packed_attention(model)  # as train does before the check: attention row by row
    assert check_levers(model, packing=True, lean_logits=True).packing  # the numbers agree: kept on


def test_a_model_that_ignores_position_ids_loses_packing_by_the_numbers(tmp_path):
    """Our remote-code model takes position_ids but attends across packed rows anyway."""
    from transformers import AutoModelForCausalLM

    write_remote_model(tmp_path, vocab_size=256)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert packing_blocker(model) is None
    assert not check_levers(model, packing=True, lean_logits=False).packing


def test_a_nan_model_stops_the_check_even_with_every_lever_off(tmp_path):
    from transformers import AutoModelForCausalLM

    write_remote_model(tmp_path, vocab_size=256, broken_cache=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    with pytest.raises(NonFiniteError, match="cos_cached"):
        check_levers(model, packing=False, lean_logits=False)
