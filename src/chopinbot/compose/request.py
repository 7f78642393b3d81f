"""What to compose, chosen in one place: a continuation, a piece in a form, or an infill.

`chopinbot generate` and the web app both call :func:`compose_piece`, so a variation, a form or
an infill is made the same way from either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from chopinbot.compose.form import compose_form
from chopinbot.compose.generate import GenerateConfig, GenerationResult, generate
from chopinbot.compose.infill import DEFAULT_CANDIDATES, InfillResult, Unit, infill
from chopinbot.compose.seeds import Seed
from chopinbot.constants import WARM_STATES
from chopinbot.dataset.store import DEFAULT_SETTINGS, PrepareSettings
from chopinbot.errors import ConfigError
from chopinbot.model.network import ChopinLSTM


@dataclass(frozen=True)
class InfillSpan:
    """A span of a MIDI file (a path or its bytes) to compose anew (see :func:`~chopinbot.compose.infill.infill`)."""

    source: str | os.PathLike | bytes
    start: float
    end: float
    unit: Unit = "seconds"
    candidates: int = DEFAULT_CANDIDATES
    context_states: int = WARM_STATES
    name: str | None = None  # the file's label (an upload)


def compose_piece(model: ChopinLSTM, cfg: GenerateConfig, seed: Seed | None = None, *, form: str | None = None,
                  batch: int = 1, engine: str = "auto", span: InfillSpan | None = None,
                  settings: PrepareSettings = DEFAULT_SETTINGS) -> list[GenerationResult | InfillResult]:
    """The pieces asked for: the infill of ``span`` (one piece), ``batch`` pieces in ``form`` (one at a
    time, each from the next random seed), or ``batch`` continuations of ``seed`` (one batch)."""
    if span is not None:
        if form is not None:
            raise ConfigError("a form composes a whole piece: it does not apply to an infill")
        if batch != 1:
            raise ConfigError("an infill writes one piece: variations do not apply (the candidates set how many "
                              "spans are composed to choose from)")
        return [infill(model, span.source, span.start, span.end, span.unit, cfg, candidates=span.candidates,
                       settings=settings, context_states=span.context_states, name=span.name)]
    if seed is None:
        raise ConfigError("a continuation or a form needs a seed")
    if form is not None:
        return [compose_form(model, seed, replace(cfg, random_seed=None if cfg.random_seed is None
                                                  else cfg.random_seed + i), form, engine=engine)
                for i in range(batch)]
    made = generate(model, seed, cfg, batch=batch, engine=engine)
    return made if isinstance(made, list) else [made]
