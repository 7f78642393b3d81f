"""The one loop every evaluation shares: held-out seeds -> continuations -> excerpts.

The report's statistics and realism section and every suite of
``chopinbot evaluate --suite`` (:mod:`chopinbot.evaluation.suites`) compose
through :func:`continue_seeds`: each seed is continued by the model (``generate``
with one :class:`~chopinbot.compose.generate.GenerateConfig` per seed, random
seed = the seed's index unless told otherwise) and the new music is cut into
fixed-length excerpts (:func:`~chopinbot.evaluation.excerpts.time_excerpts`),
grouped by the seed's piece.  The seeds themselves are the held-out windows of
:func:`held_out_seeds`, so that every protocol continues the same ones.

The loop itself (:func:`run_continuations`) takes any ``compose(seed, index)``
callable, so that the classifier test stays torch-free and a test can feed it
made-up music; :func:`model_composer` is the one that calls ``generate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chopinbot.compose.seeds import Seed, window_seed
from chopinbot.constants import SEED_STATES, WARM_STATES
from chopinbot.dataset.corpus import UNKNOWN_COMPOSER, style_name
from chopinbot.dataset.store import Dataset, Segment
from chopinbot.evaluation.excerpts import (
    EXCERPT_SECONDS,
    Excerpt,
    excerpt_windows,
    state_excerpts,
    time_excerpts,
    timed_notes,
)
from chopinbot.music.keys import Key
from chopinbot.music.states import States, transpose_states
from chopinbot.progress import Progress

# What composing one seed returns: the new states, or a GenerationResult (whose ``states`` are used).
Composed = Any
Compose = Callable[[Seed, int], Composed]
# GenerateConfig fields for every seed, or a function of (seed, random seed) giving them
Overrides = Mapping[str, Any] | Callable[[Seed, int], Mapping[str, Any]]

CONTINUATION_SECONDS = 60.0  # every protocol's continuation: three 20-s excerpts, so drift shows


@dataclass
class Continuation:
    """One seed continued: the new states (empty when composing failed), the result, its excerpts."""

    seed: Seed
    index: int  # the seed's position in the list continued
    random_seed: int
    states: States
    result: Any = None  # the GenerationResult (or what ``compose`` returned), None on failure
    excerpts: list[Excerpt] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.result is None


def with_context(seeds: Sequence[Seed], context_states: int | None) -> list[Seed]:
    """The seeds with only the last ``context_states`` states of their context (0: the seed alone;
    None: as they are)."""
    if context_states is None:
        return list(seeds)
    return [dataclasses.replace(s, context=s.context[len(s.context) - context_states:]
                                if s.context is not None and context_states else None) for s in seeds]


def model_composer(model, seconds: float | None = CONTINUATION_SECONDS, overrides: Overrides | None = None,
                   include_seed: bool = False, strict: bool = False) -> Compose:
    """``compose(seed, random_seed)`` for :func:`run_continuations`: ``generate`` with
    ``GenerateConfig(seconds=seconds, random_seed=random_seed, include_seed=include_seed, **overrides)``
    (``overrides`` may be a function of the seed and its random seed).  A :class:`GenerationError`
    (silence even after retries) gives None -- the seed is left out -- unless ``strict``."""
    from chopinbot.compose.generate import GenerateConfig, GenerationError, generate  # torch: only when composing

    def compose(seed: Seed, random_seed: int):
        extra = overrides(seed, random_seed) if callable(overrides) else dict(overrides or {})
        fields = {"seconds": seconds, "include_seed": include_seed, **extra, "random_seed": random_seed}
        try:
            return generate(model, seed, GenerateConfig(**fields))
        except GenerationError:
            if strict:
                raise
            return None

    return compose


def run_continuations(compose: Compose, seeds: Sequence[Seed], random_seeds: Sequence[int] | None = None,
                      groups: Sequence[str] | None = None, excerpt_seconds: float | None = EXCERPT_SECONDS,
                      progress: bool = False, desc: str = "compose") -> list[Continuation]:
    """Continue every seed with ``compose(seed, random_seed)`` (random seed = the seed's position,
    or ``random_seeds[i]``) and cut the new music into ``excerpt_seconds`` excerpts (None: none),
    grouped by ``groups[i]`` (default: the seed's piece, the start of its ``source``)."""
    out = []
    bar = Progress(len(seeds), desc=desc, unit="seeds", enabled=progress, leave=False)
    for i, seed in enumerate(seeds):
        rs = int(random_seeds[i]) if random_seeds is not None else i
        res = compose(seed, rs)
        states = States.empty() if res is None else getattr(res, "states", res)
        group = groups[i] if groups is not None else seed.source.split(" ", 1)[0]
        ex = (time_excerpts(timed_notes(states), group, seed.key, excerpt_seconds, states.total_seconds)
              if excerpt_seconds else [])
        out.append(Continuation(seed, i, rs, states, res, ex))
        bar.update()
    bar.close()
    return out


def continue_seeds(model, seeds: Sequence[Seed], seconds: float | None = CONTINUATION_SECONDS,
                   overrides: Overrides | None = None, random_seeds: Sequence[int] | None = None,
                   context_states: int | None = None, groups: Sequence[str] | None = None,
                   excerpt_seconds: float | None = EXCERPT_SECONDS, include_seed: bool = False,
                   strict: bool = False, progress: bool = False, desc: str = "compose") -> list[Continuation]:
    """``model`` continues ``seeds`` (with ``context_states`` of context, see :func:`with_context`)
    for ``seconds`` each, with ``overrides`` of the GenerateConfig defaults: :func:`run_continuations`
    of :func:`model_composer`."""
    return run_continuations(model_composer(model, seconds, overrides, include_seed, strict),
                             with_context(seeds, context_states), random_seeds, groups, excerpt_seconds,
                             progress, desc)


def excerpts_of(continuations: Sequence[Continuation]) -> list[Excerpt]:
    """All the continuations' excerpts, in order."""
    return [e for c in continuations for e in c.excerpts]


def performed_chopin(seg: Segment) -> bool:
    """Whether a segment is a performance of Chopin (or of a composer not named): the real music the
    realism test holds generated music against.  Scores (no dynamics, a steady tempo: the NIFC editions)
    and other composers' pieces are not what a listener compares with."""
    return seg.dynamics and style_name(seg.composer) in ("chopin", UNKNOWN_COMPOSER)


def held_out_seeds(ds: Dataset, split: str, seed_len: int = SEED_STATES, seconds: float = EXCERPT_SECONDS,
                   steady: bool = True, context_states: int = WARM_STATES,
                   keep: Callable[[Segment], bool] = performed_chopin) -> tuple[list[Seed], list[Excerpt]]:
    """Every window of ``seconds`` in the ``split`` pieces that follows at least
    ``seed_len`` states: the seed before it (in the model's home key, as
    generation wants it, with up to ``context_states`` earlier states of the
    piece as its context) and the window itself (the true continuation, in
    the piece's own key).  Only the segments ``keep`` accepts (default: performed Chopin)."""
    seeds, true = [], []
    for seg in filter(keep, ds.segments(split)):
        home = ds.states(seg)
        key = Key(seg.tonic, seg.minor)
        original, _ = transpose_states(home, -seg.shift)
        windows = excerpt_windows(original, seconds, first=seed_len)
        true += state_excerpts(original, seg.piece, key, seconds, first=seed_len, steady=steady)
        seeds += [window_seed(home, key, a - seed_len, seed_len, seg.piece, context_states) for a, _ in windows]
    return seeds, true


def split_excerpts(ds: Dataset, split: str, seconds: float = EXCERPT_SECONDS, steady: bool = True) -> list[Excerpt]:
    """Excerpts of a split's performed Chopin pieces (:func:`performed_chopin`), in their own keys, by piece."""
    out = []
    for seg in filter(performed_chopin, ds.segments(split)):
        original, _ = transpose_states(ds.states(seg), -seg.shift)
        out += state_excerpts(original, seg.piece, Key(seg.tonic, seg.minor), seconds, steady=steady)
    return out


def evenly(items: Sequence, count: int) -> list:
    """At most ``count`` of ``items``, every k-th from the first (as the key-hold and style protocols pick)."""
    return list(items[:: max(1, len(items) // count)][:count])
