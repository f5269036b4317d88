"""Standard benchmarks through EleutherAI's lm-eval (not a re-implementation), for the base model and each
adapter (and their mix), side by side.

    llm-tuning eval --tasks hellaswag,arc_easy --adapter weights/math          # needs the hub for the data
    llm-tuning eval --tasks my_task --task_path my_tasks/                      # a folder of your task YAMLs

lm-eval's Hugging Face model class (HFLM) is given llm-tuning's PeftModel with the adapters loaded, and
each variant is switched on in turn (`use_adapter`), so the scores are lm-eval's own on exactly the models
`eval` and `predict` run. Install it with `pip install 'llm-tuning[lm-eval]'`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llm_tuning.config import ConfigError
from llm_tuning.models.adapters import use_adapter

logger = logging.getLogger(__name__)


def task_manager(tasks: list[str], task_path: str | None) -> Any:
    """lm-eval's TaskManager knowing `tasks`: only --task_path's when it has them all (indexing lm-eval's
    ~15k built-in tasks takes half a minute), else lm-eval's own plus --task_path's."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ConfigError("--tasks needs EleutherAI's lm-eval: pip install 'llm-tuning[lm-eval]' "
                          "(lm-eval==0.4.13)") from err  # fmt: skip
    if task_path:
        if not Path(task_path).is_dir():
            raise ConfigError(f"--task_path {task_path}: no such folder of task YAMLs")
        local = TaskManager(include_path=task_path, include_defaults=False)
        if all(t in set(local.all_tasks) for t in tasks):
            return local
    manager = TaskManager(include_path=task_path) if task_path else TaskManager()
    unknown = [t for t in tasks if t not in set(manager.all_tasks)]
    if unknown:
        where = (
            f"lm-eval's tasks or {task_path}"
            if task_path
            else "lm-eval's tasks (add yours with --task_path DIR)"
        )
        raise ConfigError(
            f"--tasks: unknown task {unknown[0]!r}: not among {where}; list them with `lm-eval ls tasks`"
        )
    return manager


def run_tasks(model: Any, tokenizer: Any, names: list[str], tasks: list[str], manager: Any,
              batch_size: int, limit: int | None, num_fewshot: int | None) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """{variant: {task: {metric: value}}} from lm-eval's simple_evaluate on each variant in turn."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        with use_adapter(model, name):
            results = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                              num_fewshot=num_fewshot, log_samples=False)  # fmt: skip
        out[name] = {
            task: {k.split(",")[0]: float(v) for k, v in values.items() if isinstance(v, (int, float)) and "_stderr" not in k}
            for task, values in results["results"].items()
        }  # fmt: skip
        logger.info("%s: %s", name, out[name])
    return out
