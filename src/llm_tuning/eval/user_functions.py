"""Load a user's function from `module:function` or `path/to/file.py:function`, for any flag that takes one.

    llm-tuning grpo --reward ./rewards.py:brevity
    llm-tuning eval --metric my_metrics:keyword_hit

A missing file, module or function is a ConfigError naming the flag and the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def import_module(module: str, spec: str, flag: str) -> Any:
    """The module of a `module:function` spec: a file path (loaded from there) or an importable name."""
    from llm_tuning.config import ConfigError

    if module.endswith(".py") or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise ConfigError(f"{flag} {spec}: file {path} does not exist")
        loader_spec = importlib.util.spec_from_file_location(f"llm_tuning_user_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise ConfigError(f"{flag} {spec}: {path} is not a Python file; give file.py:function")
        loaded = importlib.util.module_from_spec(loader_spec)
        sys.modules[loader_spec.name] = loaded
        try:
            loader_spec.loader.exec_module(loaded)
        except Exception as err:  # the user's file: report where it failed, not our traceback
            del sys.modules[loader_spec.name]
            line = f", line {err.lineno}" if isinstance(err, SyntaxError) else ""
            raise ConfigError(
                f"{flag} {spec}: running {path}{line} raised {type(err).__name__}: {err}"
            ) from None
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"{flag} {spec}: cannot import module {module!r} ({err}); put it on PYTHONPATH "
                          f"or give a file, e.g. {flag} ./my_functions.py:my_function") from err  # fmt: skip


def load_function(spec: str, flag: str) -> Callable[..., Any]:
    """The callable named by `module:function` / `file.py:function`."""
    from llm_tuning.config import ConfigError

    if ":" not in spec:
        raise ConfigError(f"{flag} {spec!r}: write it as module:function or path/to/file.py:function")
    module, name = spec.rsplit(":", 1)
    fn = getattr(import_module(module, spec, flag), name, None)
    if not callable(fn):
        raise ConfigError(f"{flag} {spec}: {module!r} has no function {name!r}")
    return fn
