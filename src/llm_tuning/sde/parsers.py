"""Parse a model's answer (or a rendered target) back into slot values, under a sample design.

    from llm_tuning.sde.parsers import parse_output
    parsed = parse_output(task, design, "食品评价：正面\\n饮品评价：未提及 ...")
    parsed.values        # {slot: label word} (sentiment) or {slot: [spans]} (extraction), every slot present
    parsed.format_error  # True when the answer is empty or a piece does not parse under the design
    parsed.errors        # what went wrong, one line each

Soft repair, as in the original evaluation scripts: an answer key maps to the slot it names, else to the first
slot one of whose keywords it contains; a label is the label word, synonym (积极 -> 正面) or number it contains
(the last one under CoT, where the evidence comes first); a slot missing from the answer, or with no valid
label, is unmentioned. Either half-width or full-width punctuation is accepted (：or :, ，or ,), as is an
"输出：" / "Answer:" cue or a line such as "Here are the entities:" before the answer. Bracketed evidence
(CoT) never counts as part of a label or a span list.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llm_tuning.sde.designs import Design
from llm_tuning.sde.tasks import Task

KV = re.compile(r"[:：]")
SENTIMENT_PAIRS = re.compile(r"[,，;；、\n]")
EXTRACTION_PAIRS = re.compile(r"[;；\n]")
SPANS = re.compile(r"[,，、]")
# bracketed evidence, and HTML entities (tweets keep `&quot;`): their separators never split an answer
PROTECTED = re.compile(r"[(（][^()（）]*[)）]|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
MASK = re.compile(r"\x00(\d+)\x00")
CUE = re.compile(r"^\s*(输出|答案|回答|结果|output|answer|result|response)\s*[:：]\s*", re.IGNORECASE)
QUOTES = "\"'“”‘’「」`"
NONE_WORDS = ("无", "none", "null", "n/a", "[]", "-", "没有")  # "nothing here", besides the task's none word


@dataclass
class Parsed:
    """Slot values parsed from one answer, with what did not parse."""

    values: dict[str, Any]
    format_error: bool = False
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.format_error = True
        self.errors.append(message)


def parse_output(task: Task, design: Design, text: str) -> Parsed:
    """Parse an answer written under `design` (see the module docstring for what is repaired)."""
    parser = PARSERS[design.output_format]
    return parser(task, design, text)


def empty_values(task: Task) -> dict[str, Any]:
    """Every slot unmentioned (sentiment) or with no span (extraction)."""
    return {slot: task.unmentioned if task.kind == "sentiment" else [] for slot in task.slots}


def _start(task: Task, text: str) -> tuple[Parsed, str | None]:
    """A fresh Parsed and the answer without its preamble; None when there is nothing left to parse."""
    parsed = Parsed(empty_values(task))
    body = strip_preamble(task, text or "")
    if not body:
        parsed.fail("empty output")
        return parsed, None
    if _is_none(task, body.strip(QUOTES + "。. ")):
        return parsed, None  # "nothing to list" (OU)
    return parsed, body


def strip_preamble(task: Task, text: str) -> str:
    """The answer without code fences, "输出：" / "Answer:" cues, and text ending in a colon before the first
    slot it names ("好的，以下是结果：食品评价：正面" -> "食品评价：正面"; "Entities:\nprotein: x" -> "protein: x")."""
    text = re.sub(r"^\s*```[a-zA-Z]*\s*\n?|\n?\s*```\s*$", "", text.strip()).strip()
    while True:
        match = CUE.match(text)
        if not match or match.group(1).lower() in (s.lower() for s in task.slots):
            break
        text = text[match.end() :].lstrip()
    lowered = text.lower()
    found = [lowered.find(w.lower()) for s in task.slots for w in (s, *task.keywords[s])]
    first = min((i for i in found if i >= 0), default=0)
    prefix = text[:first]  # a heading has one colon and names no slot (not "3: " of a numeric type)
    if re.fullmatch(r"[^:：]*[:：]\s*", prefix) and _find_slot(task, prefix.rstrip(" :：\n")) is None:
        text = text[first:]
    return text.strip()


# ---- natural and lines ----------------------------------------------------------------------------------


def parse_natural_output(task: Task, design: Design, text: str) -> Parsed:
    """`A：S，B：S。` (sentiment) or `A: s1, s2; B: None` (extraction), on one line or more."""
    parsed, body = _start(task, text)
    if body is None:
        return parsed
    masked, groups = _mask(_strip_end(task, body))
    splitter = SENTIMENT_PAIRS if task.kind == "sentiment" else EXTRACTION_PAIRS
    for piece in splitter.split(masked):
        if piece.strip():
            _parse_piece(task, design, piece, groups, parsed)
    return parsed


def parse_lines_output(task: Task, design: Design, text: str) -> Parsed:
    """One `A：S` per line; a sentiment line holding several pairs is split like the natural format."""
    parsed, body = _start(task, text)
    if body is None:
        return parsed
    masked, groups = _mask(body)
    for line in masked.split("\n"):
        line = _strip_end(task, line.strip())
        if not line:
            continue
        pieces = (
            SENTIMENT_PAIRS.split(line) if task.kind == "sentiment" and len(KV.findall(line)) > 1 else [line]
        )
        for piece in pieces:
            if piece.strip():
                _parse_piece(task, design, piece, groups, parsed)
    return parsed


def _parse_piece(task: Task, design: Design, piece: str, groups: list[str], parsed: Parsed) -> None:
    """One `key：value` piece (masked) into `parsed`."""
    seps = list(KV.finditer(piece))
    # junk may precede a sentiment aspect ("以下是结果：食品评价：正面") and never follows a label; a span may hold a colon
    cut = (seps[-1] if task.kind == "sentiment" else seps[0]) if seps else None
    key, value = (piece[: cut.start()], piece[cut.end() :]) if cut else ("", "")
    key = _clean(_unmask(key, groups))
    if not key or not value.strip():
        parsed.fail(f"{_unmask(piece, groups).strip()!r} does not split into a key and a value")
        return
    slot = _find_slot(task, key)
    if slot is None:
        _unknown_key(task, key, parsed)
        return
    if task.kind == "sentiment":
        _set_label(task, design, slot, value, groups, parsed)
        return
    if design.reasoning == "cot":
        value = re.sub(r"^\s*\x00\d+\x00", "", value)
    elif design.reasoning == "rcot":
        value = re.sub(r"\x00\d+\x00\s*$", "", value)
    spans = [_clean_span(_unmask(s, groups)) for s in SPANS.split(value)]
    parsed.values[slot].extend(s for s in spans if not _is_none(task, s))


# ---- JSON and heuristic ---------------------------------------------------------------------------------

_KEY_FIELDS = ("aspect", "type", "entity_type", "event_type", "slot", "key", "name")
_VALUE_FIELDS = ("sentiment", "label", "polarity", "span", "spans", "entity", "entity_name", "entity_names")
_VALUE_FIELDS += ("trigger", "trigger word", "trigger_word", "value")


def parse_json_output(task: Task, design: Design, text: str) -> Parsed:
    """One JSON object per line ({"aspect", "sentiment"} / {"type", "span"}), or one JSON list of them."""
    parsed, body = _start(task, text)
    if body is None:
        return parsed
    whole = _literal(body)
    items = (
        [whole] if isinstance(whole, dict) or _is_pair(whole) else whole if isinstance(whole, list) else None
    )
    if items is None:
        items = []
        for line in body.split("\n"):
            line = line.strip().rstrip(",")
            if line and line not in ("[", "]"):
                item = _literal(line)
                if item is None:
                    parsed.fail(f"{line!r} is not a JSON object")
                else:
                    items.append(item)
    for item in items:
        _json_item(task, design, item, parsed)
    return parsed


def _json_item(task: Task, design: Design, item: Any, parsed: Parsed) -> None:
    if isinstance(item, (list, tuple)):
        _heuristic_item(task, design, item, parsed)
        return
    if not isinstance(item, dict):
        parsed.fail(f"{item!r} is not a JSON object")
        return
    keys = [k for k in _KEY_FIELDS if k in item]
    values = [k for k in _VALUE_FIELDS if k in item]
    if keys and values:
        pairs = [(item[keys[0]], item[values[0]])]
    elif all(_find_slot(task, str(k)) is not None for k in item) and item:  # {"食品评价": "正面", ...}
        pairs = list(item.items())
    else:
        parsed.fail(
            f"{json.dumps(item, ensure_ascii=False)} has no {task.key_name} / {task.value_name} fields"
        )
        return
    for key, value in pairs:
        _set_value(task, design, str(key), value, parsed)


def parse_heuristic_output(task: Task, design: Design, text: str) -> Parsed:
    """One `["type", "span"]` list per line (the original's heuristic format); `[]` when there is none."""
    parsed, body = _start(task, text)
    if body is None:
        return parsed
    for line in body.split("\n"):
        line = line.strip().rstrip(",")
        if not line:
            continue
        item = _literal(line)
        if item is None and "[" in line and "]" in line:  # text around the list, or ( ) for [ ]
            inner = line[line.find("[") : line.rfind("]") + 1]
            item = _literal(inner)
            item = _literal(inner.replace("(", "[").replace(")", "]")) if item is None else item
        if not isinstance(item, (list, tuple)):
            parsed.fail(f'{line!r} is not a ["{task.key_name}", "{task.value_name}"] list')
            continue
        _heuristic_item(task, design, item, parsed)
    return parsed


def _heuristic_item(task: Task, design: Design, item: list | tuple, parsed: Parsed) -> None:
    """[key, value], [key, v1, v2, ...], [] or a list of such lists."""
    if not item:
        return
    if all(isinstance(x, (list, tuple)) for x in item):
        for sub in item:
            _heuristic_item(task, design, sub, parsed)
        return
    if len(item) < 2 or not all(isinstance(x, (str, int, float)) for x in item):
        parsed.fail(f"{list(item)!r} is not a [{task.key_name}, {task.value_name}] pair")
        return
    for value in item[1:]:
        _set_value(task, design, str(item[0]), value, parsed)


def _set_value(task: Task, design: Design, key: str, value: Any, parsed: Parsed) -> None:
    """A (key, value) read from JSON: a label (sentiment) or spans (extraction)."""
    slot = _find_slot(task, _clean(key))
    if slot is None:
        _unknown_key(task, _clean(key), parsed)
        return
    if task.kind == "sentiment":
        masked, groups = _mask(str(value if value is not None else ""))
        _set_label(task, design, slot, masked, groups, parsed)
        return
    spans = value if isinstance(value, list) else [value]
    for span in spans:
        text = _clean_span(str(span)) if span is not None else ""
        if not _is_none(task, text):
            parsed.values[slot].append(text)


# ---- pieces -------------------------------------------------------------------------------------------


def _set_label(task: Task, design: Design, slot: str, value: str, groups: list[str], parsed: Parsed) -> None:
    """The label of a (masked) value, without its bracketed evidence; unmentioned when there is none."""
    outside = MASK.sub(" ", value)
    label = find_label(task, outside, last=design.reasoning == "cot")
    if label is None:
        label = find_label(task, _unmask(value, groups), last=design.reasoning == "cot")
    if label is None:
        parsed.errors.append(
            f"{slot}: {_unmask(value, groups).strip()!r} is not a label; read as {task.unmentioned}"
        )
        label = task.unmentioned
    parsed.values[slot] = label


def find_label(task: Task, text: str, last: bool = False) -> str | None:
    """The label word `text` is, or contains (first match, or last with `last`); None if it has none."""
    text = text.strip().strip(QUOTES + "。.,，;；!！ ")
    lowered = text.lower()
    names = {**{w: w for w in task.label_words}, **task.synonyms}
    for name, word in names.items():
        if lowered == name.lower():
            return word
    if task.word_of(text):
        return task.word_of(text)
    found = [
        (m.start(), m.end(), word)
        for name, word in names.items()
        for m in re.finditer(re.escape(name.lower()), lowered)
    ]
    found += [
        (m.start(), m.end(), task.word_of(m.group())) for m in re.finditer(r"(?<![\d.])-?\d+(?![\d.])", text)
    ]
    found = [f for f in found if f[2]]
    if not found:
        return None
    pick = (
        max(found, key=lambda f: (f[1], f[1] - f[0]))
        if last
        else min(found, key=lambda f: (f[0], f[0] - f[1]))
    )
    return pick[2]


def _find_slot(task: Task, key: str) -> str | None:
    """The slot an answer key names: exactly, by number, loosely (cell type = cell_type), or by keyword."""
    key = key.strip().strip(QUOTES).strip()
    lowered = key.lower()
    for slot in task.slots:
        if lowered == slot.lower():
            return slot
    if task.kind == "extraction" and task.word_of(key):
        return task.word_of(key)
    loose = re.sub(r"[\s_\-]+", "", lowered)
    for slot in task.slots:
        if loose == re.sub(r"[\s_\-]+", "", slot.lower()):
            return slot
    for slot in task.slots:
        if any(kw.lower() in lowered for kw in task.keywords[slot]):
            return slot
    return None


def _unknown_key(task: Task, key: str, parsed: Parsed) -> None:
    message = f"{key!r} is not a {task.key_name} of task {task.name}"
    if task.kind == "extraction":
        parsed.fail(message)  # an undefined type: the answer does not follow the task (as the GENIA scorer)
    else:
        parsed.errors.append(message + "; ignored")


def _strip_end(task: Task, text: str) -> str:
    text = text.rstrip()
    if task.kind == "sentiment":
        return text.rstrip("。.！!")
    if task.end and text.endswith(task.end):
        return text[: -len(task.end)].rstrip()
    return text


def _clean(text: str) -> str:
    """A key without bullets ("- ", "1. "), quotes and surrounding blanks."""
    text = re.sub(r"^\s*(?:[-*•]|\d+[.)、])\s+", "", text.strip())
    return text.strip().strip(QUOTES).strip()


def _clean_span(text: str) -> str:
    return text.strip().strip(QUOTES).strip()


def _is_none(task: Task, text: str) -> bool:
    """Empty, or a word that means "nothing here"."""
    lowered = text.strip().lower()
    return not lowered or lowered == task.none_word.lower() or lowered in NONE_WORDS


def _is_pair(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(isinstance(x, (str, int, float)) for x in item)


def _mask(text: str) -> tuple[str, list[str]]:
    """Bracketed groups and HTML entities replaced by \\x00i\\x00, so the separators inside them (evidence,
    `&quot;`) do not split the answer."""
    groups: list[str] = []

    def keep(match: re.Match) -> str:
        groups.append(match.group())
        return f"\x00{len(groups) - 1}\x00"

    return PROTECTED.sub(keep, text), groups


def _unmask(text: str, groups: list[str]) -> str:
    return MASK.sub(lambda m: groups[int(m.group(1))], text)


def _literal(text: str) -> Any:
    """JSON, else a Python literal (single quotes), else None."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        pass
    try:
        with warnings.catch_warnings():  # model output such as "1a" makes the compiler warn
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


PARSERS: dict[str, Callable[[Task, Design, str], Parsed]] = {
    "natural": parse_natural_output,
    "lines": parse_lines_output,
    "json": parse_json_output,
    "heuristic": parse_heuristic_output,
}
