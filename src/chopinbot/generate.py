"""Composing: :func:`generate` continues a :class:`~chopinbot.seeds.Seed`.

The LSTM state is carried forward one state at a time (the seed is read once,
then every step feeds only the new state), where the original design re-ran
the network over its last 16 states at every step.

Decoding: with ``threshold`` a key sounds when its probability reaches it and
the duration is the most likely rhythmic value (the original's deterministic
decoding); otherwise (the default) every key and onset is drawn from its
Bernoulli at ``temperature`` and the duration from its distribution, with
optional top-k / top-p.  A key that starts sounding is always struck.

Guards: the original's decoding often collapsed into silence or one stuck
chord.  After generating, the result is checked (no notes; a long stretch with
nothing struck; a short loop repeating); unless ``retry`` is off, it is
generated again with a recorded adjustment (more temperature / a lower
threshold).  A result with no notes at all is an error, never a silent empty file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .constants import N_KEYS
from .encoding import AgeTracker, end_positions, state_features
from .errors import ChopinBotError, ConfigError
from .keys import Key, parse_key
from .model import ChopinLSTM
from .seeds import Seed
from .states import States, states_to_notes, states_to_score, transpose_states

DEFAULT_VELOCITY = 72  # mezzo-forte, when the seed gives none
MAX_STEPS = 20_000  # one generation's cap (about 40 minutes of music)
STUCK_STATES = 24  # this many states in a row with nothing struck = stuck
LOOP_WINDOW = 48  # the last this many states drawn from a cycle of <= 4 states = looping


class GenerationError(ChopinBotError):
    """Generation produced nothing usable (after any retries)."""


@dataclass
class GenerateConfig:
    """How to continue a seed."""

    steps: int | None = 128  # states to generate (ignored when ``seconds`` is set)
    seconds: float | None = None  # generate until the new part lasts this long at ``bpm``
    threshold: float | None = None  # deterministic decoding at this probability; None = sample
    temperature: float = 1.0  # sampling: < 1 safer, > 1 wilder
    key_top_k: int = 8  # sampling: of the keys not sounding, only the k likeliest may start, their
    #                     probabilities scaled up to keep the expected number of new keys (88
    #                     independent draws at ~1.5 % each would add ~1.3 random keys per state); 0 = all
    top_k: int = 0  # durations: sample among the k most likely rhythmic values (0 = all)
    top_p: float = 1.0  # durations: nucleus sampling (1 = off)
    min_keys: int = 0  # at least this many keys sound in every generated state
    max_keys: int = 10  # at most this many (two hands)
    bpm: float | None = None  # None = the seed's own tempo
    key: str | None = None  # output key, e.g. "F# minor"; None = the seed's key
    random_seed: int | None = None  # makes sampling reproducible
    include_seed: bool = True  # start the output with the seed
    retry: bool = True  # retry when a guard fires
    max_retries: int = 3

    def validate(self) -> None:
        if self.seconds is None and (self.steps is None or self.steps < 1):
            raise ConfigError("steps must be at least 1")
        if self.steps is not None and self.steps > MAX_STEPS:
            raise ConfigError(f"steps must be at most {MAX_STEPS:,}")
        if self.seconds is not None and not (0 < self.seconds <= 3600):
            raise ConfigError("seconds must be in (0, 3600]")
        if self.threshold is not None and not (0.0 <= self.threshold <= 1.0):
            raise ConfigError("threshold must be between 0 and 1")
        if not (0 <= self.key_top_k <= N_KEYS):
            raise ConfigError("key top-k must be 0..88")
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ConfigError("temperature must be positive (use --threshold for deterministic decoding)")
        if self.top_k < 0 or not (0 < self.top_p <= 1):
            raise ConfigError("top-k must be 0 or more and top-p in (0, 1]")
        if not (0 <= self.min_keys <= self.max_keys <= N_KEYS) or self.max_keys < 1:
            raise ConfigError("need 0 <= min-keys <= max-keys <= 88 and max-keys >= 1")
        if self.bpm is not None and not (10 <= self.bpm <= 400):
            raise ConfigError("bpm must be between 10 and 400")
        if self.key is not None:
            parse_key(self.key)


@dataclass
class GenerationResult:
    """A generated piece (seed included or not), in its output key."""

    states: States
    seed_len: int  # how many of ``states`` are the seed (0 if not included)
    key: Key
    bpm: float
    source: str
    guards: list[str] = field(default_factory=list)
    config: GenerateConfig | None = None

    @property
    def generated(self) -> States:
        return self.states[self.seed_len :]

    @property
    def seed_end_beat(self) -> float:
        return float(self.states.beats[: self.seed_len].astype(np.float64).sum())

    @property
    def notes(self) -> np.ndarray:
        """(N, 4): start beat, end beat, MIDI pitch, velocity."""
        return states_to_notes(self.states)

    @property
    def seconds(self) -> float:
        return self.states.total_beats * 60.0 / self.bpm

    def score(self):
        return states_to_score(self.states, bpm=self.bpm)

    def midi_bytes(self, part: str = "all") -> bytes:
        """MIDI of the whole piece (``all``), the ``seed`` or the ``generated`` part."""
        st = {"all": self.states, "seed": self.states[: self.seed_len], "generated": self.generated}[part]
        return bytes(states_to_score(st, bpm=self.bpm).dumps_midi())

    def save_midi(self, path: str | os.PathLike) -> Path:
        from .io_utils import atomic_write_bytes

        return atomic_write_bytes(path, self.midi_bytes())

    def save_wav(self, path: str | os.PathLike) -> Path:
        from .audio import render_wav
        from .io_utils import atomic_write_bytes

        path = Path(path)
        mid = path.with_name(f".{path.stem}.render.mid")
        atomic_write_bytes(mid, self.midi_bytes())
        try:
            return render_wav(mid, path)
        finally:
            mid.unlink(missing_ok=True)

    def wav_bytes(self) -> bytes:
        from .audio import render_wav_bytes

        return render_wav_bytes(self.midi_bytes())

    def figure(self, title: str | None = None):
        from .pianoroll import pianoroll_figure

        return pianoroll_figure(self.notes, bpm=self.bpm, seed_end_beat=self.seed_end_beat if self.seed_len else None,
                                title=title or f"ChopinBot in {self.key.name}, {self.bpm:.0f} bpm")

    def save_png(self, path: str | os.PathLike) -> Path:
        from .plots import save_figure

        return save_figure(self.figure(), path)

    def png_bytes(self) -> bytes:
        from .plots import plt

        buf = io.BytesIO()
        fig = self.figure()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    def summary(self) -> str:
        g = self.generated
        notes = states_to_notes(g)
        poly = g.keys.sum(1)
        guards = "; ".join(self.guards) if self.guards else "none fired"
        return (
            f"{len(g)} new states ({g.total_beats * 60 / self.bpm:.1f} s at {self.bpm:.0f} bpm) after a "
            f"{self.seed_len}-state seed from {self.source}; {len(notes)} notes in {self.key.name}; "
            f"polyphony {poly.mean():.1f} keys on average (max {poly.max() if len(poly) else 0}); "
            f"rests {np.mean(poly == 0):.0%} of states; guards: {guards}."
        )


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_l, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_l, -1)
        drop = probs.cumsum(-1) - probs > top_p
        sorted_l = sorted_l.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_l)
    return logits


def _bound_polyphony(keys: torch.Tensor, probs: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    count = keys.sum(-1)
    if (count > hi).any() or (count < lo).any():
        # keep the hi most likely chosen keys; add the most likely missing ones up to lo
        score = probs + keys * 2.0  # chosen keys rank first, by probability
        order = torch.argsort(score, dim=-1, descending=True)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(N_KEYS).expand_as(order))
        n = count.clamp(lo, hi).unsqueeze(-1)
        keys = (rank < n).float()
    return keys


class _Sampler:
    """One decoding step: next-state distributions -> a concrete state."""

    def __init__(self, model: ChopinLSTM, cfg: GenerateConfig, gen: torch.Generator) -> None:
        self.m, self.cfg, self.gen = model, cfg, gen
        self.values = torch.tensor(model.config.duration_classes)
        self.vocab = model.config.vocab

    def __call__(self, out, prev_keys: torch.Tensor):
        c, T = self.cfg, self.cfg.temperature
        kp = torch.sigmoid(out.key_logits[:, -1] / (1.0 if c.threshold is not None else T))
        if c.threshold is not None:
            keys = (kp >= c.threshold).float()
        else:
            p = kp
            if c.key_top_k:
                silent = torch.where(prev_keys > 0, -1.0, kp)
                kth = torch.topk(silent, c.key_top_k, dim=-1).values[..., -1:]
                top = (prev_keys == 0) & (silent >= kth)
                # keep the expected number of new keys: the tail's mass moves to the k likeliest
                mass = (kp * (prev_keys == 0)).sum(-1, keepdim=True)
                top_mass = (kp * top).sum(-1, keepdim=True).clamp(min=1e-9)
                p = torch.where(prev_keys > 0, kp, torch.where(top, (kp * mass / top_mass).clamp(max=1.0), 0.0))
            keys = torch.bernoulli(p, generator=self.gen)
        keys = _bound_polyphony(keys, kp, c.min_keys, c.max_keys)
        if out.onset_logits is not None:
            op = torch.sigmoid(out.onset_logits[:, -1] / (1.0 if c.threshold is not None else T))
            struck = (op >= 0.5).float() if c.threshold is not None else torch.bernoulli(op, generator=self.gen)
        else:
            struck = torch.zeros_like(keys)
        onsets = keys * torch.clamp(struck + (1 - prev_keys), max=1.0)  # a key that starts sounding is struck
        d = out.duration[:, -1]
        if self.m.config.duration_head == "classes":
            if c.threshold is not None:
                cls = torch.as_tensor(self.vocab.index(self.m.point_duration(d).numpy()))
            else:
                probs = torch.softmax(_filter_logits(d / T, c.top_k, c.top_p), -1)
                cls = torch.multinomial(probs, 1, generator=self.gen).squeeze(-1)
            beats = self.values[cls]
        else:
            beats_cont = torch.sigmoid(d).mean(-1) * self.m.config.max_duration
            cls = torch.as_tensor(self.vocab.index(beats_cont.numpy()))
            beats = self.values[cls]
        return keys, onsets, cls, beats


def _continue(*args, **kwargs) -> list[States]:
    # MKL-DNN's LSTM kernel costs ~5x more than the plain one for a single
    # step at batch 1 (8.0 vs 1.6 ms measured here), so it is off while generating.
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with torch.inference_mode():
            return _continue_steps(*args, **kwargs)
    finally:
        torch.backends.mkldnn.enabled = was


def _continue_steps(model: ChopinLSTM, seeds: list[States], cfg: GenerateConfig, gen: torch.Generator,
              steps: int | None, max_beats: float | None, rerun_window: int = 0, start: float = 0.0,
              stop_when_stuck: bool = False) -> list[States]:
    """Generate after each seed (all seeds the same length, starting at beat
    ``start`` of their source); returns the new states.  With
    ``stop_when_stuck`` an attempt in which every piece has gone
    ``STUCK_STATES`` states without a struck key ends there (it will be
    retried), instead of running to full length first."""
    vocab = model.config.vocab
    B = len(seeds)
    ages = AgeTracker(np.stack([s.keys for s in seeds]), np.stack([s.onsets for s in seeds]),
                      np.stack([s.beats for s in seeds]))
    x_seed = torch.from_numpy(np.stack([state_features(s.keys, s.onsets, s.beats, vocab, end_positions(s.beats, start),
                                                       ages.history_ages[i]) for i, s in enumerate(seeds)]))
    pos = np.full(B, start + float(seeds[0].beats.astype(np.float64).sum()))
    sampler = _Sampler(model, cfg, gen)
    out, hc = model(x_seed)
    prev = torch.from_numpy(np.stack([s.keys[-1] for s in seeds])).float()
    history = [x_seed[:, i : i + 1] for i in range(x_seed.shape[1])] if rerun_window else []
    ks, os_, bs = [], [], []
    total = torch.zeros(B, dtype=torch.float64)
    quiet = torch.zeros(B, dtype=torch.long)  # states since the last struck key
    n = 0
    limit = steps if steps is not None else MAX_STEPS
    while n < limit:
        keys, onsets, cls, beats = sampler(out, prev)
        ks.append(keys)
        os_.append(onsets)
        bs.append(beats)
        total += beats.double()
        n += 1
        if max_beats is not None and bool((total >= max_beats).all()):
            break
        pos = pos + beats.double().numpy()
        k_np, o_np, b_np = keys.numpy(), onsets.numpy(), beats.numpy()
        x = torch.from_numpy(state_features(k_np, o_np, b_np, vocab, pos, ages.step(k_np, o_np, b_np))).unsqueeze(1)
        if rerun_window:  # the original's way, for comparison: re-read the last window from scratch
            history.append(x)
            out, _ = model(torch.cat(history[-rerun_window:], 1))
        else:
            out, hc = model(x, hc)
        prev = keys
        quiet = torch.where(onsets.any(-1), 0, quiet + 1)
        if stop_when_stuck and bool((quiet >= STUCK_STATES).all()):
            break
    K = torch.stack(ks, 1).bool().numpy()
    O = torch.stack(os_, 1).bool().numpy()
    D = torch.stack(bs, 1).float().numpy()
    result = []
    for b in range(B):
        d = D[b]
        if max_beats is not None:  # trim each piece to its own length
            cut = int(np.searchsorted(np.cumsum(d), max_beats - 1e-9)) + 1
            sl = slice(0, min(cut, len(d)))
        else:
            sl = slice(0, len(d))
        vel = np.where(O[b, sl].any(1), seeds[b].velocity[seeds[b].velocity > 0].mean().round()
                       if (seeds[b].velocity > 0).any() else DEFAULT_VELOCITY, 0).astype(np.uint8)
        result.append(States(K[b, sl], O[b, sl], d[sl].astype(np.float32), np.zeros(len(d[sl]), np.float32), vel))
    return result


def check_guards(new: States) -> list[str]:
    """Problems of a generated part, in plain words (empty list = fine)."""
    problems = []
    if len(new) == 0 or not new.onsets.any():
        return ["silence: nothing was struck"]
    struck = new.onsets.any(1)
    run = best = 0
    for s in struck:
        run = 0 if s else run + 1
        best = max(best, run)
    if best >= STUCK_STATES:
        problems.append(f"stuck: {best} states in a row with nothing struck")
    if len(new) >= LOOP_WINDOW:
        tail = new[len(new) - LOOP_WINDOW :]
        sig = [hash((tail.keys[i].tobytes(), tail.onsets[i].tobytes(), float(tail.beats[i]))) for i in range(len(tail))]
        for period in (1, 2, 3, 4):
            if all(sig[i] == sig[i - period] for i in range(period, len(sig))):
                problems.append(f"looping: the last {LOOP_WINDOW} states repeat a cycle of {period}")
                break
    return problems


def _adjust(cfg: GenerateConfig, problems: list[str]) -> tuple[GenerateConfig, str]:
    if cfg.threshold is not None and any(p.startswith(("silence", "stuck")) for p in problems):
        t = max(0.05, cfg.threshold - 0.1)
        return replace(cfg, threshold=t), f"threshold lowered to {t:.2f}"
    if cfg.threshold is not None:
        return replace(cfg, threshold=None, temperature=1.0), "switched from threshold to sampling"
    t = min(cfg.temperature * 1.25, 3.0)
    return replace(cfg, temperature=t), f"temperature raised to {t:.2f}"


def _output_key(seed: Seed, requested: str | None, guards: list[str]) -> Key:
    if requested is None:
        return seed.key
    want = parse_key(requested)
    if want.minor != seed.key.minor:
        # Transposition cannot change the mode: keep the signature the user asked for.
        rel = Key((want.tonic + 9) % 12, True) if not want.minor else Key((want.tonic + 3) % 12, False)
        guards.append(f"the seed is in a {'minor' if seed.key.minor else 'major'} key: wrote {rel.name}, "
                      f"the relative of {want.name}")
        return rel
    return want


def generate(model: ChopinLSTM, seed: Seed, cfg: GenerateConfig | None = None, batch: int = 1,
             rerun_window: int = 0) -> GenerationResult | list[GenerationResult]:
    """Continue ``seed``: one :class:`GenerationResult`, or a list of ``batch``."""
    cfg = cfg or GenerateConfig()
    cfg.validate()
    if batch < 1 or batch > 256:
        raise ConfigError("batch must be 1..256")
    if len(seed.states) == 0:
        raise ConfigError("the seed is empty")
    gen = torch.Generator().manual_seed(cfg.random_seed if cfg.random_seed is not None
                                        else int(np.random.SeedSequence().entropy % 2**63))
    bpm = float(cfg.bpm or seed.bpm)
    max_beats = cfg.seconds * bpm / 60.0 if cfg.seconds is not None else None
    steps = None if cfg.seconds is not None else cfg.steps
    news = _continue(model, [seed.states] * batch, cfg, gen, steps, max_beats, rerun_window, seed.start_beat,
                     stop_when_stuck=cfg.retry and cfg.max_retries > 0 and batch == 1)
    results = []
    for new in news:
        guards: list[str] = []
        key = _output_key(seed, cfg.key, guards)
        attempt_cfg = cfg
        problems = check_guards(new)
        tries = 0
        while problems and cfg.retry and tries < cfg.max_retries:
            attempt_cfg, change = _adjust(attempt_cfg, problems)
            guards.append(f"{'; '.join(problems)} -> retried with {change}")
            new = _continue(model, [seed.states], attempt_cfg, gen, steps, max_beats, rerun_window, seed.start_beat,
                            stop_when_stuck=tries + 1 < cfg.max_retries)[0]
            problems = check_guards(new)
            tries += 1
        if problems:
            guards.append("; ".join(problems) + (" (kept: --no-retry)" if not cfg.retry else " (after retries)"))
        if not new.onsets.any() and not (cfg.include_seed and seed.states.keys.any()):
            raise GenerationError("the model produced only silence, even after retries; try sampling or a lower "
                                  "threshold")
        new.seconds = (new.beats * 60.0 / bpm).astype(np.float32)
        seed_states = seed.states.copy()
        seed_states.seconds = (seed_states.beats * 60.0 / bpm).astype(np.float32)
        full = States.concat([seed_states, new]) if cfg.include_seed else new
        out_states, _ = transpose_states(full, seed.home.shift_to(key))
        results.append(GenerationResult(out_states, len(seed.states) if cfg.include_seed else 0, key, bpm,
                                        seed.source, guards, attempt_cfg))
    return results[0] if batch == 1 else results
