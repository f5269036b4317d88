"""Text metrics against hand-computed values, English and Chinese."""

from __future__ import annotations

import math

import pytest

from llm_tuning.eval.metrics import (
    contains,
    corpus_bleu,
    exact_match,
    rouge_l,
    score_rows,
    segment,
    sentence_bleu,
    token_f1,
)


def test_segment_splits_cjk_characters_words_and_drops_punctuation():
    assert segment("Hello, World! 你好世界 3.5") == ["hello", "world", "你", "好", "世", "界", "3", "5"]
    assert segment("  ") == []


def test_segment_with_jieba_gives_chinese_words():
    pytest.importorskip("jieba")
    assert segment("我爱北京天安门 ok", "jieba") == ["我", "爱", "北京", "天安门", "ok"]


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("12 + 7 = 19", "19", 1.0),  # numeric target: the reply's final number counts
        ("The answer is 19", "12 + 7 = 19", 1.0),
        ("12 + 7 = 18", "12 + 7 = 19", 0.0),
        ("  Paris \n", "Paris", 1.0),  # text target: equal up to spaces
        ("Paris.", "Paris", 0.0),
        ("北京", "北京", 1.0),
    ],
)
def test_exact_match(prediction, target, expected):
    assert exact_match(prediction, target) == expected


def test_token_f1_and_contains():
    assert token_f1(segment("the cat sat"), segment("The cat")) == pytest.approx(0.8)  # P 2/3, R 1
    assert token_f1(segment("狗"), segment("猫")) == 0.0
    assert contains(segment("The capital is Paris."), segment("paris")) == 1.0
    assert contains(segment("北京是首都"), segment("首都")) == 1.0
    assert contains(segment("首是都"), segment("首都")) == 0.0  # contiguous only


def test_rouge_l():
    assert rouge_l(list("abcd"), list("aced")) == pytest.approx(0.75)  # LCS a c d: P = R = 3/4
    # 我爱北京 is the LCS: P 4/7, R 1 -> F = 8/11
    assert rouge_l(segment("我爱北京天安门"), segment("我爱北京")) == pytest.approx(8 / 11)
    assert rouge_l([], ["a"]) == 0.0


def test_bleu_sentence_and_corpus():
    ref = segment("the cat is on the mat")
    sat = segment("the cat sat on the mat")
    assert sentence_bleu(ref, ref) == pytest.approx(1.0)
    # matches: 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3; add-one above unigrams
    assert sentence_bleu(sat, ref) == pytest.approx((5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)
    # every n-gram of "the cat" matches; brevity penalty exp(1 - 6/2)
    assert sentence_bleu(segment("the cat"), ref) == pytest.approx(math.exp(-2))
    assert corpus_bleu([sat], [ref]) == 0.0  # no 4-gram matches anywhere: unsmoothed corpus BLEU is 0
    assert corpus_bleu([ref, sat], [ref, ref]) == pytest.approx((11 / 12 * 8 / 10 * 5 / 8 * 3 / 6) ** 0.25)


def test_bleu_on_chinese_characters():
    ref = segment("今天天气很好")
    assert sentence_bleu(segment("今天天气很好"), ref) == pytest.approx(1.0)
    # 今天天气不好: 1-grams 5/6, 2-grams 3/5 (今天 天天 天气), 3-grams 2/4, 4-grams 1/3
    assert corpus_bleu([segment("今天天气不好")], [ref]) == pytest.approx(
        (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    )


def test_score_rows_means_and_corpus_bleu():
    scores = score_rows(["exact_match", "token_f1", "bleu"], ["19", "a b"], ["19", "c d"])
    assert scores.per_row["exact_match"] == [1.0, 0.0]
    assert scores.overall["exact_match"] == 0.5
    assert scores.overall["token_f1"] == 0.5
    assert scores.overall["bleu"] == 0.0  # corpus BLEU: "19" alone has no 2-grams
