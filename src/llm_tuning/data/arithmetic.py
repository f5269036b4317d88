"""The original's `simple_math_4op` idea as a generator: + - x / questions with worded answers.

Questions read "What is 47 + 38?"; answers "47 + 38 = 85". Addition and subtraction use two-digit
numbers; multiplication and division stay within the 12 times table, so every answer is an integer.
Held-out questions never appear in the training rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPS = ("+", "-", "x", "/")


@dataclass(frozen=True)
class Question:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        if self.op == "+":
            return self.a + self.b
        if self.op == "-":
            return self.a - self.b
        if self.op == "x":
            return self.a * self.b
        return self.a // self.b

    @property
    def prompt(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def target(self) -> str:
        return f"{self.a} {self.op} {self.b} = {self.answer}"


def random_question(rng: random.Random) -> Question:
    op = rng.choice(OPS)
    if op in "+-":
        return Question(rng.randint(10, 99), op, rng.randint(10, 99))
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return Question(a, op, b) if op == "x" else Question(a * b, op, b)


def make_split(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Question], list[Question]]:
    """Disjoint train and held-out questions, deterministic for a seed."""
    rng = random.Random(seed)
    seen: set[Question] = set()
    questions: list[Question] = []
    while len(questions) < n_train + n_test:
        q = random_question(rng)
        if q not in seen:
            seen.add(q)
            questions.append(q)
    return questions[n_test:], questions[:n_test]


def to_rows(questions: list[Question], prompt_key: str = "prompt", target_key: str = "target") -> list[dict]:
    return [{prompt_key: q.prompt, target_key: q.target} for q in questions]
