"""SDE tasks: a text plus a fixed, ordered set of slots to fill (aspects to rate, or entity/event types).

    from llm_tuning.sde.tasks import load_task
    task = load_task("masa_d1")             # a built-in: masa_d1, masa_d2, masa_en, genia, maven, wnut16
    task = load_task("configs/hotel.yaml")  # or a small YAML file of your own

A YAML task needs a name, kind, language and slots; every other field has a default per language:

    name: hotel
    kind: sentiment            # sentiment | extraction
    language: zh               # zh | en
    slots: [房间评价, 早餐评价, 位置]
    keywords: {房间评价: [房间, 客房]}   # soft matching of a model's aspect names (default: the slot)
    synonyms: {很好: 正面}              # extra words a model may use for a label

Sentiment label words are always given in the order positive, neutral, negative, unmentioned; their
numeric forms default to 1, 0, -1, -2 (as in MASA). Extraction types are numbered 1..n.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llm_tuning.config import ConfigError
from llm_tuning.data.read import DataError  # the one the CLI reports; re-exported for sde callers

KINDS = ("sentiment", "extraction")
LANGUAGES = ("zh", "en")
# The separators a parser can split on; a task's own separators must be one of these.
KV_SEPS = (":", "：", ": ")
PAIR_SEPS = (",", "，", ", ", ";", "；", "; ")
SPAN_SEPS = (",", "，", ", ", "、")


_LANG_DEFAULTS: dict[str, dict[str, Any]] = {
    "zh": {
        "label_words": ("正面", "中性", "负面", "未提及"),
        "synonyms": {"积极": "正面", "正向": "正面", "消极": "负面", "负向": "负面"},
        "none_word": "无",
        "kv_sep": "：",
        "span_sep": "、",
        "cue": "输出：",
        "sentiment": {"pair_sep": "，", "end": "。", "key_name": "方面", "value_name": "情感类别"},
        "extraction": {"pair_sep": "；", "end": "。", "key_name": "类型", "value_name": "实体"},
    },
    "en": {
        "label_words": ("positive", "neutral", "negative", "unmentioned"),
        "synonyms": {
            "favorable": "positive",
            "favourable": "positive",
            "unfavorable": "negative",
            "unfavourable": "negative",
            "not mentioned": "unmentioned",
            "not_mentioned": "unmentioned",
        },
        "none_word": "None",
        "kv_sep": ": ",
        "span_sep": ", ",
        "cue": "Output:",
        # No end mark for English extraction: spans such as "Inc." end in a full stop.
        "sentiment": {"pair_sep": ", ", "end": ".", "key_name": "aspect", "value_name": "sentiment"},
        "extraction": {"pair_sep": "; ", "end": "", "key_name": "type", "value_name": "span"},
    },
}

_DEFAULT_INSTRUCTIONS = {
    (
        "sentiment",
        "zh",
    ): "阅读{where}这段文本，观察以下这些方面：{slots}。请对这些方面进行情感分析，具体有四类情感：{labels}。",
    ("sentiment", "en"): (
        "Read the text {where} and consider these aspects: {slots}. Analyse the sentiment of each aspect; "
        "there are four sentiment classes: {labels}."
    ),
    ("extraction", "zh"): "阅读{where}这段文本，找出以下类型的所有内容：{slots}。",
    ("extraction", "en"): "Read the text {where} carefully and find every mention of these types: {slots}.",
}


@dataclass(frozen=True)
class Task:
    """A task: its slots, label words and the wording and separators its samples use."""

    name: str
    kind: str
    slots: tuple[str, ...]
    language: str = "zh"
    label_words: tuple[str, ...] = ()  # sentiment only: positive, neutral, negative, unmentioned
    numeric_labels: tuple[str, ...] = ()  # sentiment: one per label word; extraction: one per slot
    none_word: str = ""  # extraction placeholder for a type with no span; answer when nothing is found
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)  # slot -> soft-matching keywords
    synonyms: dict[str, str] = field(default_factory=dict)  # other word -> label word
    instruction: str = ""  # placeholders {slots}, {labels}, {where}
    key_name: str = ""  # how the instruction calls a slot ("方面", "entity_type")
    value_name: str = ""  # how the instruction calls a value ("情感类别", "trigger_word")
    kv_sep: str = ""
    pair_sep: str = ""
    span_sep: str = ""
    end: str | None = None
    cue: str = ""  # closes the prompt ("输出：")

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        _check(self.kind in KINDS, where, "kind", self.kind, KINDS)
        _check(self.language in LANGUAGES, where, "language", self.language, LANGUAGES)
        if not self.slots:
            raise ConfigError(f"{where}: field 'slots' is empty; list at least one slot")
        if len(set(self.slots)) != len(self.slots):
            raise ConfigError(f"{where}: field 'slots' has duplicates: {list(self.slots)}")
        lang = _LANG_DEFAULTS[self.language]
        defaults = {
            **lang,
            **lang[self.kind],
            "instruction": _DEFAULT_INSTRUCTIONS[(self.kind, self.language)],
        }
        if self.kind == "sentiment":
            defaults["numeric_labels"] = ("1", "0", "-1", "-2")
        else:
            defaults["label_words"] = ()
            defaults["synonyms"] = {}
            defaults["numeric_labels"] = tuple(str(i + 1) for i in range(len(self.slots)))
        for f in fields(self):
            unset = (None,) if f.name == "end" else ("", (), {}, None)  # an empty end mark is a choice
            if f.name in defaults and getattr(self, f.name) in unset:
                object.__setattr__(self, f.name, defaults[f.name])
        if self.kind == "sentiment":  # a task's own synonyms extend the language's
            object.__setattr__(self, "synonyms", {**defaults["synonyms"], **self.synonyms})
        unknown = sorted(set(self.keywords) - set(self.slots))
        if unknown:
            raise ConfigError(
                f"{where}: field 'keywords' names unknown slots {unknown}; slots: {list(self.slots)}"
            )
        keywords = {slot: tuple(self.keywords.get(slot, ())) or (slot,) for slot in self.slots}
        object.__setattr__(self, "keywords", keywords)
        self._validate(where)

    def _validate(self, where: str) -> None:
        if self.kind == "sentiment" and len(self.label_words) != 4:
            raise ConfigError(
                f"{where}: field 'label_words' needs 4 words (positive, neutral, negative, unmentioned), "
                f"got {list(self.label_words)}"
            )
        expected = len(self.label_words) if self.kind == "sentiment" else len(self.slots)
        if len(self.numeric_labels) != expected or len(set(self.numeric_labels)) != expected:
            raise ConfigError(
                f"{where}: field 'numeric_labels' needs {expected} distinct values, got {list(self.numeric_labels)}"
            )
        bad = {k: v for k, v in self.synonyms.items() if v not in self.label_words}
        if bad:
            raise ConfigError(
                f"{where}: field 'synonyms' maps to unknown labels {bad}; labels: {list(self.label_words)}"
            )
        _check(self.kv_sep in KV_SEPS, where, "kv_sep", self.kv_sep, KV_SEPS)
        _check(self.pair_sep in PAIR_SEPS, where, "pair_sep", self.pair_sep, PAIR_SEPS)
        _check(self.span_sep in SPAN_SEPS, where, "span_sep", self.span_sep, SPAN_SEPS)

    def __hash__(self) -> int:  # the dict fields are not hashable; name, kind and slots identify a task
        return hash((self.name, self.kind, self.slots))

    @property
    def unmentioned(self) -> str:
        """The sentiment placeholder label of a slot the text does not talk about."""
        return self.label_words[3] if self.kind == "sentiment" else self.none_word

    def number_of(self, word: str) -> str:
        """Numeric form of a label word (sentiment) or of a slot (extraction)."""
        names = self.label_words if self.kind == "sentiment" else self.slots
        return self.numeric_labels[names.index(word)]

    def word_of(self, number: str) -> str | None:
        """Label word (sentiment) or slot (extraction) of a numeric label; None if unknown."""
        names = self.label_words if self.kind == "sentiment" else self.slots
        number = str(number).strip()
        return names[self.numeric_labels.index(number)] if number in self.numeric_labels else None


def _check(ok: bool, where: str, name: str, value: Any, valid: tuple) -> None:
    if not ok:
        raise ConfigError(
            f"{where}: field {name!r} = {value!r} is not valid; choose one of: {', '.join(map(repr, valid))}"
        )


_D1 = ("食品评价", "饮品评价", "价格水平", "卫生情况", "服务人员态度", "停车方便程度")
_D2 = ("交通便利程度", "排队等候情况", "点菜上菜速度", "装修情况", "嘈杂情况")
_MASA_ZH = "阅读{where}这段评论，观察以下这些方面：{slots}。请根据评论对这些方面进行情感分析，具体有四类情感：{labels}。"
_MASA_EN = (
    "Read the review {where} and consider these aspects: {slots}. Analyse the sentiment the review expresses "
    "on each aspect; there are four sentiment classes: {labels}."
)

BUILTIN_TASKS: dict[str, Task] = {
    "masa_d1": Task(
        name="masa_d1",
        kind="sentiment",
        language="zh",
        slots=_D1,
        keywords=dict(
            zip(_D1, [("食品",), ("饮品",), ("价格",), ("卫生",), ("服务",), ("停车",)], strict=True)
        ),
        instruction=_MASA_ZH,
    ),
    "masa_d2": Task(
        name="masa_d2",
        kind="sentiment",
        language="zh",
        slots=_D2,
        keywords=dict(zip(_D2, [("交通",), ("排队", "等候"), ("点菜",), ("装修",), ("嘈杂",)], strict=True)),
        instruction=_MASA_ZH,
    ),
    "masa_en": Task(
        name="masa_en",
        kind="sentiment",
        language="en",
        slots=("food", "drinks", "price", "hygiene", "service", "parking"),
        keywords={"drinks": ("drink",)},
        instruction=_MASA_EN,
    ),
    "genia": Task(
        name="genia",
        kind="extraction",
        language="en",
        slots=("DNA", "RNA", "protein", "cell_type", "cell_line"),
        instruction="Read the given sentence {where} carefully, identify all named entities of type {slots}.",
        key_name="entity_type",
        value_name="entity_name",
    ),
    "maven": Task(
        name="maven",
        kind="extraction",
        language="en",
        slots=(
            "Catastrophe",
            "Attack",
            "Hostile_encounter",
            "Causation",
            "Process_start",
            "Competition",
            "Motion",
            "Social_event",
            "Killing",
            "Conquering",
        ),  # fmt: skip
        instruction=(
            "We define the event types set: {slots}. Given the sentence {where}, detect the type of events "
            "it contains and extract the trigger word from it."
        ),
        key_name="event_type",
        value_name="trigger_word",
    ),
    "wnut16": Task(
        name="wnut16",
        kind="extraction",
        language="en",
        slots=(
            "company",
            "facility",
            "geo-loc",
            "movie",
            "musicartist",
            "other",
            "person",
            "product",
            "sportsteam",
            "tvshow",
        ),  # fmt: skip
        instruction="Read the tweet {where} and identify all named entities of these types: {slots}.",
        key_name="entity_type",
        value_name="entity_name",
    ),
}

_YAML_FIELDS = tuple(f.name for f in fields(Task))


def task_from_dict(data: dict[str, Any], source: str = "task") -> Task:
    """Build a Task from a YAML mapping, naming the source and the bad field on error."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a task file must be a mapping of field: value, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(_YAML_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; valid fields: {', '.join(_YAML_FIELDS)}")
    for required in ("name", "kind", "slots"):
        if required not in data:
            raise ConfigError(f"{source}: field {required!r} is missing")
    values = dict(data)
    for name in ("slots", "label_words", "numeric_labels"):
        if name in values:
            values[name] = _string_tuple(values[name], source, name)
    if "keywords" in values:
        if not isinstance(values["keywords"], dict):
            raise ConfigError(f"{source}: field 'keywords' must map slot -> keyword or list of keywords")
        values["keywords"] = {
            str(k): _string_tuple(v, source, f"keywords.{k}") for k, v in values["keywords"].items()
        }
    if "synonyms" in values:
        if not isinstance(values["synonyms"], dict):
            raise ConfigError(f"{source}: field 'synonyms' must map word -> label word")
        values["synonyms"] = {str(k): str(v) for k, v in values["synonyms"].items()}
    for name in ("name", "kind", "language", "instruction", "none_word", "cue"):
        if name in values and not isinstance(values[name], str):
            raise ConfigError(f"{source}: field {name!r} must be a string, got {values[name]!r}")
    try:
        return Task(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _string_tuple(value: Any, source: str, name: str) -> tuple[str, ...]:
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{source}: field {name!r} must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def load_task(name_or_path: str | Path | Task) -> Task:
    """A built-in task by name, or a task defined in a YAML file."""
    if isinstance(name_or_path, Task):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN_TASKS:
        return BUILTIN_TASKS[key]
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"task file {path}: not valid YAML: {err}") from None
        return task_from_dict(data, source=f"task file {path}")
    raise ConfigError(
        f"unknown task {key!r}: use a built-in ({', '.join(BUILTIN_TASKS)}) or the path of a YAML task file"
    )


def normalize_labels(task: Task, labels: Any, where: str = "row") -> dict[str, Any]:
    """Every slot's gold value in slot order: a label word (sentiment) or a list of spans (extraction).

    Slots missing from `labels` are unmentioned (sentiment) or have no span (extraction). Sentiment
    values may be label words, their synonyms or their numbers (1 / "-2"); anything else is a DataError.
    """
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise DataError(
            where, None, f"field 'labels' must be a mapping of slot: value, got {type(labels).__name__}"
        )
    unknown = [k for k in labels if k not in task.slots]
    if unknown:
        raise DataError(
            where,
            None,
            f"field 'labels' has slot {unknown[0]!r}, not a slot of task {task.name}; slots: {', '.join(task.slots)}",
        )
    if task.kind == "sentiment":
        return {
            slot: _gold_label(task, labels.get(slot), f"{where}: field 'labels.{slot}'")
            for slot in task.slots
        }
    return {slot: _gold_spans(labels.get(slot), f"{where}: field 'labels.{slot}'") for slot in task.slots}


def _gold_label(task: Task, value: Any, where: str) -> str:
    if value is None:
        return task.unmentioned
    text = str(value).strip()
    word = text if text in task.label_words else task.synonyms.get(text) or task.word_of(text)
    if word is None:
        valid = ", ".join(task.label_words + task.numeric_labels)
        raise DataError(where, None, f"{value!r} is not a label of task {task.name}; valid: {valid}")
    return word


def _gold_spans(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise DataError(where, None, f"expected a span string or a list of span strings, got {value!r}")
    spans = [v.strip() for v in items]
    if any(not s for s in spans):
        raise DataError(where, None, f"empty span in {value!r}")
    return spans
