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
  one call.  A Transformer backbone (:mod:`chopinbot.model.transformer`) steps in
  NumPy too (:class:`NumpyTransformer`: one query per state against its key/value buffers).
- :class:`ModuleStepper` calls the model's own ``forward`` one step at a time:
  for GPU models and the exported formats (int8, ONNX, TorchScript).

For a ``joint_keys`` model both steppers also give :meth:`NumpyStepper.conditionals`:
the key and onset logits of the state being drawn given its keys decided so far
(for key k, those below k), without moving on; the keys and onsets a step
returns are those given nothing below.  A ``loudness`` model's velocity-class
logits after each step are the stepper's ``loudness``.

:class:`InputBuilder` builds the next input row from the sampled state, each
input block tracking its own columns (:meth:`chopinbot.dataset.inputs.InputBlock.tracker`).
Tests check both against the reference path.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.special import erf

from chopinbot.constants import N_KEYS
from chopinbot.dataset.conditioning import ControlBlock
from chopinbot.dataset.inputs import NewStates
from chopinbot.dataset.layout import InputLayout
from chopinbot.errors import ConfigError
from chopinbot.model.network import JOINT_INPUTS, NEIGHBOURS, PITCH_EMB, ChopinLSTM, neighbourhood_index
from chopinbot.model.transformer import CausalTransformer
from chopinbot.music.controls import Controls

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
    if model.config.joint_keys and not isinstance(model, torch.nn.Module):
        raise ConfigError("a joint_keys model draws each key given those below it through its note head, which an "
                          "ONNX or TorchScript export does not expose: generate with its PyTorch checkpoint")
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
        self.joint = model.config.joint_keys
        self.loudness: np.ndarray | None = None  # (B, bins): velocity-class logits after the last step
        self._last = None  # joint_keys: the last input row (B, 1, D) and the LSTM state before it

    def _outputs(self, out) -> StepOutputs:
        self.loudness = _np(out.loudness[:, -1]) if out.loudness is not None else None
        onsets = _np(out.onset_logits[:, -1]) if out.onset_logits is not None else None
        return _np(out.key_logits[:, -1]), onsets, _np(out.duration[:, -1])

    def _run(self, x: np.ndarray, state) -> tuple[StepOutputs, tuple]:
        """The outputs after the last row of ``x`` (B, T, D) read from ``state``, and the state after it."""
        xt = torch.from_numpy(x).to(self.device)
        if self.joint:  # keep the state before the last row: conditionals() read that row again
            if xt.shape[1] > 1:
                state = self.model(xt[:, :-1], state)[1]
            xt = xt[:, -1:]
            self._last = (xt, state)
        out, hc = self.model(xt, state)
        return self._outputs(out), hc

    def start(self, x_seed: np.ndarray) -> StepOutputs:
        """Read the seed inputs (B, S, D); the outputs after its last state."""
        outs, self.hc = self._run(x_seed, None)
        return outs

    def step(self, x: np.ndarray) -> StepOutputs:
        outs, self.hc = self._run(x[:, None], self.hc)
        return outs

    def rerun(self, window: np.ndarray) -> StepOutputs:
        """The original's way: read the whole window (B, W, D) from a zero state."""
        return self._run(window, None)[0]

    def conditionals(self, keys: np.ndarray, onsets: np.ndarray, rows: np.ndarray | slice = slice(None)
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """As :meth:`NumpyStepper.conditionals`, by the model's own forward on the last row again."""
        x, state = self._last
        idx = torch.as_tensor(rows, device=self.device) if isinstance(rows, np.ndarray) else rows
        if state is not None:
            state = tuple(s[:, idx] for s in state)
        given = tuple(torch.from_numpy(np.ascontiguousarray(a, np.float32)[:, None]).to(self.device)
                      for a in (keys, onsets))
        out, _ = self.model(x[idx], state, given)
        return _np(out.key_logits[:, -1]), _np(out.onset_logits[:, -1]) if out.onset_logits is not None else None


class NumpyTransformer:
    """One state at a time through a :class:`~chopinbot.model.transformer.CausalTransformer`, in NumPy:
    the keys and values of the last ``span - 1`` states per layer in a buffer twice that long (moved
    back once full: constant cost per state however long the piece), one query per step.  PyTorch
    spent 0.49 ms per state on this (3 blocks of width 128, measured here), mostly calling its ops."""

    def __init__(self, t: CausalTransformer) -> None:
        def linear(m: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            return _np(m.weight.t()), _np(m.bias)

        self.span, self.slopes = t.span, _np(t.slopes).astype(np.float32)
        self.inp = linear(t.inp)
        self.blocks = [dict(ln1=(_np(b.ln1.weight), _np(b.ln1.bias)), ln2=(_np(b.ln2.weight), _np(b.ln2.bias)),
                            qkv=linear(b.qkv), proj=linear(b.proj), up=linear(b.mlp[0]), down=linear(b.mlp[2]))
                       for b in t.blocks]
        self.norm = (_np(t.norm.weight), _np(t.norm.bias))
        self.heads = t.blocks[0].heads
        # keys stored transposed, (layers, B, heads, head width, states): a query multiplies a plain slice
        self.kt = self.v = np.zeros(0, np.float32)
        self.n = 0  # states in the buffers

    def load(self, cache) -> None:
        """Start from the PyTorch forward's cache (keys, values: (layers, B, heads, T, head width))."""
        k, v = _np(cache[0]), _np(cache[1])
        L, B, H, T, dh = k.shape
        self.kt = np.zeros((L, B, H, dh, 2 * self.span), np.float32)
        self.v = np.zeros((L, B, H, 2 * self.span, dh), np.float32)
        self.kt[..., :T], self.v[:, :, :, :T] = k.transpose(0, 1, 2, 4, 3), v
        self.n = T

    @staticmethod
    def _ln(h: np.ndarray, wb: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        scale = np.float32(1.0 / h.shape[-1])  # sums, not np.mean: its Python wrapper cost more than the sums
        d = h - h.sum(-1, keepdims=True) * scale
        return d / np.sqrt((d * d).sum(-1, keepdims=True) * scale + np.float32(1e-5)) * wb[0] + wb[1]

    def step(self, x: np.ndarray) -> np.ndarray:
        """``x`` (B, inputs): the top features (B, width) after it; the buffers move on."""
        if self.n == self.v.shape[3]:  # full: keep the last span - 1 states at the front
            keep = self.span - 1
            self.kt[..., :keep] = self.kt[..., self.n - keep : self.n]
            self.v[:, :, :, :keep] = self.v[:, :, :, self.n - keep : self.n]
            self.n = keep
        n, lo = self.n + 1, max(0, self.n + 1 - self.span)
        bias = -self.slopes[:, None] * np.arange(n - 1 - lo, -1, -1, dtype=np.float32)[None, :]  # (heads, seen)
        h = x @ self.inp[0] + self.inp[1]
        B, d = h.shape
        dh = d // self.heads
        for i, b in enumerate(self.blocks):
            qkv = self._ln(h, b["ln1"]) @ b["qkv"][0] + b["qkv"][1]
            q, k, v = qkv.reshape(B, 3, self.heads, dh).transpose(1, 0, 2, 3)
            self.kt[i, ..., self.n], self.v[i, :, :, self.n] = k, v
            scores = (q[:, :, None] @ self.kt[i, ..., lo:n])[:, :, 0] * np.float32(dh ** -0.5) + bias  # B, heads, seen
            V = self.v[i, :, :, lo:n]  # (B, heads, seen, dh)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            att = (w[:, :, None] @ V).reshape(B, d)  # (B, heads, 1, dh) -> (B, width)
            h = h + att @ b["proj"][0] + b["proj"][1]
            u = self._ln(h, b["ln2"]) @ b["up"][0] + b["up"][1]
            u = 0.5 * u * (1.0 + erf(u / np.float32(np.sqrt(2.0))))  # GELU, exact as nn.GELU()
            h = h + u @ b["down"][0] + b["down"][1]
        self.n = n
        return self._ln(h, self.norm)


def _lstm_layer(lstm: torch.nn.LSTM, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer ``i``'s input and recurrent weights (transposed) and its two biases summed."""
    w_ih, w_hh = getattr(lstm, f"weight_ih_l{i}"), getattr(lstm, f"weight_hh_l{i}")
    bias = getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}")
    return _np(w_ih.t()), _np(w_hh.t()), _np(bias)


class NumpyStepper:
    """One-state inference for a float :class:`ChopinLSTM` on CPU, in NumPy."""

    @staticmethod
    def supports(model) -> bool:
        if type(model) is not ChopinLSTM or not isinstance(model.backbone, (torch.nn.LSTM, CausalTransformer)):
            return False  # exports and int8 models keep their own kernels
        linears = [model.key_out, model.dur_out] + [m for m in model.dense if not isinstance(m, (torch.nn.ReLU,
                                                                                                torch.nn.Dropout))]
        return (all(type(m) is torch.nn.Linear for m in linears)
                and all(p.device.type == "cpu" for p in model.parameters()))

    def __init__(self, model: ChopinLSTM) -> None:
        m, c = model, model.config
        self.model, self.config = m, c
        # the backbone: the LSTM's layers (below, in step) or the Transformer's blocks; the heads are shared
        self.transformer = NumpyTransformer(m.transformer) if c.model_type == "transformer" else None
        self.lstm = [] if self.transformer is not None else [_lstm_layer(m.lstm, i) for i in range(c.layers)]
        self.hidden = c.hidden
        self.lstm_in = c.lstm_input_dim
        self.norm = (_np(m.norm.weight), _np(m.norm.bias), m.norm.eps) if c.layer_norm else None
        self.dense = [(_np(layer.weight.t()), _np(layer.bias)) for layer in m.dense
                      if isinstance(layer, torch.nn.Linear)]
        heads = {"keys": m.key_out, "onsets": m.onset_out, "duration": m.dur_out, "loudness": m.loud_out}
        heads = {name: h for name, h in heads.items() if h is not None}
        weights = [h.weight for h in heads.values()]
        biases = [h.bias for h in heads.values()]
        sizes = [w.shape[0] for w in weights]
        names = list(heads)
        layout = c.layout
        self.duration_terms = layout.duration_terms()
        if c.note_head:
            # (nh, inputs): [neighbourhood (2 x w) | per-key inputs (ModelConfig.per_key_inputs) | pitch
            # embedding | context | joint_keys: the new state's keys below (joint_features_np)]
            w1 = m.note_mlp[0].weight
            w = 2 * NEIGHBOURS + 1
            self.local_w = _np(w1[:, : 2 * w].t())  # (2w, nh)
            self.key_w = _np(w1[:, 2 * w : 2 * w + c.per_key_inputs].t())  # (per-key inputs, nh)
            e0 = 2 * w + c.per_key_inputs
            c0 = e0 + PITCH_EMB
            emb_w, ctx_w = w1[:, e0:c0], w1[:, c0 : c0 + c.note_context]
            self.emb_term = _np(m.pitch_emb @ emb_w.t() + m.note_mlp[0].bias)  # (88, nh)
            weights.append(ctx_w @ m.note_ctx.weight)  # the context's term of the first layer, per state
            biases.append(ctx_w @ m.note_ctx.bias)
            sizes.append(ctx_w.shape[0])
            names.append("context")
            if c.joint_keys:
                self.joint_w = _np(w1[:, c0 + c.note_context :].t())  # (JOINT_INPUTS, nh)
                self.joint_none = joint_features_np(np.zeros((1, N_KEYS), np.float32),
                                                    np.zeros((1, N_KEYS), np.float32)) @ self.joint_w
            self.out_w, self.out_b = _np(m.note_mlp[2].weight.t()), _np(m.note_mlp[2].bias)
            # each key's neighbourhood in [keys | onsets | 0], and its values of the input blocks in the row
            self.neighbourhood = neighbourhood_index(2 * N_KEYS)
            self.key_index = layout.key_index()
        self.head_w = _np(torch.cat(weights, 0).t())
        self.head_b = _np(torch.cat(biases, 0))
        ends = np.cumsum(sizes)
        self.parts = {n: slice(a, b) for n, a, b in zip(names, [0, *ends[:-1]], ends)}
        self.skip_w = _np(m.skip.weight.t()) if m.skip is not None else None
        self.repeat_dur_w = _np(m.repeat_dur.weight.t()) if m.repeat_dur is not None else None
        self.state: list[list[np.ndarray]] = []
        self.loudness: np.ndarray | None = None  # (B, bins): velocity-class logits after the last step
        self._pending = None  # joint_keys: key/onset logits before the note head, and its hidden layer

    def _backbone(self, x: np.ndarray, state=None):
        with torch.inference_mode():
            return self.model.backbone(torch.from_numpy(np.ascontiguousarray(x[..., : self.lstm_in])), state)

    def start(self, x_seed: np.ndarray) -> StepOutputs:
        h, state = self._backbone(x_seed)
        if self.transformer is not None:
            self.transformer.load(state)
        else:
            self.state = [[_np(state[0][i]), _np(state[1][i])] for i in range(state[0].shape[0])]
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
        if self.transformer is not None:
            return self.heads(self.transformer.step(x[:, : self.lstm_in]), x)
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
        h, _ = self._backbone(window)
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
        parts = {n: out[:, p] for n, p in self.parts.items()}
        keys, onsets, dur = parts["keys"], parts.get("onsets"), parts["duration"]
        self.loudness = parts.get("loudness")
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
            hid += parts["context"][:, None, :]
            if self.config.joint_keys:  # keep what the keys below add to; the outputs given nothing below
                self._pending = (keys, onsets, hid)
                return *self._note_outputs(keys, onsets, hid + self.joint_none), dur
            keys, onsets = self._note_outputs(keys, onsets, hid)
        return keys, onsets, dur

    def _note_outputs(self, keys: np.ndarray, onsets: np.ndarray | None, hid: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """The key and onset logits from those before the note head and its hidden layer (n, 88, nh)."""
        adj = np.maximum(hid, 0.0) @ self.out_w + self.out_b  # (n, 88, 2)
        return keys + adj[..., 0], onsets + adj[..., 1] if onsets is not None else None

    def conditionals(self, keys: np.ndarray, onsets: np.ndarray, rows: np.ndarray | slice = slice(None)
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """``joint_keys``: the key and onset logits (n, 88) of the state being drawn after the
        last step, in batch ``rows``, given its keys and onsets (n, 88) decided so far (key k
        reads only keys < k: its conditional given those below it).  The stepper does not move on."""
        kb, ob, hid = self._pending
        hid = hid[rows] + joint_features_np(keys, onsets) @ self.joint_w
        return self._note_outputs(kb[rows], ob[rows] if ob is not None else None, hid)


_WINDOW = np.arange(N_KEYS)[:, None] + np.arange(NEIGHBOURS)[None, :]  # keys k-12..k-1 in a row padded by 12
_KEY = np.arange(N_KEYS)


def joint_features_np(keys: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """:func:`chopinbot.model.network.joint_features` of (n, 88) NumPy rows: (n, 88, JOINT_INPUTS) float32.
    Written into one preallocated array: it runs once per conditional, several times a state."""
    n = keys.shape[0]
    out = np.empty((n, N_KEYS, JOINT_INPUTS), np.float32)
    pad = np.zeros((n, N_KEYS + NEIGHBOURS), np.float32)
    pad[:, NEIGHBOURS:] = keys
    out[..., :NEIGHBOURS] = pad[:, _WINDOW]  # keys k-12..k-1
    pad[:, NEIGHBOURS:] = onsets
    out[..., NEIGHBOURS : 2 * NEIGHBOURS] = pad[:, _WINDOW]
    on = keys > 0.5
    out[..., 2 * NEIGHBOURS] = (np.cumsum(keys, -1) - keys) / 8.0
    hi = np.full((n, N_KEYS), -1)
    hi[:, 1:] = np.maximum.accumulate(np.where(on, _KEY, -1), -1)[:, :-1]
    lo = np.full((n, N_KEYS), N_KEYS)
    lo[:, 1:] = np.minimum.accumulate(np.where(on, _KEY, N_KEYS), -1)[:, :-1]
    none = hi < 0
    out[..., 2 * NEIGHBOURS + 1] = np.where(none, 0.0, np.minimum(_KEY - hi, 24) / 24.0)
    out[..., 2 * NEIGHBOURS + 2] = np.where(none, 0.0, np.clip(_KEY - lo, 0, 48) / 48.0)
    out[..., 2 * NEIGHBOURS + 3] = none
    return out


class InputBuilder:
    """The input row of each new state while composing: every input block of
    the model tracks its own columns (key ages, recency, repeats, the position
    in the metre) across steps."""

    def __init__(self, model, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 start_beat: float = 0.0, velocity: np.ndarray | None = None, style: str | None = None,
                 controls: Controls | None = None) -> None:
        """Start after seed histories ``keys``/``onsets`` (B, S, 88), ``beats`` and ``velocity``
        (B, S; None: unknown) that begin at ``start_beat``, composing in ``style`` (None: the
        model's default) with ``controls`` (a model with controls; None: none steered);
        ``seed_inputs`` (B, S, input_dim) are their rows."""
        c = model.config
        blocks = tuple(replace(b, requested=controls or Controls()) if isinstance(b, ControlBlock) else b
                       for b in c.with_style(style).blocks)
        self.layout = InputLayout(blocks)
        self.class_beats = np.asarray(c.duration_classes).astype(np.float32).astype(np.float64)  # as stored
        self.trackers = [b.tracker(keys, onsets, beats, start_beat, velocity) for b in self.layout.blocks]
        self.seed_inputs = self.layout.rows([t.seed for t in self.trackers])

    def __call__(self, keys: np.ndarray, onsets: np.ndarray, cls: np.ndarray,
                 velocity: np.ndarray | None = None) -> np.ndarray:
        """(B, input_dim) float32 for new states ``keys``/``onsets`` (B, 88, bool) of rhythmic class
        ``cls`` (B,) and ``velocity`` (B,; None: unknown)."""
        new = NewStates(keys, onsets, cls, self.class_beats[cls], velocity)
        return self.layout.rows([t.step(new) for t in self.trackers])
