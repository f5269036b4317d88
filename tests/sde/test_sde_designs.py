"""Sample designs: presets, specs and their errors, and the exact prompts and targets they render."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from llm_tuning.config import ConfigError
from llm_tuning.sde.designs import (
    OPTIONS,
    PRESETS,
    Design,
    design_spec,
    evidence_for,
    parse_design,
    render_prompt,
    render_sample,
    render_target,
)
from llm_tuning.sde.tasks import load_task

D1 = load_task("masa_d1")
ROW = {"text": "菜很好吃，价格偏贵。", "labels": {"食品评价": "正面", "价格水平": "负面"}}
NER_ROW = {
    "text": "IL-2 gene needs NF-kappa B .",
    "labels": {"DNA": ["IL-2 gene"], "protein": ["NF-kappa B", "IL-2"]},
}


def all_designs() -> list[Design]:
    values = [dataclasses.fields(Design)[i].metadata["choices"] for i in range(len(OPTIONS))]
    designs = []
    for combo in itertools.product(*values):
        try:
            designs.append(Design(*combo))
        except ConfigError:
            assert combo[2] == "heuristic" and combo[5] != "none"
    return designs


def test_default_is_es_sde_and_presets_change_one_option():
    assert parse_design() == parse_design("es_sde") == Design()
    es = Design()
    assert (es.placement, es.input_modeling, es.output_format, es.unmentioned, es.labels, es.reasoning) == (
        "inst_first",
        "no_mi",
        "lines",
        "pu",
        "text",
        "none",
    )
    for name, design in PRESETS.items():
        changed = [o for o in OPTIONS if getattr(design, o) != getattr(es, o)]
        expected = {"es_sde": 0, "heuristic": 2}.get(name, 1)
        assert len(changed) == expected, name
    assert PRESETS["heuristic"].output_format == "heuristic" and PRESETS["heuristic"].unmentioned == "ou"
    assert PRESETS["mi"].prompt_loss and not PRESETS["es_sde"].prompt_loss


def test_specs():
    assert parse_design("placement=inst_last,output_format=json") == Design(
        placement="inst_last", output_format="json"
    )
    assert parse_design("json, unmentioned=ou") == Design(output_format="json", unmentioned="ou")
    assert parse_design({"labels": "numeric"}) == PRESETS["numeric"]
    design = Design(placement="no_inst")
    assert parse_design(design) is design


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("best", "unknown design 'best'; presets: es_sde, inst_last, no_inst"),
        ("colour=red", "unknown option 'colour'; valid options: placement, input_modeling, output_format"),
        (
            "output_format=xml",
            "output_format='xml' is not valid; choose one of: natural, lines, json, heuristic",
        ),
        ("heuristic,reasoning=cot", "heuristic has no place for reasoning"),
        ("json,cot", "'cot' is not key=value"),
    ],
)
def test_spec_errors(spec, needle):
    with pytest.raises(ConfigError) as err:
        parse_design(spec)
    assert needle in str(err.value)


def test_design_spec_round_trips_for_every_design():
    designs = all_designs()
    assert len(designs) == 3 * 2 * 4 * 2 * 2 * 3 - 3 * 2 * 2 * 2 * 2
    for design in designs:
        assert parse_design(design_spec(design)) == design
    assert (
        design_spec(Design(placement="inst_last", output_format="json"))
        == "placement=inst_last,output_format=json"
    )
    assert design_spec(PRESETS["cot"]) == "cot"


def test_es_sde_sample_for_masa():
    sample = render_sample(D1, Design(), ROW)
    assert sample["prompt"] == (
        "阅读下面这段评论，观察以下这些方面：食品评价，饮品评价，价格水平，卫生情况，服务人员态度，停车方便程度。"
        "请根据评论对这些方面进行情感分析，具体有四类情感：正面、中性、负面、未提及。"
        '请每行给出一个方面，格式为"方面：情感类别"。所有方面都要列出，没有的写“未提及”。'
        "\n---\n菜很好吃，价格偏贵。\n输出："
    )
    assert (
        sample["target"]
        == "食品评价：正面\n饮品评价：未提及\n价格水平：负面\n卫生情况：未提及\n服务人员态度：未提及\n停车方便程度：未提及"
    )
    assert sample["prompt_loss"] is False
    assert render_sample(D1, PRESETS["mi"], ROW)["prompt_loss"] is True


def test_placements_follow_the_original_layout():
    inst_last = render_prompt(D1, PRESETS["inst_last"], "TEXT")
    assert inst_last.startswith("TEXT\n---\n阅读上面这段评论") and inst_last.endswith("\n输出：")
    assert render_prompt(D1, PRESETS["no_inst"], "TEXT") == "TEXT\n输出："
    en = render_prompt(load_task("masa_en"), PRESETS["inst_last"], "TEXT")
    assert en.startswith("TEXT\n---\nRead the review above") and en.endswith("\nOutput:")


def test_targets_per_format():
    natural = "食品评价：正面，饮品评价：未提及，价格水平：负面，卫生情况：未提及，服务人员态度：未提及，停车方便程度：未提及。"
    assert render_target(D1, PRESETS["natural"], ROW) == natural
    assert render_target(D1, PRESETS["ou"], ROW) == "食品评价：正面\n价格水平：负面"
    assert (
        render_target(D1, parse_design("natural,unmentioned=ou"), ROW) == "食品评价：正面，价格水平：负面。"
    )
    assert render_target(D1, PRESETS["numeric"], ROW).split("\n")[:3] == [
        "食品评价：1",
        "饮品评价：-2",
        "价格水平：-1",
    ]
    json_lines = render_target(D1, PRESETS["json"], ROW).split("\n")
    assert json_lines[0] == '{"aspect": "食品评价", "sentiment": "正面"}' and len(json_lines) == 6
    assert render_target(D1, parse_design("json,labels=numeric"), ROW).startswith(
        '{"aspect": "食品评价", "sentiment": 1}'
    )
    assert render_target(D1, PRESETS["heuristic"], ROW) == '["食品评价", "正面"]\n["价格水平", "负面"]'


def test_nothing_to_list():
    empty = {"text": "今天和朋友一起来吃饭。", "labels": {}}
    assert render_target(D1, PRESETS["ou"], empty) == "无"
    assert render_target(D1, parse_design("natural,unmentioned=ou"), empty) == "无。"
    assert render_target(D1, parse_design("json,unmentioned=ou"), empty) == "[]"
    assert render_target(load_task("maven"), PRESETS["heuristic"], {"text": "x", "labels": {}}) == "[]"


def test_extraction_targets():
    genia = load_task("genia")
    assert render_target(genia, Design(), NER_ROW) == (
        "DNA: IL-2 gene\nRNA: None\nprotein: NF-kappa B, IL-2\ncell_type: None\ncell_line: None"
    )
    assert render_target(genia, PRESETS["natural"], NER_ROW) == (
        "DNA: IL-2 gene; RNA: None; protein: NF-kappa B, IL-2; cell_type: None; cell_line: None"
    )
    assert render_target(genia, PRESETS["numeric"], NER_ROW).startswith(
        "1: IL-2 gene\n2: None\n3: NF-kappa B, IL-2"
    )
    assert render_target(genia, PRESETS["json"], NER_ROW).split("\n")[2:4] == [
        '{"type": "protein", "span": "NF-kappa B"}',
        '{"type": "protein", "span": "IL-2"}',
    ]
    # the original MAVEN heuristic target: one ["type", "trigger"] list per line
    maven = load_task("maven")
    row = {
        "text": "The death of Henry meant the English came.",
        "labels": {"Causation": "meant", "Motion": "came"},
    }
    assert render_target(maven, PRESETS["heuristic"], row) == '["Causation", "meant"]\n["Motion", "came"]'


def test_reasoning_puts_evidence_before_or_after_the_label():
    cot = render_target(D1, PRESETS["cot"], ROW).split("\n")
    assert cot[0] == "食品评价：（文中提到了食品）正面"  # no sentence says 食品: the generic phrase
    assert cot[1] == "饮品评价：（文中没有提到饮品）未提及"
    assert cot[2] == "价格水平：（价格偏贵）负面"  # the clause that holds the keyword 价格
    rcot = render_target(D1, PRESETS["rcot"], {**ROW, "evidence": {"食品评价": "菜（很）好吃"}}).split("\n")
    assert rcot[0] == "食品评价：正面（菜很好吃）"  # given evidence, brackets removed
    assert render_target(D1, parse_design("json,reasoning=cot"), ROW).split("\n")[2] == (
        '{"aspect": "价格水平", "evidence": "价格偏贵", "sentiment": "负面"}'
    )
    en = render_target(
        load_task("masa_en"),
        PRESETS["rcot"],
        {"text": "Nice food. Rude staff.", "labels": {"food": "positive"}},
    )
    assert en.split("\n")[0] == "food: positive (Nice food)"  # end punctuation dropped


def test_evidence_is_cut_and_deterministic():
    long_text = "价格" + "很" * 80 + "贵。"
    row = {"text": long_text, "labels": {"价格水平": "负面"}}
    evidence = evidence_for(D1, row, "价格水平")
    assert len(evidence) == 51 and evidence.endswith("…")
    assert evidence_for(load_task("genia"), NER_ROW, "RNA") == "the text does not mention RNA"
    assert render_sample(D1, PRESETS["cot"], row) == render_sample(D1, PRESETS["cot"], row)


def test_instruction_describes_the_design():
    prompt = render_prompt(D1, parse_design("json,labels=numeric,unmentioned=ou,reasoning=rcot"), "T")
    assert '{"aspect": "方面", "sentiment": "情感类别", "evidence": "..."}' in prompt
    assert "只列出文中有的方面；一个都没有时回答“[]”" in prompt
    assert "情感类别用数字表示：正面=1、中性=0、负面=-1、未提及=-2" in prompt
    assert "每个情感类别之后在括号里写出简短的依据" in prompt
    genia = render_prompt(load_task("genia"), PRESETS["numeric"], "T")
    assert "Write each entity_type as a number: DNA=1, RNA=2, protein=3, cell_type=4, cell_line=5." in genia


def test_render_sample_rejects_bad_rows():
    with pytest.raises(ValueError, match="'text' must be a string"):
        render_sample(D1, Design(), {"labels": {}})
    with pytest.raises(ValueError, match="not a label of task masa_d1"):
        render_sample(D1, Design(), {"text": "x", "labels": {"食品评价": "great"}})
