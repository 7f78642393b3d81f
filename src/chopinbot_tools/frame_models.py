"""Frame-level models for the Piano-midi.de benchmark (88-key 0/1 frames).

Every model predicts frame ``x_t`` from the earlier frames. It is split in two
parts so that the exact likelihood, greedy prediction and carried state share
one code path:

* ``encode(prev, state, rep) -> (ctx, state)``: the time axis. ``prev[:, t]`` is
  the frame *before* ``x[:, t]`` (all zeros before a piece starts); the context
  depends only on earlier frames, and ``state`` carries the recurrence from one
  window of a piece to the next. ``rep`` is the repeats input
  (:mod:`chopinbot_tools.frame_repeats`, also computed from earlier frames
  only) for the models configured with ``repeats``, else None.
* ``logits(ctx, x)``: log-odds that each key of ``x[:, t]`` sounds, given
  ``ctx`` and -- for the models with dependencies inside a frame -- the true
  states of the *lower* keys of the same frame (teacher forcing). The frame's
  log-likelihood is then exactly ``-BCE(logits, x).sum(-1)`` by the chain rule.
* ``greedy(ctx, threshold)``: a 0/1 frame chosen key by key, low to high, each
  key sounding if its probability given the keys already chosen reaches
  ``threshold``. At 0.5 each key takes its more probable state (for the
  independent model that is the exact most probable frame; otherwise a greedy
  approximation of it).

Models:

* ``lstm``: an LSTM over frames with 88 independent Bernoulli outputs.
* ``lstm-nade``: the same LSTM whose hidden state sets the biases of a NADE
  over the 88 keys (Boulanger-Lewandowski et al. 2012's RNN-NADE with an LSTM).
* ``biaxial``: the bi-axial LSTM of Johnson (2017): a time-axis LSTM per key,
  weights tied across keys, fed with pitch-relative features of the previous
  frame; then a note-axis LSTM across the keys of each frame, low to high.
  With ``repeats`` it also reads, per key, what followed the last exact and
  transposed occurrence of the passage just heard.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chopinbot.errors import ConfigError
from chopinbot_tools.frame_repeats import REPEAT_KINDS, REPEAT_WIDTH

N_KEYS = 88
MODEL_TYPES = ("lstm", "lstm-nade", "biaxial")


@dataclass
class FrameModelConfig:
    model_type: str = "lstm"
    # lstm / lstm-nade: the frame LSTM
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.3
    # lstm-nade: NADE hidden units
    nade_hidden: int = 128
    # biaxial
    time_hidden: int = 64
    time_layers: int = 2
    note_hidden: int = 64
    note_layers: int = 2
    vicinity: int = 12  # previous-frame keys within +-vicinity semitones feed each key's time LSTM
    note_window: int = 12  # states of this many keys just below, same frame, feed the note LSTM directly
    global_hidden: int = 0  # > 0: add a frame LSTM of this size whose state reaches every key
    global_per_key: int = 16  # its per-key projection size
    repeats: bool = False  # biaxial: read the repeats input (frame_repeats)
    repeat_vicinity: int = 6  # continuation keys within +-this many semitones feed each key's time LSTM

    def validate(self) -> FrameModelConfig:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"unknown model type {self.model_type!r} (choose from {', '.join(MODEL_TYPES)})")
        for name in ("hidden", "layers", "nade_hidden", "time_hidden", "time_layers", "note_hidden", "note_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.global_hidden < 0 or self.global_per_key < 1:
            raise ConfigError("global_hidden must be >= 0 and global_per_key >= 1")
        if not all(0 <= v <= 87 for v in (self.vicinity, self.note_window, self.repeat_vicinity)):
            raise ConfigError("vicinity, note_window and repeat_vicinity must be between 0 and 87")
        if self.repeats and self.model_type != "biaxial":
            raise ConfigError("the repeats input is built into the biaxial model only")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def used_settings(self) -> dict:
        """Only the settings the chosen model type reads (for reports)."""
        names = {"lstm": ("hidden", "layers"), "lstm-nade": ("hidden", "layers", "nade_hidden"),
                 "biaxial": ("time_hidden", "time_layers", "note_hidden", "note_layers", "vicinity", "note_window",
                             "global_hidden") + (("global_per_key",) if self.global_hidden else ())
                 + (("repeats", "repeat_vicinity") if self.repeats else ())}
        return {"model_type": self.model_type, **{k: getattr(self, k) for k in names[self.model_type]},
                "dropout": self.dropout}

    @classmethod
    def from_dict(cls, d: dict) -> FrameModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown model settings: {', '.join(sorted(unknown))}")
        return cls(**d).validate()


def build_model(cfg: FrameModelConfig) -> FrameModel:
    cfg.validate()
    return {"lstm": IndependentLSTM, "lstm-nade": LSTMNADE, "biaxial": BiaxialLSTM}[cfg.model_type](cfg)


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ConfigError(f"threshold must be strictly between 0 and 1, got {p}")
    return math.log(p) - math.log1p(-p)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def frame_nll(logits: Tensor, x: Tensor) -> Tensor:
    """NLL in nats of each frame: the sum over keys of the Bernoulli NLL. Shape (..., 88) -> (...)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


class FrameModel(nn.Module):
    cfg: FrameModelConfig

    def encode(self, prev: Tensor, state=None, rep: Tensor | None = None):  # pragma: no cover - interface
        raise NotImplementedError

    def logits(self, ctx: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def greedy(self, ctx: Tensor, threshold: float = 0.5) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def init_output_bias(self, log_odds: Tensor) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, prev: Tensor, x: Tensor, state=None, rep: Tensor | None = None):
        """Per-frame NLL (B, T) of ``x`` given its history, and the carried state."""
        ctx, state = self.encode(prev, state, rep)
        return frame_nll(self.logits(ctx, x), x), state


class _FrameLSTM(FrameModel):
    """The shared time axis of ``lstm`` and ``lstm-nade``: an LSTM over whole frames."""

    def __init__(self, cfg: FrameModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rnn = nn.LSTM(N_KEYS, cfg.hidden, cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, prev: Tensor, state=None, rep: Tensor | None = None):
        h, state = self.rnn(prev, state)
        return self.drop(h), state


class IndependentLSTM(_FrameLSTM):
    """P(x_t | x_<t) = prod_k Bernoulli(sigmoid(W h_t + b)_k)."""

    def __init__(self, cfg: FrameModelConfig) -> None:
        super().__init__(cfg)
        self.out = nn.Linear(cfg.hidden, N_KEYS)

    def logits(self, ctx: Tensor, x: Tensor) -> Tensor:
        return self.out(ctx)

    def greedy(self, ctx: Tensor, threshold: float = 0.5) -> Tensor:
        return (self.out(ctx) > _logit(threshold)).float()

    def init_output_bias(self, log_odds: Tensor) -> None:
        with torch.no_grad():
            self.out.bias.copy_(log_odds)


class LSTMNADE(_FrameLSTM):
    """An LSTM whose hidden state gives the visible and hidden biases of a NADE over the keys.

    p(x_k = 1 | x_<k) = sigmoid(bv_k + V_k . sigmoid(bh + sum_{j<k} W_j x_j)), with
    bv, bh linear in the LSTM state (Larochelle & Murray 2011; Boulanger-Lewandowski et al. 2012).
    """

    def __init__(self, cfg: FrameModelConfig) -> None:
        super().__init__(cfg)
        hn = cfg.nade_hidden
        self.to_bv = nn.Linear(cfg.hidden, N_KEYS)
        self.to_bh = nn.Linear(cfg.hidden, hn)
        self.W = nn.Parameter(torch.randn(N_KEYS, hn) * (1.0 / math.sqrt(N_KEYS)))
        self.V = nn.Parameter(torch.randn(N_KEYS, hn) * (1.0 / math.sqrt(hn)))

    def logits(self, ctx: Tensor, x: Tensor) -> Tensor:
        bv, bh = self.to_bv(ctx), self.to_bh(ctx)
        # a_k = bh + sum_{j<k} W_j x_j: exclusive cumulative sum over the keys.
        contrib = x.unsqueeze(-1) * self.W  # (B, T, 88, H)
        a = bh.unsqueeze(-2) + torch.cumsum(contrib, dim=-2) - contrib
        return bv + (torch.sigmoid(a) * self.V).sum(-1)

    def greedy(self, ctx: Tensor, threshold: float = 0.5) -> Tensor:
        bv, a = self.to_bv(ctx), self.to_bh(ctx)
        out = torch.zeros_like(bv)
        for k in range(N_KEYS):
            logit = bv[..., k] + (torch.sigmoid(a) * self.V[k]).sum(-1)
            on = (logit > _logit(threshold)).float()
            out[..., k] = on
            a = a + on.unsqueeze(-1) * self.W[k]
        return out

    def init_output_bias(self, log_odds: Tensor) -> None:
        with torch.no_grad():
            self.to_bv.bias.copy_(log_odds)


class BiaxialLSTM(FrameModel):
    """Johnson (2017)'s bi-axial LSTM for 0/1 frames.

    Time axis: for every key k one LSTM (weights tied across the 88 keys) reads,
    at frame t, the previous frame's keys k-12..k+12, the previous frame's
    pitch-class counts rotated to k's pitch class, k's pitch class and its
    position on the keyboard. Optionally (``global_hidden`` > 0) a frame LSTM
    over whole previous frames adds, through a per-key projection, context the
    tied per-key LSTMs cannot see.

    Note axis: for every frame an LSTM runs across the keys from low to high;
    at key k it reads k's time-axis output and the true states of the
    ``note_window`` keys just below k in the same frame, and its output gives
    the log-odds of key k (plus a per-key bias). The frame's probability is the
    exact product of these conditionals (chain rule over the keys).

    With ``repeats``, per kind of match the time LSTM of key k also reads the
    continuation frame's keys k-r..k+r (r = ``repeat_vicinity``) and the match
    length, and the note LSTM reads the continuation's key k and the match length
    directly (a strong cue it should not have to carry through the time axis).
    """

    def __init__(self, cfg: FrameModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vic = cfg.vicinity
        self.win = cfg.note_window
        n_feat = (2 * self.vic + 1) + 12 + 12 + 1
        n_kinds = len(REPEAT_KINDS) if cfg.repeats else 0
        n_feat += n_kinds * (2 * cfg.repeat_vicinity + 2)
        self.time_rnn = nn.LSTM(n_feat, cfg.time_hidden, cfg.time_layers, batch_first=True,
                                dropout=cfg.dropout if cfg.time_layers > 1 else 0.0)
        ctx_dim = cfg.time_hidden + 2 * n_kinds
        if cfg.global_hidden:
            self.global_rnn = nn.LSTM(N_KEYS, cfg.global_hidden, 1, batch_first=True)
            self.global_proj = nn.Linear(cfg.global_hidden, N_KEYS * cfg.global_per_key)
            ctx_dim += cfg.global_per_key
        self.drop = nn.Dropout(cfg.dropout)
        self.note_rnn = nn.LSTM(ctx_dim + self.win, cfg.note_hidden, cfg.note_layers, batch_first=True,
                                dropout=cfg.dropout if cfg.note_layers > 1 else 0.0)
        self.out = nn.Linear(cfg.note_hidden, 1)
        self.key_bias = nn.Parameter(torch.zeros(N_KEYS))
        keys = torch.arange(N_KEYS)
        pc = (keys + 9) % 12  # key 0 is A0 (MIDI 21): pitch class 9
        self.register_buffer("pc_onehot", F.one_hot(pc, 12).float(), persistent=False)
        self.register_buffer("position", (keys.float() / (N_KEYS - 1)).unsqueeze(-1), persistent=False)
        # rel[k, i] = the pitch class i semitones above k's
        self.register_buffer("rel_pc", (pc.unsqueeze(1) + torch.arange(12)) % 12, persistent=False)

    # --- features -----------------------------------------------------------
    def features(self, prev: Tensor, rep: Tensor | None = None) -> Tensor:
        """(B, T, 88) previous frames (and (B, T, kinds, 89) repeats) -> (B, T, 88, F) per-key time-axis inputs."""
        B, T, _ = prev.shape
        v = self.vic
        vicinity = F.pad(prev, (v, v)).unfold(-1, 2 * v + 1, 1)  # (B, T, 88, 2v+1)
        hist = prev @ self.pc_onehot  # (B, T, 12) sounding keys per pitch class
        rel = hist[..., self.rel_pc]  # (B, T, 88, 12)
        const = torch.cat([self.pc_onehot, self.position], -1).expand(B, T, N_KEYS, 13)
        parts = [vicinity, rel, const]
        if self.cfg.repeats:
            r = self.cfg.repeat_vicinity
            cont = F.pad(rep[..., :N_KEYS], (r, r)).unfold(-1, 2 * r + 1, 1)  # (B, T, kinds, 88, 2r+1)
            parts.append(cont.permute(0, 1, 3, 2, 4).reshape(B, T, N_KEYS, -1))
            parts.append(rep[..., N_KEYS].unsqueeze(-2).expand(B, T, N_KEYS, rep.shape[2]))
        return torch.cat(parts, -1)

    def _check_repeats(self, prev: Tensor, rep: Tensor | None) -> None:
        if self.cfg.repeats and (rep is None or rep.shape != (*prev.shape[:2], len(REPEAT_KINDS), REPEAT_WIDTH)):
            raise ValueError(f"this model reads the repeats input, shape (B, T, {len(REPEAT_KINDS)}, "
                             f"{REPEAT_WIDTH}); got {None if rep is None else tuple(rep.shape)}")

    def lower_window(self, x: Tensor) -> Tensor:
        """(N, 88) -> (N, 88, w): entry [.., k, i] is the state of key k-1-i (0 below A0)."""
        w = self.win
        win = F.pad(x, (w, 0)).unfold(-1, w, 1)[..., :N_KEYS, :]  # [k] = keys k-w .. k-1
        return win.flip(-1)

    # --- model parts --------------------------------------------------------
    def encode(self, prev: Tensor, state=None, rep: Tensor | None = None):
        self._check_repeats(prev, rep)
        B, T, _ = prev.shape
        ts, gs = state if state is not None else (None, None)
        f = self.features(prev, rep).permute(0, 2, 1, 3).reshape(B * N_KEYS, T, -1)
        h, ts = self.time_rnn(f, ts)
        ctx = h.reshape(B, N_KEYS, T, -1).permute(0, 2, 1, 3)  # (B, T, 88, Ht)
        if self.cfg.global_hidden:
            g, gs = self.global_rnn(prev, gs)
            g = self.global_proj(self.drop(g)).reshape(B, T, N_KEYS, -1)
            ctx = torch.cat([ctx, g], -1)
        ctx = self.drop(ctx)
        if self.cfg.repeats:  # undropped: the continuation's own key and the match length, per kind
            k = rep.shape[2]
            direct = torch.cat([rep[..., :N_KEYS].transpose(-1, -2),
                                rep[..., N_KEYS].unsqueeze(-2).expand(B, T, N_KEYS, k)], -1)
            ctx = torch.cat([ctx, direct], -1)
        return ctx, (ts, gs)

    def _note_logits(self, ctx: Tensor, x: Tensor) -> Tensor:
        """ctx (N, 88, C), x (N, 88) -> (N, 88) log-odds, key k using x[:, <k] only."""
        inp = torch.cat([ctx, self.lower_window(x)], -1)
        h, _ = self.note_rnn(inp)
        return self.out(self.drop(h)).squeeze(-1) + self.key_bias

    def logits(self, ctx: Tensor, x: Tensor) -> Tensor:
        B, T, K, H = ctx.shape
        return self._note_logits(ctx.reshape(B * T, K, H), x.reshape(B * T, K)).reshape(B, T, K)

    def greedy(self, ctx: Tensor, threshold: float = 0.5) -> Tensor:
        B, T, K, H = ctx.shape
        c = ctx.reshape(B * T, K, H)
        chosen = torch.zeros(B * T, K + self.win, device=ctx.device, dtype=ctx.dtype)  # key k at k + win
        state = None
        for k in range(K):
            window = chosen[:, k:k + self.win].flip(-1)
            h, state = self.note_rnn(torch.cat([c[:, k], window], -1).unsqueeze(1), state)
            on = (self.out(h[:, 0]).squeeze(-1) + self.key_bias[k] > _logit(threshold)).to(ctx.dtype)
            chosen[:, k + self.win] = on
        return chosen[:, self.win:].reshape(B, T, K)

    def init_output_bias(self, log_odds: Tensor) -> None:
        with torch.no_grad():
            self.key_bias.copy_(log_odds)
            self.out.bias.zero_()
