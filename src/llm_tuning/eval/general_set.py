"""The default general set of `llm-tuning forgetting`: 40 common-knowledge questions with one-word answers,
written for llm-tuning (capitals, colours, animals, numbers, science, opposites), scored with `contains`.

They are easy on purpose: the embedded SmolLM2-135M-Instruct answers many of them, so what an adapter
breaks shows. Write them out with `write_general_set(path)`; pass your own set with --general.
"""

from __future__ import annotations

from pathlib import Path

from llm_tuning.data.read import write_jsonl

GENERAL_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of England?", "London"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Greece?", "Athens"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is fresh grass?", "green"),
    ("What color is snow?", "white"),
    ("What color is a ripe banana?", "yellow"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("Which animal says moo?", "cow"),
    ("Which animal barks?", "dog"),
    ("What insect makes honey?", "bee"),
    ("What is the largest animal on Earth?", "whale"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("How many days are in a week? Answer with a number.", "7"),
    ("How many legs does a spider have? Answer with a number.", "8"),
    ("How many continents are there? Answer with a number.", "7"),
    ("How many hours are in a day? Answer with a number.", "24"),
    ("What is 2 + 2? Answer with a number.", "4"),
    ("What is 10 x 10? Answer with a number.", "100"),
    ("What planet do we live on?", "Earth"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What star is at the center of our solar system?", "Sun"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What is frozen water called?", "ice"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of day?", "night"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the tallest mountain in the world?", "Everest"),
)


def general_rows() -> list[dict[str, str]]:
    return [{"prompt": q, "target": a} for q, a in GENERAL_QA]


def write_general_set(path: str | Path) -> Path:
    return write_jsonl(general_rows(), path)
