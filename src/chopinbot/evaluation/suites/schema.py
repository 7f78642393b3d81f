"""The one JSON schema of the evaluation suites (see :mod:`chopinbot.evaluation.suites`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np

SUITE_VERSION = 1
SCHEMA_KEYS = ("suite", "version", "model", "settings", "figures", "rows", "seconds")


def model_label(name: str | None) -> str:
    return name or "shipped"


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays as numbers and lists, NaN and infinities as None."""
    if is_dataclass(x) and not isinstance(x, type):
        return jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return jsonable(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def suite_result(suite: str, model: str | None, settings: Any, figures: dict, rows: Sequence[dict],
                 seconds: float, **extra: Any) -> dict:
    """A suite's JSON in the one schema (``extra``: what the protocol keeps besides, e.g. ``details``)."""
    return jsonable({"suite": suite, "version": SUITE_VERSION, "model": model_label(model),
                     "settings": settings, "figures": figures, "rows": list(rows), "seconds": seconds, **extra})


@dataclass(frozen=True)
class Suite:
    name: str
    run: Callable[..., dict]  # (model name or None, settings, progress) -> the suite's JSON
    settings: type  # its settings dataclass (defaults: the protocol)
    description: str
    filename: str = ""  # its JSON's name in the output folder (default: NAME.json)

    @property
    def json_name(self) -> str:
        return self.filename or f"{self.name}.json"
