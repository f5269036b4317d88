"""Reward functions: the built-ins, loading a user's function, and the errors that name it."""

from __future__ import annotations

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.rlhf.rewards import RewardFunctionError, call_reward, columns_of, load_reward, load_rewards

COMPLETIONS = ["12 + 7 = 19", "12 + 7 = 20", "The answer is 19", "19\nsure"]


def test_exact_match_reads_answer_or_target():
    fn = load_reward("exact_match")
    columns = columns_of([{"answer": 19}] * 4)
    assert call_reward(fn, ["q"] * 4, COMPLETIONS, columns) == [1.0, 0.0, 1.0, 1.0]
    columns = columns_of([{"target": "12 + 7 = 19"}] * 4)
    assert call_reward(fn, ["q"] * 4, COMPLETIONS, columns) == [1.0, 0.0, 1.0, 1.0]


def test_format_wants_one_line_ending_in_a_number():
    assert call_reward(load_reward("format"), ["q"] * 4, COMPLETIONS, {}) == [1.0, 1.0, 0.0, 0.0]


def test_user_function_from_a_file_and_its_weight(reward_file):
    (reward,) = load_rewards([f"{reward_file}:length_reward"], [2.0])
    assert reward.weight == 2.0 and reward.key == "length_reward"
    assert call_reward(reward, ["q", "q"], ["abcde", ""], {}) == [0.5, 0.0]


@pytest.mark.parametrize(
    ("name", "message"),
    [("broken", "broken raised ZeroDivisionError: division by zero"),
     ("not_a_number", "not_a_number returned 'good' \\(str\\) for completion 0"),
     ("too_few", "too_few must return a list of 2 numbers .* got 1 values")],
)  # fmt: skip
def test_a_failing_reward_function_is_named(reward_file, name, message):
    reward = load_reward(f"{reward_file}:{name}")
    with pytest.raises(RewardFunctionError, match=message):
        call_reward(reward, ["q", "q"], ["a", "b"], {})


def test_exact_match_without_answers_is_a_clear_error():
    with pytest.raises(RewardFunctionError, match="exact_match raised ValueError: .*`answer`"):
        call_reward(load_reward("exact_match"), ["q"], ["1"], columns_of([{"other": 1}]))


def test_unknown_rewards_are_config_errors(reward_file):
    with pytest.raises(ConfigError, match="not a built-in reward"):
        load_reward("accuracy")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        load_reward("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        load_reward(f"{reward_file}:missing")
    with pytest.raises(ConfigError, match="2 weights for 1"):
        load_rewards(["format"], [1.0, 2.0])


@pytest.mark.parametrize("command", ["grpo", "ppo"])
def test_reward_help_warns_that_a_file_runs_as_code(command, capsys):
    from llm_tuning.cli import main

    assert main([command, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "RUNS AS PYTHON CODE" in help_text and "YAML recipe" in help_text
