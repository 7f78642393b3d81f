"""The model one state at a time, for generation.

Generating is a loop of single steps at batch 1: a handful of matrix-vector
products, then sampling and building the next input.  On a laptop CPU such a
step costs what its tensor operations cost to *call* (several microseconds
each in PyTorch, one or two in NumPy) and the bytes of weights it reads, not
arithmetic; measured here, a 1,024 x 256 matrix-vector product takes 31 us in
PyTorch and 22 us in NumPy, and PyTorch's ``nn.LSTM`` spends more per step on
bookkeeping than on its products.  So:

- :class:`NumpyStepper` (the default at batch 1 on CPU for a float model) holds the
  weights as NumPy arrays, pre-transposed for row-vector products, and runs a
  step as plain NumPy: each LSTM layer's two products and its gates; the key,
  onset, duration and note-context outputs as *one* product (their weights
  stacked, the note head's context projection folded in); the note head's
  per-key MLP, which reads each key's neighbourhood via ``unfold`` in
  training, as a gather and one product, with its pitch-embedding term (the
  same every step) computed once.  The seed is still read by PyTorch's LSTM in
  one call.
- :class:`ModuleStepper` calls the model's own ``forward`` one step at a time:
  for GPU models and the exported formats (int8, ONNX, TorchScript).

:class:`InputBuilder` builds the next input row from the sampled state: the
duration and metre-position parts are rows of tables made by the very
functions that make the training inputs (:mod:`chopinbot.dataset.features`), so the
two cannot drift apart.  Tests check both against the reference path.
"""

from __future__ import annotations

import numpy as np
import torch

from chopinbot.constants import N_KEYS
from chopinbot.dataset.features import (AgeTracker, RecencyTracker, age_features, duration_features, end_positions, position_features,
                       position_period, recency_features, repeat_global_features, state_features)
from chopinbot.errors import ConfigError
from chopinbot.model.network import NEIGHBOURS, PITCH_EMB, ChopinLSTM
from chopinbot.music.repeats import ContinuationTracker, Continuations

# (key logits (B, 88), onset logits (B, 88) or None, duration outputs (B, n)), float32
StepOutputs = tuple[np.ndarray, "np.ndarray | None", np.ndarray]


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # never overflows, unlike 1 / (1 + exp(-x))


ENGINES = ("auto", "numpy", "torch")


def stepper_for(model, engine: str = "auto", batch: int = 1) -> "NumpyStepper | ModuleStepper":
    """A stepper computing ``model``'s function: ``numpy`` (fastest at batch 1
    on CPU; float models only), ``torch`` (the model's own forward: any device,
    any export) or ``auto``: numpy at batch 1 where it applies, else torch
    (from batch 2 up PyTorch's batched kernels win: measured here at batch 32,
    6,482 vs 2,249 states/s)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}")
    if engine == "torch" or (engine == "auto" and (batch > 1 or not NumpyStepper.supports(model))):
        return ModuleStepper(model)
    if not NumpyStepper.supports(model):
        raise ConfigError("the numpy engine runs float models on CPU only; use engine 'torch'")
    return NumpyStepper(model)


class ModuleStepper:
    """Steps through the model's own ``forward`` (any device, any export)."""

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(iter(model.parameters())).device if isinstance(model, torch.nn.Module) else "cpu"
        self.hc = None

    def _outputs(self, out) -> StepOutputs:
        onsets = _np(out.onset_logits[:, -1]) if out.onset_logits is not None else None
        return _np(out.key_logits[:, -1]), onsets, _np(out.duration[:, -1])

    def start(self, x_seed: np.ndarray) -> StepOutputs:
        """Read the seed inputs (B, S, D); the outputs after its last state."""
        out, self.hc = self.model(torch.from_numpy(x_seed).to(self.device))
        return self._outputs(out)

    def step(self, x: np.ndarray) -> StepOutputs:
        out, self.hc = self.model(torch.from_numpy(x[:, None]).to(self.device), self.hc)
        return self._outputs(out)

    def rerun(self, window: np.ndarray) -> StepOutputs:
        """The original's way: read the whole window (B, W, D) from a zero state."""
        out, _ = self.model(torch.from_numpy(window).to(self.device))
        return self._outputs(out)


class NumpyStepper:
    """One-state inference for a float :class:`ChopinLSTM` on CPU, in NumPy."""

    @staticmethod
    def supports(model) -> bool:
        if type(model) is not ChopinLSTM or not isinstance(model.lstm, torch.nn.LSTM):
            return False  # exports and int8 models keep their own kernels
        linears = [model.key_out, model.dur_out] + [m for m in model.dense if not isinstance(m, (torch.nn.ReLU,
                                                                                                torch.nn.Dropout))]
        return (all(type(m) is torch.nn.Linear for m in linears)
                and all(p.device.type == "cpu" for p in model.parameters()))

    def __init__(self, model: ChopinLSTM) -> None:
        m, c = model, model.config
        self.model, self.config = m, c
        lstm = m.lstm
        self.lstm = []
        for i in range(c.layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{i}"), getattr(lstm, f"weight_hh_l{i}")
            bias = getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}")
            self.lstm.append((_np(w_ih.t()), _np(w_hh.t()), _np(bias)))
        self.hidden = c.hidden
        self.lstm_in = c.lstm_input_dim
        self.norm = (_np(m.norm.weight), _np(m.norm.bias), m.norm.eps) if c.layer_norm else None
        self.dense = [(_np(layer.weight.t()), _np(layer.bias)) for layer in m.dense if isinstance(layer, torch.nn.Linear)]
        heads = [m.key_out] + ([m.onset_out] if m.onset_out is not None else []) + [m.dur_out]
        weights = [h.weight for h in heads]
        biases = [h.bias for h in heads]
        sizes = [w.shape[0] for w in weights]
        self.layout = c.layout
        if c.note_head:
            # (nh, inputs): [neighbourhood (2 x w) | per-key inputs (ModelConfig.per_key_inputs) | pitch
            # embedding | context]
            w1 = m.note_mlp[0].weight
            w = 2 * NEIGHBOURS + 1
            self.local_w = _np(w1[:, : 2 * w].t())  # (2w, nh)
            self.key_w = _np(w1[:, 2 * w : 2 * w + c.per_key_inputs].t())  # (per-key inputs, nh)
            e0 = 2 * w + c.per_key_inputs
            emb_w, ctx_w = w1[:, e0 : e0 + PITCH_EMB], w1[:, e0 + PITCH_EMB :]
            self.emb_term = _np(m.pitch_emb @ emb_w.t() + m.note_mlp[0].bias)  # (88, nh)
            weights.append(ctx_w @ m.note_ctx.weight)  # the context's term of the first layer, per state
            biases.append(ctx_w @ m.note_ctx.bias)
            sizes.append(ctx_w.shape[0])
            self.out_w, self.out_b = _np(m.note_mlp[2].weight.t()), _np(m.note_mlp[2].bias)
            # key k reads keys k-12..k+12 of the (keys, onsets) rows, each padded by 12 zeros:
            # indices into the flattened (2, 88 + 24) padded pair, in the weights' order
            width = N_KEYS + 2 * NEIGHBOURS
            self.gather = (np.arange(2)[None, :, None] * width + np.arange(N_KEYS)[:, None, None]
                           + np.arange(w)[None, None, :]).reshape(N_KEYS, 2 * w)
        self.head_w = _np(torch.cat(weights, 0).t())
        self.head_b = _np(torch.cat(biases, 0))
        ends = np.cumsum(sizes)
        self.parts = [slice(a, b) for a, b in zip([0, *ends[:-1]], ends)]
        self.skip_w = _np(m.skip.weight.t()) if m.skip is not None else None
        self.repeat_dur_w = _np(m.repeat_dur.weight.t()) if m.repeat_dur is not None else None
        self.state: list[list[np.ndarray]] = []

    def start(self, x_seed: np.ndarray) -> StepOutputs:
        h, (hh, cc) = self.model.lstm(torch.from_numpy(np.ascontiguousarray(x_seed[..., : self.lstm_in])))
        self.state = [[_np(hh[i]), _np(cc[i])] for i in range(hh.shape[0])]
        return self.heads(_np(h[:, -1]), x_seed[:, -1])

    def _cell(self, gates: np.ndarray, hc: list[np.ndarray]) -> np.ndarray:
        """LSTM gates (B, 4H) in PyTorch's order i, f, g, o -> new h; updates ``hc`` in place."""
        H = self.hidden
        sig = sigmoid(gates)  # the g quarter is wasted: one call is cheaper than three
        c = sig[:, H : 2 * H] * hc[1] + sig[:, :H] * np.tanh(gates[:, 2 * H : 3 * H])
        hc[0], hc[1] = sig[:, 3 * H :] * np.tanh(c), c
        return hc[0]

    def step(self, x: np.ndarray) -> StepOutputs:
        """``x`` (B, input_dim) float32: the outputs after it; the state moves on."""
        inp = x[:, : self.lstm_in]
        for (w_ih, w_hh, b), hc in zip(self.lstm, self.state):
            gates = inp @ w_ih
            gates += hc[0] @ w_hh
            gates += b
            inp = self._cell(gates, hc)
        return self.heads(inp, x)

    def rerun(self, window: np.ndarray) -> StepOutputs:
        """The original's way: read the whole window (B, W, D) from a zero state.
        PyTorch's LSTM does this faster than a loop of NumPy steps (measured
        here at a 16-state window: 227 vs 139 states/s), so it is used."""
        h, _ = self.model.lstm(torch.from_numpy(np.ascontiguousarray(window[..., : self.lstm_in])))
        return self.heads(_np(h[:, -1]), window[:, -1])

    def heads(self, h: np.ndarray, x: np.ndarray) -> StepOutputs:
        """The outputs from the top LSTM layer's ``h`` (B, hidden) and the input ``x``."""
        if self.norm is not None:
            w, b, eps = self.norm
            mu = h.mean(-1, keepdims=True)
            h = (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b
        for w, b in self.dense:
            h = np.maximum(h @ w + b, 0.0)
        out = h @ self.head_w
        out += self.head_b
        parts = [out[:, p] for p in self.parts]
        keys = parts[0]
        onsets = parts[1] if self.config.onset_head else None
        dur = parts[2 if self.config.onset_head else 1]
        if self.repeat_dur_w is not None:
            cols = []
            for i in range(self.layout.repeats):
                g = x[:, self.layout.repeat_global(i)]
                onehot = g[:, : self.layout.n_classes]
                cols += [onehot, onehot * g[:, -1:]]
            dur = dur + np.concatenate(cols, 1) @ self.repeat_dur_w
        kon = x[:, : 2 * N_KEYS]
        if self.skip_w is not None:
            s = kon @ self.skip_w
            keys = keys + s[:, :N_KEYS]
            if onsets is not None:
                onsets = onsets + s[:, N_KEYS:]
        if self.config.note_head:
            B = x.shape[0]
            padded = np.zeros((B, 2, N_KEYS + 2 * NEIGHBOURS), np.float32)
            padded[:, :, NEIGHBOURS : NEIGHBOURS + N_KEYS] = kon.reshape(B, 2, N_KEYS)
            local = np.take(padded.reshape(B, -1), self.gather, axis=1)  # (B, 88, 2w): each key's neighbourhood
            hid = local @ self.local_w
            hid += self._key_features(x) @ self.key_w
            hid += self.emb_term
            hid += parts[-1][:, None, :]
            adj = np.maximum(hid, 0.0) @ self.out_w + self.out_b  # (B, 88, 2)
            keys = keys + adj[..., 0]
            if onsets is not None:
                onsets = onsets + adj[..., 1]
        return keys, onsets, dur

    def _key_features(self, x: np.ndarray) -> np.ndarray:
        """(B, 88, per-key inputs), as :meth:`ChopinLSTM.key_features`."""
        lay = self.layout
        cols = [x[:, 2 * N_KEYS : 3 * N_KEYS]]  # age
        if self.config.key_recency:
            cols += [x[:, lay.recency_block][:, :N_KEYS], x[:, lay.recency_block][:, N_KEYS:]]
        for i in range(lay.repeats):  # the continuation's key and onset; the match length, the same for every key
            b = x[:, lay.repeat_keys(i)]
            cols += [b[:, :N_KEYS], b[:, N_KEYS:],
                     np.broadcast_to(x[:, lay.repeat_global(i).stop - 1, None], (x.shape[0], N_KEYS))]
        return np.stack(cols, -1)


class InputBuilder:
    """The input row of each new state, tracking key ages, recency, repeats and
    the position in the metre (on the model's grid) across steps."""

    def __init__(self, model, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 start_beat: float = 0.0) -> None:
        """Start after seed histories ``keys``/``onsets`` (B, S, 88) and ``beats`` (B, S)
        that begin at ``start_beat``; ``seed_inputs`` (B, S, input_dim) are their rows."""
        c = model.config
        grid = c.grid_per_beat
        self.vocab = c.vocab
        values = np.asarray(c.duration_classes)
        self.dur_table = duration_features(values, c.vocab)
        self.period = position_period(grid)
        self.pos_table = position_features(np.arange(self.period) / grid)
        self.class_units = np.round(values * grid).astype(np.int64)
        self.class_beats = values.astype(np.float32).astype(np.float64)  # as stored in the dataset
        self.ages = AgeTracker(keys, onsets, beats)
        self.recency = RecencyTracker(keys, onsets, beats) if c.key_recency else None
        self.repeats = ContinuationTracker(keys, onsets, beats, grid, c.repeat_kinds) if c.repeat_kinds else None
        self._repeat_rows: dict = {}  # (beats, match length) -> the repeat's global columns
        end = np.round((start_beat + np.asarray(beats, np.float64).sum(-1)) * grid)  # (B,) grid units
        self.pos = end.astype(np.int64).reshape(-1) % self.period
        self.seed_inputs = np.stack([
            state_features(keys[i], onsets[i], beats[i], c.vocab, end_positions(beats[i], start_beat),
                           self.ages.history_ages[i],
                           self.recency.history[i] if self.recency is not None else None,
                           [Continuations(*(f[i] for f in h)) for h in self.repeats.history] if self.repeats else [])
            for i in range(keys.shape[0])])

    def __call__(self, keys: np.ndarray, onsets: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """(B, input_dim) float32 for new states ``keys``/``onsets`` (B, 88, bool) of rhythmic class ``cls`` (B,)."""
        beats = self.class_beats[cls]
        ages = self.ages.step(keys, onsets, beats)
        self.pos = (self.pos + self.class_units[cls]) % self.period
        parts = [keys, onsets, age_features(ages), self.dur_table[cls], self.pos_table[self.pos]]
        reps = self.repeats.step(keys, onsets, beats) if self.repeats is not None else []
        parts += [self._repeat_global(r) for r in reps]  # in InputLayout's order
        if self.recency is not None:
            parts.append(recency_features(self.recency.step(keys, onsets, beats)))
        for r in reps:
            found = (r.length > 0)[:, None]
            parts += [r.keys & found, r.onsets & found]
        return np.concatenate(parts, axis=1, dtype=np.float32)

    def _repeat_global(self, rep: Continuations) -> np.ndarray:
        """:func:`~chopinbot.dataset.features.repeat_global_features`, looked up: a piece
        has few distinct (rhythmic value, match length) pairs, and a step is cheaper without the log."""
        rows = []
        for beats, length in zip(rep.beats.tolist(), rep.length.tolist()):
            key = (beats, length) if length else 0
            row = self._repeat_rows.get(key)
            if row is None:
                row = self._repeat_rows[key] = repeat_global_features(
                    Continuations(None, None, np.array([beats]), np.array([length])), self.vocab)[0]
            rows.append(row)
        return np.stack(rows)
