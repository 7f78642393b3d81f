"""Decoding one state: the network's outputs -> a concrete next state.

:class:`Sampler` turns a step's key, onset and duration outputs into keys,
onsets and a rhythmic class (NumPy: at batch 1 a step is a few dozen tiny
operations, and NumPy calls them for a fraction of what PyTorch does), with
the rules that make the draws musical:

* a key that starts sounding is always struck; every new state changes
  something (see :meth:`Sampler.__call__`); polyphony stays within bounds;
* which silent keys may start (:func:`allowed_new_keys`): the likeliest
  ``key_top_k``, those within ``key_min_p`` of the likeliest, and/or those
  within ``key_local_p`` of the likeliest silent key *near them*
  (``key_window`` semitones either side).  Top-k over the whole keyboard lets
  only the melody's neighbours start (bass notes are individually less likely
  than the next melody note) and the bass dies out within seconds; sampling
  every key instead adds wrong notes from the long tail.  The local rule keeps
  every register's likeliest candidates and cuts each register's tail;
* a ``joint_keys`` model's keys are drawn low to high, each from its
  conditional given those below (:meth:`Sampler._draw_joint`), exactly;
* a ``loudness`` model's velocity class is drawn from its head;
* the decoding rules (:mod:`chopinbot.compose.decoding`) mask the keys (a register, a
  cadence's chord), propose a continuation (the repeat boost: :meth:`Sampler._propose`) and
  tilt the durations (a density kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from scipy.ndimage import maximum_filter1d

from chopinbot.compose.stepper import ModuleStepper, NumpyStepper, sigmoid
from chopinbot.constants import N_KEYS
from chopinbot.dataset.features import class_velocity
from chopinbot.model.network import ChopinLSTM

REDRAWS = 8  # draws of a step before its likeliest change is forced (a draw that changes nothing is redrawn)
LOCAL_FLOOR = 0.01  # with key_local_p: a silent key below 1 % never starts, however alone in its register


class DecodingSettings(Protocol):
    """What the sampler reads of a :class:`~chopinbot.compose.generate.GenerateConfig`."""

    threshold: float | None
    temperature: float
    key_top_k: int
    key_min_p: float
    key_local_p: float
    key_window: int
    top_k: int
    top_p: float
    min_keys: int
    max_keys: int


def allowed_new_keys(p: np.ndarray, prev_keys: np.ndarray, cfg: DecodingSettings,
                     candidates: np.ndarray | None = None) -> np.ndarray:
    """(B, 88) bool: the silent ``candidates`` (default: every key not in
    ``prev_keys``) that may start, by the config's key-truncation rules (all
    that are on must hold; with none on, every silent key may)."""
    silent = ~prev_keys if candidates is None else candidates & ~prev_keys
    ps = np.where(silent, p, -1.0)
    allowed = silent.copy()
    if cfg.key_min_p:
        allowed &= ps >= cfg.key_min_p * ps.max(-1, keepdims=True)
    if cfg.key_top_k and cfg.key_top_k < N_KEYS:
        allowed &= ps >= np.partition(ps, -cfg.key_top_k, axis=-1)[:, [-cfg.key_top_k]]  # the k-th largest
    if cfg.key_local_p:
        w = cfg.key_window
        # the likeliest silent key within w semitones (scipy's running maximum: this runs at every draw,
        # several times a state, and a padded sliding window cost a third of a joint model's step)
        near = maximum_filter1d(np.maximum(ps, 0.0), size=2 * w + 1, axis=-1, mode="constant", cval=0.0)
        allowed &= (ps >= cfg.key_local_p * near) & (ps >= LOCAL_FLOOR)
    return allowed


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def filter_logits(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Top-k, then nucleus (top-p), filtering of (B, n) logits: dropped values become -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, [-top_k]]  # the k-th largest (a slice would be empty at k=1)
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        probs = softmax(np.take_along_axis(logits, order, -1))
        drop_sorted = probs.cumsum(-1) - probs > top_p  # keep the smallest set whose mass reaches top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        logits = np.where(drop, -np.inf, logits)
    return logits


def bound_polyphony(keys: np.ndarray, probs: np.ndarray, lo: int, hi: int) -> np.ndarray:
    count = keys.sum(-1)
    if (count > hi).any() or (count < lo).any():
        # keep the hi most likely chosen keys; add the most likely missing ones up to lo
        score = probs + keys * 2.0  # chosen keys rank first, by probability
        rank = np.argsort(np.argsort(-score, axis=-1, kind="stable"), axis=-1, kind="stable")
        keys = rank < np.clip(count, lo, hi)[:, None]
    return keys


class Sampler:
    """One decoding step: next-state logits -> a concrete state (NumPy: at
    batch 1 a step is a few dozen tiny operations, and NumPy calls them for a
    fraction of what PyTorch does)."""

    def __init__(self, model: ChopinLSTM, cfg: DecodingSettings, rng: np.random.Generator,
                 stepper: NumpyStepper | ModuleStepper | None = None, processors: Sequence = ()) -> None:
        """``stepper``: a joint_keys model's, whose ``conditionals`` give each key's logits given those below.
        ``processors``: the decoding rules (:class:`~chopinbot.compose.processors.StepProcessor`), whose
        ``mask``, ``propose``/``accept`` and ``tilt_durations`` hooks are called at every draw (their
        ``on_state`` is the loop's, after each state)."""
        self.cfg, self.rng = cfg, rng
        self.processors = list(processors)
        self.stepper = stepper
        self.joint = model.config.joint_keys
        self.evaluations = 0  # joint_keys: conditionals evaluated (a state's count is its keys on + 1)
        c = model.config
        self.classes_head = c.duration_head == "classes"
        self.max_duration = c.max_duration
        self.vocab = c.vocab
        v = np.asarray(c.duration_classes)
        self.cost = 2 * np.abs(v[:, None] - v[None, :]) / (v[:, None] + v[None, :])  # cost[true, chosen]

    def __call__(self, key_logits: np.ndarray, onset_logits: np.ndarray | None, d: np.ndarray,
                 prev_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits (B, 88), (B, 88) or None, (B, duration outputs); the previous
        keys (B, 88) bool -> keys and onsets (B, 88) bool, rhythmic class (B,).

        A new state always differs from the previous one (a key starts or
        stops, or one is struck again): a state boundary *is* such a change,
        and no state of the corpus repeats its predecessor.  Drawn keys and
        onsets are independent, so a draw may change nothing (27 % of the states
        of a model with the repeats input, which then read their own standstill
        as a passage repeating); such a draw is drawn again (sampling from the
        model's distribution given that something changes), and after
        ``REDRAWS`` tries, or when decoding by threshold, the likeliest single
        change is made."""
        c, T, rng = self.cfg, self.cfg.temperature, self.rng
        sample = c.threshold is None
        kp = sigmoid(key_logits if not sample or T == 1.0 else key_logits / T)
        op = None
        if onset_logits is not None:
            op = sigmoid(onset_logits if not sample or T == 1.0 else onset_logits / T)
        kp, op = self._confine(kp, op, prev_keys)
        copy = self._propose(kp, op, d, prev_keys) if sample else None
        if copy is not None:  # a copied length a processor forbids becomes the nearest one it allows
            copy = (copy[0], copy[1], self._allowed_class(d, copy[1], copy[2]), copy[3])
            if copy[3].all():  # every piece repeats: nothing to draw
                return copy[0], copy[1], copy[2]
        keys, onsets = self._draw(kp, op, prev_keys)
        for _ in range(REDRAWS if sample else 0):
            same = unchanged(keys, onsets, prev_keys) | self._rejected(keys, onsets)
            if not same.any():
                break
            k2, o2 = self._draw(kp, op, prev_keys)
            keys, onsets = np.where(same[:, None], k2, keys), np.where(same[:, None], o2, onsets)
        same = unchanged(keys, onsets, prev_keys)
        bad = self._rejected(keys, onsets) & ~same
        if bad.any():  # still forbidden: the likeliest single change from the previous state instead
            keys, onsets = np.where(bad[:, None], prev_keys, keys), np.where(bad[:, None], False, onsets)
            same |= bad
        if same.any():
            keys, onsets = self._likeliest_change(keys, onsets, kp, op, same)
        if self.classes_head:
            d = self._tilted(d, onsets)
        if not self.classes_head:
            cls = self.vocab.index(sigmoid(d).mean(-1) * self.max_duration)
        elif not sample:
            cost = softmax(d.astype(np.float64)) @ self.cost  # as ChopinLSTM.point_duration
            cls = np.where(np.isfinite(d), cost, np.inf).argmin(-1)  # never a value a processor forbids
        else:
            probs = softmax(filter_logits(d.astype(np.float64) / T, c.top_k, c.top_p))
            cdf = probs.cumsum(-1)
            u = rng.random((len(cdf), 1)) * cdf[:, -1:]
            cls = np.minimum((cdf < u).sum(-1), cdf.shape[-1] - 1)  # inverse-CDF draw
        if copy is not None:
            take = copy[3]
            keys, onsets = np.where(take[:, None], copy[0], keys), np.where(take[:, None], copy[1], onsets)
            cls = np.where(take, copy[2], cls)
        return keys, onsets, cls

    def _tilted(self, d: np.ndarray, onsets: np.ndarray, forbidding: bool | None = None) -> np.ndarray:
        """Duration logits ``d`` (B, V) of states striking ``onsets`` as the processors tilt them: all of
        them, or only those that forbid lengths (``forbidding`` True) or only those that do not (False)."""
        d = d.astype(np.float64)
        for p in self.processors:
            if forbidding is None or getattr(p, "forbids_durations", False) == forbidding:
                d = p.tilt_durations(d, onsets.sum(-1))
        return d

    def _allowed_class(self, d: np.ndarray, onsets: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """(B,) the rhythmic class ``cls`` (a proposed continuation's, after a state striking ``onsets``), or
        where a processor forbids it (its logit -inf) the nearest class allowed: the copied notes go on,
        on the grid the processor keeps."""
        if not self.classes_head or not any(getattr(p, "forbids_durations", False) for p in self.processors):
            return cls  # a tilt alone (a density kept) forbids nothing
        d = self._tilted(d, onsets, forbidding=True)
        ok = np.isfinite(d)
        nearest = np.where(ok, self.cost[cls], np.inf).argmin(-1)  # cost[true, chosen]: relative distance
        return np.where(ok[np.arange(len(cls)), cls], cls, nearest)

    def _rejected(self, keys: np.ndarray, onsets: np.ndarray) -> np.ndarray:
        """(B,) bool: the drawn states a processor forbids (a loop's next state)."""
        bad = np.zeros(len(keys), bool)
        for p in self.processors:
            bad |= p.reject(keys, onsets)
        return bad

    def _propose(self, kp: np.ndarray, op: np.ndarray | None, d: np.ndarray, prev_keys: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The pieces that take a continuation a processor proposes (the repeat boost: a passage heard
        before going on as it went): its keys, onsets, rhythmic class and (B,) whether each piece takes
        it; None if none can.  A continuation that changes nothing, or breaks the polyphony bounds, is
        never taken; the first processor with a proposal makes it."""
        c, T = self.cfg, self.cfg.temperature
        for proposer in self.processors:
            proposal = proposer.propose()
            if proposal is not None:
                break
        else:
            return None
        ck, co, cls, found = proposal
        co = co | (ck & ~prev_keys)  # a key that starts sounding is struck
        n = ck.sum(-1)
        found &= ~unchanged(ck, co, prev_keys) & ~self._rejected(ck, co) & (n >= c.min_keys) & (n <= c.max_keys)
        if not found.any():
            return None
        rows = np.flatnonzero(found)
        k, o, prev = ck[rows], co[rows], prev_keys[rows]
        if self.joint:  # the keys' conditionals given the continuation's keys below each: one evaluation
            self.evaluations += 1
            kl, ol = self.stepper.conditionals(k.astype(np.float32), o.astype(np.float32), rows)
            p = sigmoid(kl if T == 1.0 else kl / T)
            q = None if ol is None else sigmoid(ol if T == 1.0 else ol / T)
            p, q = self._confine(p, q, prev)
        else:
            p, q = kp[rows], None if op is None else op[rows]
        with np.errstate(divide="ignore"):
            log_p = np.log(np.where(k, p, 1.0 - p)).sum(-1)
            kept = k & prev  # a key sounding on is struck again or not; a key that starts is struck
            if q is not None:
                log_p += np.where(kept, np.log(np.where(o, q, 1.0 - q)), 0.0).sum(-1)
            elif (kept & o).any():
                log_p = np.where((kept & o).any(-1), -np.inf, log_p)
            # the copy's length is weighed as a drawn one is, under every tilt that forbids nothing (a
            # density kept): else a copy goes on at its own pace whatever density was asked (density 3 a
            # second at boost 16: 86 % of pieces within 20 %, 100 % weighed).  A forbidden length is moved
            # instead (_allowed_class)
            dt = self._tilted(d, co, forbidding=False)
            log_p += np.log(softmax(dt[rows] / T)[np.arange(len(rows)), cls[rows]])
        take = np.zeros(len(prev_keys), bool)
        take[rows] = proposer.accept(log_p, self.rng)
        return ck, co, cls, take

    def _confine(self, kp: np.ndarray, op: np.ndarray | None, prev_keys: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """The probabilities as the processors mask them (a register, a cadence's chord)."""
        for p in self.processors:
            kp, op = p.mask(kp, op, prev_keys)
        return kp, op

    def _draw(self, kp: np.ndarray, op: np.ndarray | None, prev_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys and onsets from their probabilities (by threshold or by sampling)."""
        c, rng = self.cfg, self.rng
        if self.joint:
            return self._draw_joint(kp, op, prev_keys)
        if c.threshold is not None:
            keys = kp >= c.threshold
        else:
            allowed = allowed_new_keys(kp, prev_keys, c)
            p = kp
            if c.key_top_k or c.key_local_p or c.key_min_p:
                # keep the expected number of new keys: the mass of the silent keys that may not
                # start moves to those that may (88 independent draws at ~1.5 % each would
                # otherwise lose the ~1.3 new keys a state adds on average)
                silent = np.where(prev_keys, 0.0, kp)
                mass = silent.sum(-1, keepdims=True)
                kept = np.maximum(np.where(allowed, kp, 0.0).sum(-1, keepdims=True), 1e-9)
                p = np.where(prev_keys, kp, np.where(allowed, np.minimum(kp * (mass / kept), 1.0), 0.0))
            keys = rng.random(p.shape, dtype=np.float32) < p
        keys = bound_polyphony(keys, kp, c.min_keys, c.max_keys)
        if op is not None:
            struck = op >= 0.5 if c.threshold is not None else rng.random(op.shape, dtype=np.float32) < op
            onsets = keys & (struck | ~prev_keys)  # a key that starts sounding is struck
        else:
            onsets = keys & ~prev_keys
        return keys, onsets

    def _draw_joint(self, kp: np.ndarray, op: np.ndarray | None, prev_keys: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """joint_keys: keys drawn low to high, each from its conditional given those below, exactly,
        in (keys on + 1) evaluations.  Given the keys decided so far (every key below j), each key
        from j up has its conditional assuming no further key turns on; one uniform each; the
        first key that turns on is an exact draw (the keys before it stay off, as their
        conditionals said), and the conditionals are evaluated again from the key above it.
        ``kp``/``op``: the probabilities given nothing below.  The key-truncation rules
        (:func:`allowed_new_keys`) filter the silent keys at each evaluation (no mass is moved:
        the conditionals already answer how many keys a state holds)."""
        c, rng, T = self.cfg, self.rng, self.cfg.temperature
        B = len(prev_keys)
        keys = np.zeros((B, N_KEYS), bool)
        onsets = np.zeros((B, N_KEYS), bool)
        j = np.zeros(B, np.int64)  # the lowest key not yet decided
        rows = np.arange(B)
        p, q = kp, op
        while len(rows):
            self.evaluations += 1
            cand = np.arange(N_KEYS)[None, :] >= j[rows, None]
            silent = cand & ~prev_keys[rows]
            if c.threshold is None and (c.key_top_k or c.key_min_p or c.key_local_p):
                p = np.where(silent & ~allowed_new_keys(p, prev_keys[rows], c, cand), 0.0, p)
            fire = cand & ((p >= c.threshold) if c.threshold is not None else
                           (rng.random(p.shape, dtype=np.float32) < p))
            has = fire.any(-1)
            r, k = rows[has], fire.argmax(-1)[has]
            keys[r, k] = True
            if q is not None:
                qk = q[has, k]
                struck = qk >= 0.5 if c.threshold is not None else rng.random(len(k), dtype=np.float32) < qk
            else:
                struck = np.zeros(len(k), bool)
            onsets[r, k] = struck | ~prev_keys[r, k]  # a key that starts sounding is struck
            j[r] = k + 1
            rows = r[(keys[r].sum(-1) < c.max_keys) & (j[r] < N_KEYS)]
            if len(rows):
                kl, ol = self.stepper.conditionals(keys[rows].astype(np.float32), onsets[rows].astype(np.float32),
                                                   rows)
                p = sigmoid(kl if T == 1.0 else kl / T)
                q = None if ol is None else sigmoid(ol if T == 1.0 else ol / T)
                p, q = self._confine(p, q, prev_keys[rows])
        if (keys.sum(-1) < c.min_keys).any():  # too few: add the likeliest keys given nothing below (approximate)
            add = bound_polyphony(keys, kp, c.min_keys, c.max_keys) & ~keys
            keys |= add
            onsets |= add & ~prev_keys
        return keys, onsets

    def loudness(self, logits: np.ndarray, struck: np.ndarray) -> np.ndarray:
        """Velocities (B,) uint8 of the new states from velocity-class ``logits`` (B, bins): drawn at
        the temperature (with ``threshold``: the likeliest class); 0 where nothing is ``struck``."""
        if self.cfg.threshold is not None:
            cls = logits.argmax(-1)
        else:
            cdf = softmax(logits.astype(np.float64) / self.cfg.temperature).cumsum(-1)
            cls = np.minimum((cdf < self.rng.random((len(cdf), 1)) * cdf[:, -1:]).sum(-1), cdf.shape[-1] - 1)
        return np.where(struck, class_velocity(cls), 0).astype(np.uint8)

    def _likeliest_change(self, keys: np.ndarray, onsets: np.ndarray, kp: np.ndarray, op: np.ndarray | None,
                          rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In ``rows`` (whose ``keys`` are the previous keys, nothing struck), make
        the likeliest single change the polyphony bounds allow: release a
        sounding key (1 - p), strike one again (its onset p) or start a silent one (p)."""
        c = self.cfg
        count = keys.sum(-1, keepdims=True)
        release = np.where(keys & (count > c.min_keys), 1.0 - kp, -1.0)
        restrike = np.where(keys, op, -1.0) if op is not None else np.full_like(kp, -1.0)
        start = np.where(~keys & (count < c.max_keys), kp, -1.0)
        scores = np.stack([release, restrike, start], 1).reshape(len(keys), -1)  # over (kind, key)
        base_keys, base_onsets = keys, onsets
        keys, onsets = keys.copy(), onsets.copy()
        for b in np.flatnonzero(rows):
            _change(keys[b], onsets[b], int(scores[b].argmax()))
        bad = self._rejected(keys, onsets) & rows
        for b in np.flatnonzero(bad):  # forbidden (a loop going on): the likeliest change that is not
            for choice in np.argsort(-scores[b], kind="stable")[1:]:
                if scores[b, choice] < 0:
                    break
                k, o = keys.copy(), onsets.copy()
                k[b], o[b] = base_keys[b], base_onsets[b]
                _change(k[b], o[b], int(choice))
                if not self._rejected(k, o)[b]:
                    keys[b], onsets[b] = k[b], o[b]
                    break
        return keys, onsets


def _change(keys: np.ndarray, onsets: np.ndarray, choice: int) -> None:
    """Make change ``choice`` (kind * 88 + key: release, strike again, start) to one state, in place."""
    kind, key = divmod(choice, N_KEYS)
    if kind == 0:
        keys[key] = False
    else:  # struck again, or started (and so struck)
        keys[key] = onsets[key] = True


class DensitySteer:
    """Keeps a requested density (struck notes per beat) by tilting the draw of each state's length.

    The density input of a model with controls barely moves it (docs/controls.md: from 0.5 to 16
    notes a beat asked of every state, the expected length of a state moved by 8 %): the passage
    it has heard already tells it how busy the music is, so it learnt to read that instead.  So
    the request is also kept at the draw of each state's length, once its keys are drawn: the
    length that would bring the notes so far back onto the requested density is ``wanted``; the
    model's distribution over lengths is tilted exponentially (``p_c x length_c ** t``: of all the
    distributions with a given mean, the one closest to the model's) until its mean length is
    ``wanted`` (``PULL`` 1; less moves it only part of the way, in log length: measured on the
    valid pieces' seeds, 0.5 left sparse requests at 1.4 times the density asked).  Nothing
    drawn is removed afterwards: the model still chooses every key and every length, at the pace
    it is told."""

    PULL = 1.0  # how far, in log length, each state's mean length moves from the model's towards the wanted one
    MAX_TILT = 8.0

    def __init__(self, notes_per_beat: float, batch: int, classes: np.ndarray) -> None:
        self.target = notes_per_beat
        self.log_length = np.log(np.asarray(classes, np.float64))
        self.length = np.asarray(classes, np.float64)
        self.notes = np.zeros(batch)
        self.beats = np.zeros(batch)

    def tilt(self, logits: np.ndarray, struck: np.ndarray) -> np.ndarray:
        """Duration ``logits`` (B, V) of states striking ``struck`` (B,) notes -> the tilted logits."""
        p = softmax(logits)
        mean = p @ self.length
        wanted = np.clip((self.notes + struck) / self.target - self.beats, self.length[0], self.length[-1])
        goal = np.exp((1 - self.PULL) * np.log(mean) + self.PULL * np.log(wanted))
        lo, hi = np.full(len(p), -self.MAX_TILT), np.full(len(p), self.MAX_TILT)
        for _ in range(24):  # bisection: the tilted mean rises with t
            t = (lo + hi) / 2
            q = softmax(logits + t[:, None] * self.log_length[None, :])
            above = q @ self.length > goal
            hi, lo = np.where(above, t, hi), np.where(above, lo, t)
        return logits + ((lo + hi) / 2)[:, None] * self.log_length[None, :]

    def update(self, onsets: np.ndarray, beats: np.ndarray) -> None:
        """After states with ``onsets`` (B, 88) lasting ``beats`` (B,)."""
        self.notes += onsets.sum(-1)
        self.beats += beats


def unchanged(keys: np.ndarray, onsets: np.ndarray, prev_keys: np.ndarray) -> np.ndarray:
    """(B,) True where a drawn state repeats the previous one: same keys, nothing struck."""
    return (keys == prev_keys).all(-1) & ~onsets.any(-1)
