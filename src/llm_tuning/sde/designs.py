"""Sample designs: how a task's rows become prompt / target pairs (the options of the SDE paper).

    from llm_tuning.sde.designs import parse_design, render_sample
    design = parse_design("es_sde")                          # the default, or a preset: inst_last, json, cot...
    design = parse_design("es_sde,placement=inst_last")      # a preset with changed options
    sample = render_sample(task, design, row)                # {"prompt", "target", "prompt_loss"}

Options (names as in the paper):
  placement       inst_first | inst_last | no_inst   where the instruction goes ("{text}\\n---\\n{instruction}\\n输出：")
  input_modeling  no_mi | mi                         mi: train on the prompt too (`prompt_loss` of each sample)
  output_format   natural | lines | json | heuristic  `A：S，B：S。` | one `A：S` per line | one JSON object per
                                                     line | one `["type", "span"]` list per line (the original's)
  unmentioned     pu | ou                            list every slot (with a placeholder) | only mentioned ones
  labels          text | numeric                     label words | numbers (1/0/-1/-2; types as 1..n)
  reasoning       none | cot | rcot                  evidence in brackets before | after each label

CoT evidence (deterministic): the row's `evidence[slot]` if given; else, for a mentioned sentiment slot, the
first clause of the text (split at 。！？；， and ". ", ", ") holding one of the slot's keywords; else a
generic phrase ("文中提到了食品" / "the text does not mention parking"). Brackets and line breaks are removed
and it is cut to 50 characters.
A slot list with nothing to list (OU, nothing mentioned) is answered with the task's none word ("无" / "None"),
or `[]` in the JSON and heuristic formats.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from llm_tuning.config import ConfigError, option
from llm_tuning.sde.tasks import Task, normalize_labels

PLACEMENTS = ("inst_first", "inst_last", "no_inst")
INPUT_MODELINGS = ("no_mi", "mi")
OUTPUT_FORMATS = ("natural", "lines", "json", "heuristic")
UNMENTIONED = ("pu", "ou")
LABELS = ("text", "numeric")
REASONINGS = ("none", "cot", "rcot")
MAX_EVIDENCE_CHARS = 50


@dataclass(frozen=True)
class Design:
    """A sample design; the default is ES-SDE (inst_first, no_mi, lines, pu, text, none)."""

    placement: str = option("inst_first", "where the instruction goes", choices=PLACEMENTS)
    input_modeling: str = option("no_mi", "mi: the loss also covers the prompt", choices=INPUT_MODELINGS)
    output_format: str = option("lines", "how the answer is written", choices=OUTPUT_FORMATS)
    unmentioned: str = option("pu", "pu: list every slot; ou: only the mentioned ones", choices=UNMENTIONED)
    labels: str = option("text", "label words or their numbers", choices=LABELS)
    reasoning: str = option("none", "cot / rcot: evidence before / after each label", choices=REASONINGS)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            valid = f.metadata["choices"]
            if getattr(self, f.name) not in valid:
                raise ConfigError(
                    f"design option {f.name}={getattr(self, f.name)!r} is not valid; choose one of: {', '.join(valid)}"
                )
        if self.output_format == "heuristic" and self.reasoning != "none":
            raise ConfigError(
                "design: output_format=heuristic has no place for reasoning; use reasoning=none"
            )

    @property
    def prompt_loss(self) -> bool:
        return self.input_modeling == "mi"


_ES = Design()
PRESETS: dict[str, Design] = {
    "es_sde": _ES,
    "inst_last": dataclasses.replace(_ES, placement="inst_last"),
    "no_inst": dataclasses.replace(_ES, placement="no_inst"),
    "mi": dataclasses.replace(_ES, input_modeling="mi"),
    "natural": dataclasses.replace(_ES, output_format="natural"),
    "json": dataclasses.replace(_ES, output_format="json"),
    "ou": dataclasses.replace(_ES, unmentioned="ou"),
    "numeric": dataclasses.replace(_ES, labels="numeric"),
    "cot": dataclasses.replace(_ES, reasoning="cot"),
    "rcot": dataclasses.replace(_ES, reasoning="rcot"),
    "heuristic": dataclasses.replace(_ES, output_format="heuristic", unmentioned="ou"),
}
OPTIONS = tuple(f.name for f in dataclasses.fields(Design))


def parse_design(spec: str | dict | Design | None = None) -> Design:
    """A Design from a preset name, `key=value` pairs, or both: "es_sde", "json,unmentioned=ou"."""
    if spec is None:
        return _ES
    if isinstance(spec, Design):
        return spec
    if isinstance(spec, dict):
        items = [f"{k}={v}" for k, v in spec.items()]
    else:
        items = [s.strip() for s in str(spec).split(",") if s.strip()]
    design = _ES
    if items and "=" not in items[0]:
        name = items.pop(0)
        if name not in PRESETS:
            raise ConfigError(
                f"unknown design {name!r}; presets: {', '.join(PRESETS)}; or options like output_format=json"
            )
        design = PRESETS[name]
    changes: dict[str, str] = {}
    for item in items:
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            raise ConfigError(
                f"design {spec!r}: {item!r} is not key=value (only the first item may be a preset name)"
            )
        if key not in OPTIONS:
            raise ConfigError(f"design {spec!r}: unknown option {key!r}; valid options: {', '.join(OPTIONS)}")
        changes[key] = value
    return dataclasses.replace(design, **changes)


def design_spec(design: Design) -> str:
    """The shortest spec that `parse_design` turns back into `design` (a preset name when there is one)."""
    for name, preset in PRESETS.items():
        if preset == design:
            return name
    diffs = [
        f"{f.name}={getattr(design, f.name)}"
        for f in dataclasses.fields(Design)
        if getattr(design, f.name) != getattr(_ES, f.name)
    ]
    return ",".join(diffs)


# ---- wording -------------------------------------------------------------------------------------------

_WORDS = {
    "zh": {
        "where": {"inst_first": "下面", "inst_last": "上面", "no_inst": ""},
        "natural": '请用以下格式在一行内给出结果："{k}1{kv}{v}{pair}{k}2{kv}{v}{pair}..."。',
        "lines": '请每行给出一个{k}，格式为"{k}{kv}{v}"。',
        "json": "请每行输出一个JSON对象，格式为{example}。",
        "heuristic": "请每行输出一个列表，格式为{example}。",
        "spans": "同一{k}的多个{v}用“{sep}”隔开。",
        "pu": "所有{k}都要列出，没有的写“{none}”。",
        "ou": "只列出文中有的{k}；一个都没有时回答“{none}”。",
        "numeric": "{what}用数字表示：{mapping}。",
        "cot": "每个{v}之前先在括号里写出简短的依据。",
        "rcot": "每个{v}之后在括号里写出简短的依据。",
        "mentioned": "文中提到了{kw}",
        "not_mentioned": "文中没有提到{kw}",
        "join": "",
        "list": "，",
        "label_list": "、",
        "evidence": "（{ev}）",
    },
    "en": {
        "where": {"inst_first": "below", "inst_last": "above", "no_inst": ""},
        "natural": 'Answer in one line in the format "{k}1{kv}{v}{pair}{k}2{kv}{v}{pair}...".',
        "lines": 'Answer one {k} per line in the format "{k}{kv}{v}".',
        "json": "Answer one JSON object per line, like {example}.",
        "heuristic": "Answer one list per line, like {example}.",
        "spans": 'Separate several {v}s of one {k} with "{sep}".',
        "pu": 'List every {k}; write "{none}" for one that is absent.',
        "ou": 'List only the {k}s that occur; if there are none, answer "{none}".',
        "numeric": "Write each {what} as a number: {mapping}.",
        "cot": "Before each {v}, give a short piece of evidence in brackets.",
        "rcot": "After each {v}, give a short piece of evidence in brackets.",
        "mentioned": "the text mentions {kw}",
        "not_mentioned": "the text does not mention {kw}",
        "join": " ",
        "list": ", ",
        "label_list": ", ",
        "evidence": "({ev})",
    },
}


def format_instruction(task: Task, design: Design) -> str:
    """The instruction: the task's own sentence, then how to write the answer under `design`."""
    w = _WORDS[task.language]
    k, v = task.key_name, task.value_name
    head = task.instruction.format(
        where=w["where"][design.placement],
        slots=w["list"].join(task.slots),
        labels=w["label_list"].join(task.label_words),
    )
    if design.output_format in ("json", "heuristic"):
        example = json.dumps(_json_item(task, design, k, v, "..."), ensure_ascii=False)
        parts = [w[design.output_format].format(example=example)]
    else:
        parts = [w[design.output_format].format(k=k, v=v, kv=task.kv_sep, pair=task.pair_sep)]
        if task.kind == "extraction":
            parts.append(w["spans"].format(k=k, v=v, sep=task.span_sep))
    if design.unmentioned == "pu":
        none = _label(task, design, task.unmentioned) if task.kind == "sentiment" else task.none_word
    else:
        none = "[]" if design.output_format in ("json", "heuristic") else task.none_word
    parts.append(w[design.unmentioned].format(k=k, none=none))
    if design.labels == "numeric":
        names = task.label_words if task.kind == "sentiment" else task.slots
        mapping = w["label_list"].join(f"{n}={task.number_of(n)}" for n in names)
        parts.append(w["numeric"].format(what=v if task.kind == "sentiment" else k, mapping=mapping))
    if design.reasoning != "none":
        parts.append(w[design.reasoning].format(v=v))
    return head + w["join"] + w["join"].join(parts)


def render_prompt(task: Task, design: Design, text: str) -> str:
    """The model input for one text: instruction and text placed as the design says, closed by the cue."""
    if design.placement == "no_inst":
        return f"{text}\n{task.cue}"
    instruction = format_instruction(task, design)
    if design.placement == "inst_first":
        return f"{instruction}\n---\n{text}\n{task.cue}"
    return f"{text}\n---\n{instruction}\n{task.cue}"


# ---- targets -------------------------------------------------------------------------------------------


def render_sample(task: Task, design: Design, row: dict[str, Any]) -> dict[str, Any]:
    """One training / test sample: {"prompt": str, "target": str, "prompt_loss": bool}."""
    text = row.get("text")
    if not isinstance(text, str):
        raise ValueError(f"row field 'text' must be a string, got {text!r}")
    return {
        "prompt": render_prompt(task, design, text),
        "target": render_target(task, design, row),
        "prompt_loss": design.prompt_loss,
    }


def render_target(task: Task, design: Design, row: dict[str, Any]) -> str:
    """The answer the model should write for `row` under `design`."""
    labels = normalize_labels(task, row.get("labels"))
    items = _target_items(task, design, labels)
    evidence = (
        {slot: evidence_for(task, row, slot, labels) for slot in task.slots}
        if design.reasoning != "none"
        else {}
    )
    if design.output_format in ("json", "heuristic"):
        if not items:
            return "[]"
        lines = [_json_item(task, design, key, value, evidence.get(slot)) for slot, key, value in items]
        return "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    if not items:
        return task.none_word + (task.end if design.output_format == "natural" else "")
    pieces = [
        f"{key}{task.kv_sep}{_with_evidence(task, design, value, evidence.get(slot))}"
        for slot, key, value in items
    ]
    if design.output_format == "lines":
        return "\n".join(pieces)
    return task.pair_sep.join(pieces) + task.end


def _target_items(task: Task, design: Design, labels: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(slot, key as written, value as written) in slot order, after the PU / OU choice."""
    items = []
    per_span = design.output_format in ("json", "heuristic")
    for slot in task.slots:
        value = labels[slot]
        key = task.number_of(slot) if task.kind == "extraction" and design.labels == "numeric" else slot
        if task.kind == "sentiment":
            if design.unmentioned == "pu" or value != task.unmentioned:
                items.append((slot, key, _label(task, design, value)))
        elif value and per_span:
            items.extend((slot, key, span) for span in value)
        elif value:
            items.append((slot, key, task.span_sep.join(value)))
        elif design.unmentioned == "pu":
            items.append((slot, key, task.none_word))
    return items


def _label(task: Task, design: Design, word: str) -> str:
    return task.number_of(word) if design.labels == "numeric" else word


def _with_evidence(task: Task, design: Design, value: str, evidence: str | None) -> str:
    if design.reasoning == "none":
        return value
    bracket = _WORDS[task.language]["evidence"].format(ev=evidence)
    space = " " if task.language == "en" else ""
    return f"{bracket}{space}{value}" if design.reasoning == "cot" else f"{value}{space}{bracket}"


def _json_item(task: Task, design: Design, key: str, value: str, evidence: str | None) -> Any:
    """One JSON line: {"aspect", "sentiment"} / {"type", "span"} (numbers as JSON numbers), or [key, value]."""
    if design.output_format == "heuristic":
        return [key, value]
    key_field, value_field = ("aspect", "sentiment") if task.kind == "sentiment" else ("type", "span")
    numeric = design.labels == "numeric"
    item: dict[str, Any] = {
        key_field: int(key) if numeric and task.kind == "extraction" and key.lstrip("-").isdigit() else key
    }
    if design.reasoning == "cot":
        item["evidence"] = evidence
    item[value_field] = (
        int(value) if numeric and task.kind == "sentiment" and value.lstrip("-").isdigit() else value
    )
    if design.reasoning == "rcot":
        item["evidence"] = evidence
    return item


def evidence_for(task: Task, row: dict[str, Any], slot: str, labels: dict[str, Any] | None = None) -> str:
    """The short CoT evidence for one slot (see the module docstring for the rule)."""
    labels = labels if labels is not None else normalize_labels(task, row.get("labels"))
    given = (row.get("evidence") or {}).get(slot)
    if given and given.strip():
        return _clean_evidence(given)
    keywords = task.keywords[slot]
    absent = labels[slot] == task.unmentioned if task.kind == "sentiment" else not labels[slot]
    if task.kind == "sentiment" and not absent:
        for sentence in re.split(r"[。！？!?；;，\n]+|(?<=[.,])\s+", row.get("text", "")):
            if any(kw.lower() in sentence.lower() for kw in (*keywords, slot)) and _clean_evidence(sentence):
                return _clean_evidence(sentence)
    words = _WORDS[task.language]
    return words["not_mentioned" if absent else "mentioned"].format(kw=keywords[0])


def _clean_evidence(text: str) -> str:
    text = re.sub(r"[()（）\[\]【】]", "", text)
    text = re.sub(r"\s+", " ", text).strip(" ，,。.")
    return text if len(text) <= MAX_EVIDENCE_CHARS else text[:MAX_EVIDENCE_CHARS].rstrip() + "…"
