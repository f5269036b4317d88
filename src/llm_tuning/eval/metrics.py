"""Reference-based text metrics that work on Chinese as well as English: pure functions, shared by
`eval`, `forgetting` and training-time evaluation.

    from llm_tuning.eval.metrics import score_rows
    scores = score_rows(["exact_match", "rouge_l", "bleu"], predictions, targets)
    scores.per_row["rouge_l"][0], scores.overall["bleu"]

Every score is in [0, 1]. Text is segmented by `segment`: lowercased; Chinese (CJK) characters are one
token each (as sacrebleu's `zh` tokenizer does), or jieba words with `segmenter="jieba"` (as the original
tutorial's rouge_chinese scores); other text splits into runs of letters and digits; punctuation is dropped.

- exact_match: the demo's normalisation: when the target is a number or ends in `= NUMBER`, the reply's final
  number must equal it (eval/answers.py); otherwise the texts must be equal up to surrounding/repeated spaces.
- contains: the target's tokens occur, in order and contiguous, in the reply's ("Paris" in "It is Paris.").
- token_f1: SQuAD's F1 of the token multisets of reply and target.
- rouge_l: F1 of the longest common subsequence of tokens (beta 1, as rouge-score and rouge_chinese).
- bleu: overall, corpus BLEU-4 (Papineni et al.: clipped n-gram precisions summed over all rows, geometric
  mean, brevity penalty on total lengths); per row, sentence BLEU-4 with add-one smoothing of the 2..4-gram
  precisions (Lin & Och 2004), so one missing 4-gram does not zero a row.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llm_tuning.config import ConfigError
from llm_tuning.eval.answers import final_number, is_correct

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{CJK}]+|(?:(?![{CJK}])[^\W_])+")
_NUMERIC_TARGET = re.compile(r"(?:[^\n]*=\s*)?-?[\d,]*\.?\d+")
SEGMENTERS = ("char", "jieba")


def _jieba_words(text: str) -> list[str]:
    try:
        import jieba
    except ImportError as err:
        raise ConfigError(
            "--segmenter jieba needs the jieba package: pip install 'llm-tuning[zh]' (or jieba)"
        ) from err
    jieba.setLogLevel(60)  # its dictionary-loading notice is not the user's business
    return jieba.lcut(text)


def segment(text: str, segmenter: str = "char") -> list[str]:
    """Lowercased tokens of `text`: each CJK character (or jieba word) and each run of letters/digits."""
    tokens: list[str] = []
    for piece in _TOKEN.findall(text.lower()):
        if "\u3400" <= piece[0] and re.match(rf"[{CJK}]", piece):
            tokens.extend(list(piece) if segmenter == "char" else _jieba_words(piece))
        else:
            tokens.append(piece)
    return tokens


def is_numeric_target(target: str) -> bool:
    return bool(_NUMERIC_TARGET.fullmatch(target.strip()))


def exact_match(prediction: str, target: str) -> float:
    """1.0 when the reply gives the target's answer (see the module docstring), else 0.0."""
    if is_numeric_target(target):
        answer = final_number(target)
        return float(answer is not None and is_correct(prediction, answer))
    return float(" ".join(prediction.split()) == " ".join(target.split()))


def contains(pred: list[str], ref: list[str]) -> float:
    if not ref:
        return float(not pred)
    n = len(ref)
    return float(any(pred[i : i + n] == ref for i in range(len(pred) - n + 1)))


def token_f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) x len(b)) time, O(len(b)) memory)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu_counts(pred: list[str], ref: list[str], order: int = 4) -> tuple[list[int], list[int], int, int]:
    """(clipped matches per n, candidate n-grams per n, candidate length, reference length)."""
    matches, totals = [], []
    for n in range(1, order + 1):
        cand, refs = _ngrams(pred, n), _ngrams(ref, n)
        matches.append(sum(min(c, refs[g]) for g, c in cand.items()))
        totals.append(max(len(pred) - n + 1, 0))
    return matches, totals, len(pred), len(ref)


def _bleu(matches: list[int], totals: list[int], cand_len: int, ref_len: int, smooth: bool) -> float:
    if cand_len == 0:
        return float(ref_len == 0)
    logs = []
    for n, (m, t) in enumerate(zip(matches, totals, strict=True)):
        if smooth and n > 0:
            m, t = m + 1, t + 1
        if m == 0 or t == 0:
            return 0.0
        logs.append(math.log(m / t))
    brevity = 1.0 if cand_len >= ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(sum(logs) / len(logs))


def sentence_bleu(pred: list[str], ref: list[str]) -> float:
    return _bleu(*bleu_counts(pred, ref), smooth=True)


def corpus_bleu(preds: list[list[str]], refs: list[list[str]]) -> float:
    counts = [bleu_counts(p, r) for p, r in zip(preds, refs, strict=True)]
    if not counts:
        return 0.0
    matches = [sum(c[0][n] for c in counts) for n in range(4)]
    totals = [sum(c[1][n] for c in counts) for n in range(4)]
    return _bleu(matches, totals, sum(c[2] for c in counts), sum(c[3] for c in counts), smooth=False)


TokenMetric = Callable[[list[str], list[str]], float]
TOKEN_METRICS: dict[str, TokenMetric] = {
    "contains": contains,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "bleu": sentence_bleu,
}
GENERATION_METRICS = ("exact_match", *TOKEN_METRICS)
LOSS_METRICS = ("loss", "perplexity")  # scored from the targets' likelihood: no generation
BUILTIN_METRICS = GENERATION_METRICS + LOSS_METRICS
HIGHER_IS_BETTER = {**dict.fromkeys(GENERATION_METRICS, True), "loss": False, "perplexity": False}


@dataclass
class Scores:
    per_row: dict[str, list[float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)


def score_rows(
    metrics: Sequence[str], predictions: Sequence[str], targets: Sequence[str], segmenter: str = "char"
) -> Scores:
    """Per-row and overall scores of the built-in generation metrics named in `metrics`."""
    scores = Scores()
    pred_tokens = [segment(p, segmenter) for p in predictions]
    ref_tokens = [segment(t, segmenter) for t in targets]
    for name in metrics:
        if name == "exact_match":
            values = [exact_match(p, t) for p, t in zip(predictions, targets, strict=True)]
        elif name in TOKEN_METRICS:
            fn = TOKEN_METRICS[name]
            values = [fn(p, r) for p, r in zip(pred_tokens, ref_tokens, strict=True)]
        else:
            continue
        scores.per_row[name] = values
        scores.overall[name] = sum(values) / len(values) if values else 0.0
    if "bleu" in scores.per_row:
        scores.overall["bleu"] = corpus_bleu(pred_tokens, ref_tokens)
    return scores
