"""The fixed evaluation protocols behind ``chopinbot evaluate --suite NAME``.

Each suite is one protocol whose figures go into ``docs/``: the same held-out
seeds, counts and settings every time (its settings dataclass holds them, with
the reasons), composed through the one continuation loop
(:mod:`chopinbot.evaluation.continuations`), and written as JSON in one schema::

    {"suite": NAME, "version": SUITE_VERSION, "model": the model's name,
     "settings": {...}, "figures": {name: number, ...}, "rows": [{...}, ...],
     "seconds": wall time, ...}

``figures`` are the headline numbers (flat, for tables and comparisons),
``rows`` the per-piece or per-setting detail.  The suites:

* ``realism``: the classifier test on the valid seeds (choosing a model or a
  decoding), the feature gaps, and the composed-music rows (replay, context 0,
  60-s excerpts);
* ``controls``: compliance of density, register, loudness and key requests;
* ``key-hold``: does a continuation keep its primer's key, after other composers' primers;
* ``style``: two styles (or two models) against each other and against each composer;
* ``form``: ABA / AABA forms: reprise, cadence, contrast, against plain continuations;
* ``infill``: does an infilled span lead into what follows (NLL and a join discriminator).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from chopinbot.errors import ConfigError
from chopinbot.evaluation.suites.schema import SCHEMA_KEYS as SCHEMA_KEYS  # re-exported
from chopinbot.evaluation.suites.schema import SUITE_VERSION as SUITE_VERSION
from chopinbot.evaluation.suites.schema import Suite
from chopinbot.evaluation.suites.schema import suite_result as suite_result
from chopinbot.io_utils import atomic_write_json


def _registry() -> dict[str, Suite]:
    from chopinbot.evaluation.suites import controls, form, infill, keyhold, realism

    return {s.name: s for s in (realism.SUITE, controls.SUITE, keyhold.KEY_HOLD, keyhold.STYLE, form.SUITE,
                                infill.SUITE)}


def suite_names() -> list[str]:
    return list(_registry())


def suite_json_name(name: str) -> str:
    """The file name of suite ``name``'s JSON (e.g. controls-check.json, as docs/suites/ has it)."""
    return _registry()[name].json_name


def suite_settings_type(name: str) -> type:
    """The settings dataclass of suite ``name`` (its defaults: the protocol)."""
    return _registry()[name].settings


def parse_overrides(settings_type: type, pairs: Sequence[str]) -> dict:
    """``["pieces=10", "seconds=20"]`` -> the settings fields, typed by their defaults."""
    defaults = settings_type()
    known = {f.name for f in fields(settings_type)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise ConfigError(f"{settings_type.__name__} has no setting {name!r} "
                              f"(settings: {', '.join(sorted(known))})")
        default = getattr(defaults, name)
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[name] = int(value)
        elif isinstance(default, float):
            out[name] = float(value)
        elif isinstance(default, tuple):
            out[name] = tuple(v for v in value.split(",") if v)
        elif isinstance(default, dict):
            out[name] = parse_decoding(value)
        elif value.lower() in ("none", ""):
            out[name] = None
        else:
            out[name] = _number_or_text(value)
    return out


def _number_or_text(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_decoding(spec: str) -> dict:
    """``"key_top_k=0;top_p=0.5"`` (or with commas) -> GenerateConfig fields, typed by their defaults."""
    from chopinbot.compose.generate import GenerateConfig

    defaults = GenerateConfig()
    out: dict[str, Any] = {}
    for part in filter(None, spec.replace(";", ",").split(",")):
        name, _, value = part.partition("=")
        if not hasattr(defaults, name):
            raise ConfigError(f"unknown GenerateConfig field {name!r}")
        default = getattr(defaults, name)
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes", "on")
        elif name == "register":  # register=36-96 (MIDI, in the output key)
            out[name] = tuple(int(v) for v in value.split("-"))
        elif name in ("loudness", "style", "key"):
            out[name] = value
        elif default is None:  # an optional number (bpm, density, max_leap, ...): typed as written
            out[name] = _number_or_text(value)
        else:
            out[name] = int(value) if isinstance(default, int) else float(value)
    GenerateConfig(**out).validate()
    return out


def run_suite(name: str, model: str | None = None, overrides: dict | None = None, out: str | Path | None = None,
              progress: bool = True) -> dict:
    """Run suite ``name`` on ``model`` (None: the shipped one) with its protocol's settings (``overrides``
    changes some: a reduced run, another dataset), write its JSON to ``out`` if given, return it."""
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"unknown suite {name!r}; choose from {', '.join(registry)} or all")
    suite = registry[name]
    settings = suite.settings(**(overrides or {}))
    t0 = time.perf_counter()
    result = suite.run(model, settings, progress)
    result["seconds"] = time.perf_counter() - t0
    if out is not None:
        atomic_write_json(out, result)
    return result
