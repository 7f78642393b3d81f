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
  per-key MLP as gathers (each key's neighbourhood and its values of the
  input blocks) and products, with its pitch-embedding term (the same every
  step) computed once.  The seed is still read by PyTorch's LSTM in
  one call.
- :class:`ModuleStepper` calls the model's own ``forward`` one step at a time:
  for GPU models and the exported formats (int8, ONNX, TorchScript).

:class:`InputBuilder` builds the next input row from the sampled state, each
input block tracking its own columns (:meth:`chopinbot.dataset.inputs.InputBlock.tracker`).
Tests check both against the reference path.
"""

from __future__ import annotations

import numpy as np
import torch

from chopinbot.constants import N_KEYS
from chopinbot.dataset.inputs import NewStates
from chopinbot.errors import ConfigError
from chopinbot.model.network import NEIGHBOURS, PITCH_EMB, ChopinLSTM, neighbourhood_index

# (key logits (B, 88), onset logits (B, 88) or None, duration outputs (B, n)), float32
StepOutputs = tuple[np.ndarray, "np.ndarray | None", np.ndarray]


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # never overflows, unlike 1 / (1 + exp(-x))


ENGINES = ("auto", "numpy", "torch")


def stepper_for(model, engine: str = "auto", batch: int = 1) -> NumpyStepper | ModuleStepper:
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
        self.dense = [(_np(layer.weight.t()), _np(layer.bias)) for layer in m.dense
                      if isinstance(layer, torch.nn.Linear)]
        heads = [m.key_out] + ([m.onset_out] if m.onset_out is not None else []) + [m.dur_out]
        weights = [h.weight for h in heads]
        biases = [h.bias for h in heads]
        sizes = [w.shape[0] for w in weights]
        layout = c.layout
        self.duration_terms = layout.duration_terms()
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
            # each key's neighbourhood in [keys | onsets | 0], and its values of the input blocks in the row
            self.neighbourhood = neighbourhood_index(2 * N_KEYS)
            self.key_index = layout.key_index()
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
            cols = [x[:, a:b] if s is None else x[:, a:b] * x[:, s : s + 1] for a, b, s in self.duration_terms]
            dur = dur + np.concatenate(cols, 1) @ self.repeat_dur_w
        kon = x[:, : 2 * N_KEYS]
        if self.skip_w is not None:
            s = kon @ self.skip_w
            keys = keys + s[:, :N_KEYS]
            if onsets is not None:
                onsets = onsets + s[:, N_KEYS:]
        if self.config.note_head:
            padded = np.zeros((x.shape[0], 2 * N_KEYS + 1), np.float32)
            padded[:, : 2 * N_KEYS] = kon
            local = np.take(padded, self.neighbourhood, axis=1)  # (B, 88, 2w): each key's neighbourhood
            hid = local @ self.local_w
            hid += np.take(x, self.key_index, axis=1) @ self.key_w  # (B, 88, per-key inputs)
            hid += self.emb_term
            hid += parts[-1][:, None, :]
            adj = np.maximum(hid, 0.0) @ self.out_w + self.out_b  # (B, 88, 2)
            keys = keys + adj[..., 0]
            if onsets is not None:
                onsets = onsets + adj[..., 1]
        return keys, onsets, dur


class InputBuilder:
    """The input row of each new state while composing: every input block of
    the model tracks its own columns (key ages, recency, repeats, the position
    in the metre) across steps."""

    def __init__(self, model, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 start_beat: float = 0.0) -> None:
        """Start after seed histories ``keys``/``onsets`` (B, S, 88) and ``beats`` (B, S)
        that begin at ``start_beat``; ``seed_inputs`` (B, S, input_dim) are their rows."""
        c = model.config
        self.layout = c.layout
        self.class_beats = np.asarray(c.duration_classes).astype(np.float32).astype(np.float64)  # as stored
        self.trackers = [b.tracker(keys, onsets, beats, start_beat) for b in self.layout.blocks]
        self.seed_inputs = self.layout.rows([t.seed for t in self.trackers])

    def __call__(self, keys: np.ndarray, onsets: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """(B, input_dim) float32 for new states ``keys``/``onsets`` (B, 88, bool) of rhythmic class ``cls`` (B,)."""
        new = NewStates(keys, onsets, cls, self.class_beats[cls])
        return self.layout.rows([t.step(new) for t in self.trackers])
