"""The network: a stacked LSTM (or a causal Transformer) that predicts the next piano state.

input (keys, onsets, rhythmic value of the current state)
  -> ``layers`` stacked LSTM of ``hidden`` units (dropout between layers); or, with
     ``model_type="transformer"``, ``layers`` causal self-attention blocks of width ``hidden``
     (:mod:`chopinbot.model.transformer`): the *backbone*
  -> optional LayerNorm
  -> dense head: ``dense_layers`` x [Linear(h -> h/2), ReLU, dropout] (the original's)
  -> 88 key logits, 88 onset logits, and a duration head:
     * ``classes``: logits over the duration vocabulary (softmax), or
     * ``seed``: the original design's ``dur_nodes`` sigmoid nodes, each
       predicting duration / max_duration; their mean is the prediction.

A *note head* (``note_head``, on by default) adds to each key's logits the
output of one small MLP shared by all 88 keys (weights tied across keys, as
in the bi-axial LSTM): it sees the key's own neighbourhood (which keys an
octave around it sound and are struck), its age (and its values of the other
input blocks, :mod:`chopinbot.dataset.inputs`), a learned pitch embedding and
a projection of the LSTM's state.  Whether a held key is released
depends on the same few things for every key; a per-key output layer has to
learn that 88 times from 40k states, and did not (continuation AUC 0.53 vs
0.66 for a tree model given the same features).

With ``joint_keys`` the note head also reads, for key k, what has been
decided of the NEW state below k (:func:`joint_features`: keys and onsets
k-12..k-1, how many keys are on below, the distances to the highest and the
lowest of them, "none below"), so the 88 keys are no longer independent given
the past: each key's logit is its conditional given the keys below it.  In
training the keys below are the target's (teacher forcing, the ``given``
argument of :meth:`ChopinLSTM.forward`; the key NLL is then the exact joint
NLL); in generation the keys are drawn low to high
(:meth:`chopinbot.compose.sampling.Sampler._draw_joint`).  With ``loudness`` a
loudness head predicts the next state's velocity class
(:data:`~chopinbot.dataset.features.LOUDNESS_BINS` classes), and the state's
loudness is an input (:class:`~chopinbot.dataset.inputs.LoudnessBlock`).

Outputs are logits: the sigmoid lives inside the loss (``BCEWithLogits``),
where the original took ``log`` of sigmoids by hand and its runs ended in NaN.

A direct path (``skip``) adds a linear map of the current state to the key
and onset logits: "the same keys again" is the best first guess (copying the
previous state scores F1 0.51), and without the path the LSTM must first learn
to carry 88 bits through its gates, which kept plain models on the
key-frequency plateau for ~1,000 updates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from chopinbot.constants import GRID_PER_BEAT, N_KEYS
from chopinbot.dataset.conditioning import ControlBlock, StyleBlock
from chopinbot.dataset.features import LOUDNESS_BINS, DurationVocab
from chopinbot.dataset.inputs import InputBlock
from chopinbot.dataset.layout import OPTIONAL_BLOCKS, InputLayout, input_blocks
from chopinbot.errors import ConfigError
from chopinbot.model.transformer import CausalTransformer
from chopinbot.music.controls import Controls

NEIGHBOURS = 12  # the note head sees keys up to an octave either side
PITCH_EMB = 8
JOINT_INPUTS = 2 * NEIGHBOURS + 4  # joint_keys: what key k reads of the new state's keys below it (joint_features)
MAX_HIDDEN = 4096  # refuse absurd configs from untrusted files before allocating
MAX_LAYERS = 8
MODEL_TYPES = ("lstm", "transformer")


@dataclass
class ModelConfig:
    """The model's shape; saved as JSON beside the weights."""

    layers: int = 2  # stacked LSTM layers
    hidden: int = 128  # units per LSTM layer (256 measured the same with the repeats input, and is slower)
    dropout: float = 0.5  # between LSTM layers and in the dense head, 0..0.9 (0.3 overfitted durations)
    dense_layers: int = 1  # Linear(h->h/2)+ReLU blocks before the output layers
    layer_norm: bool = False  # LayerNorm on the LSTM output
    onset_head: bool = True  # predict which keys are struck
    skip: bool = True  # direct linear path from the current state to key/onset logits
    note_head: bool = True  # per-key MLP with weights tied across keys
    note_hidden: int = 48  # its hidden units
    note_context: int = 32  # LSTM-state features it sees
    # The optional input blocks (chopinbot.dataset.layout.OPTIONAL_BLOCKS), all but loudness off without the
    # note head:
    key_recency: bool = True  # the note head also reads each key's recency (features.key_recency)
    repeats: bool = True  # read what followed the passage's last occurrence (chopinbot.music.repeats)
    repeats_transposed: bool = True  # ... and the last occurrence at another pitch
    # loudness and joint_keys: on since 2026-12-01 (valid key NLL 4.18 -> 3.74 nats/state at equal training time;
    # generated velocity sd 1 -> 13, real 10; docs/training-history.md)
    loudness: bool = True  # a loudness head (velocity classes); the state's loudness is an input (LoudnessBlock)
    joint_keys: bool = True  # the note head also reads the NEW state's keys below each key (drawn low to high)
    style_input: bool = False  # a style (composer) input (StyleBlock): one model, the styles of `styles`
    styles: list[str] = field(default_factory=list)  # the styles it knows, e.g. ["beethoven", "chopin", ...]
    default_style: str = ""  # the style it composes in unless told otherwise
    style_heads: bool = False  # the style also reaches the note and duration heads directly (StyleBlock.to_heads)
    controls: bool = False  # the composer's controls (ControlBlock): density, register, loudness, key of what comes
    duration_head: str = "classes"  # "classes" (softmax over rhythmic values) or "seed" (original)
    dur_nodes: int = 20  # sigmoid nodes of the seed head
    max_duration: float = 8.0  # beats; the seed head's normalisation (corpus maximum)
    duration_classes: list[float] = field(default_factory=list)  # the duration vocabulary, beats
    grid_per_beat: int = GRID_PER_BEAT
    model_type: str = "lstm"  # the backbone: "lstm" or "transformer" (chopinbot.model.transformer)
    heads: int = 4  # transformer: attention heads (``hidden`` is its width, ``layers`` its blocks)
    span: int = 512  # transformer: states each state attends over, itself included (ALiBi positions)

    @property
    def backbone(self) -> str:
        """The backbone's name as people write it: "LSTM" or "Transformer"."""
        return "Transformer" if self.model_type == "transformer" else "LSTM"

    @property
    def shape(self) -> str:
        """The network in a few words: "Transformer 3×128", "LSTM 2×128" (kind, blocks or layers, width)."""
        return f"{self.backbone} {self.layers}×{self.hidden}"

    def __post_init__(self) -> None:
        if self.note_head is False:
            for block in OPTIONAL_BLOCKS:
                if block.needs_note_head:
                    setattr(self, block.flag, False)
            self.joint_keys = False  # the note head reads the keys below
        self.validate()

    def validate(self) -> None:
        ints = ("layers", "hidden", "dense_layers", "note_hidden", "note_context", "dur_nodes", "grid_per_beat",
                "heads", "span")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be a whole number, got {v!r}")
        for name in ("dropout", "max_duration"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"{name} must be a number, got {v!r}")
        for name in ("layer_norm", "onset_head", "skip", "note_head", "joint_keys", "style_heads") + tuple(
                b.flag for b in OPTIONAL_BLOCKS):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false")
        if not isinstance(self.duration_classes, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.duration_classes
        ):
            raise ConfigError("duration_classes must be a list of numbers")
        if not (1 <= self.grid_per_beat <= 960):
            raise ConfigError(f"grid_per_beat must be 1..960, got {self.grid_per_beat}")
        if not (isinstance(self.styles, list) and all(isinstance(v, str) and v for v in self.styles)):
            raise ConfigError("styles must be a list of names")
        if len(set(self.styles)) != len(self.styles):
            raise ConfigError("styles must not repeat a name")
        if self.style_input and (not self.styles or self.default_style not in self.styles):
            raise ConfigError("a style input needs its styles and a default_style among them")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"unknown model_type {self.model_type!r} (this version knows {', '.join(MODEL_TYPES)})")
        if not (1 <= self.heads <= 64 and self.hidden % self.heads == 0):
            raise ConfigError(f"heads must be 1..64 and divide hidden ({self.hidden}), got {self.heads}")
        if not (2 <= self.span <= 1 << 16):
            raise ConfigError(f"span must be 2..65536 states, got {self.span}")
        if not (1 <= self.layers <= MAX_LAYERS):
            raise ConfigError(f"layers must be 1..{MAX_LAYERS}, got {self.layers}")
        if not (2 <= self.hidden <= MAX_HIDDEN):
            raise ConfigError(f"hidden must be 2..{MAX_HIDDEN}, got {self.hidden}")
        if not (0.0 <= self.dropout < 0.95):
            raise ConfigError(f"dropout must be in [0, 0.95), got {self.dropout}")
        if not (0 <= self.dense_layers <= 4):
            raise ConfigError(f"dense_layers must be 0..4, got {self.dense_layers}")
        if self.duration_head not in ("classes", "seed"):
            raise ConfigError(f"duration_head must be 'classes' or 'seed', got {self.duration_head!r}")
        if not (1 <= self.note_hidden <= 1024 and 1 <= self.note_context <= 1024):
            raise ConfigError("note_hidden and note_context must be 1..1024")
        if not (1 <= self.dur_nodes <= 256):
            raise ConfigError(f"dur_nodes must be 1..256, got {self.dur_nodes}")
        if not self.duration_classes or len(self.duration_classes) > 1024:
            raise ConfigError("duration_classes must list 1..1024 rhythmic values")
        if any(not (0 < v <= 1024) for v in self.duration_classes):
            raise ConfigError("duration_classes must be positive lengths in beats")
        if not (0 < self.max_duration <= 1024):
            raise ConfigError(f"max_duration must be in (0, 1024], got {self.max_duration}")

    @property
    def vocab(self) -> DurationVocab:
        return DurationVocab(tuple(self.duration_classes))

    @property
    def blocks(self) -> tuple[InputBlock, ...]:
        """The input blocks, in row order (:mod:`chopinbot.dataset.inputs`)."""
        return input_blocks(self.vocab, self.grid_per_beat, {b.flag for b in OPTIONAL_BLOCKS if getattr(self, b.flag)},
                            tuple(self.styles), self.default_style or None, self.style_heads)

    def with_style(self, style: str | None) -> ModelConfig:
        """This config, composing in ``style`` (None: its default).  Raises
        :class:`ConfigError` for a style it does not know."""
        if style is None or style == self.default_style:
            return self
        if not self.style_input:
            raise ConfigError(f"this model has no style input; it composes in one style only ({style!r} asked)")
        if style not in self.styles:
            raise ConfigError(f"unknown style {style!r}; this model knows {', '.join(self.styles)}")
        return replace(self, default_style=style)

    @property
    def layout(self) -> InputLayout:
        """Where each block of an input row sits."""
        return InputLayout(self.blocks)

    @property
    def input_dim(self) -> int:
        """Width of an input row."""
        return self.layout.width

    @property
    def lstm_input_dim(self) -> int:
        """The part of the row the LSTM reads (the rest goes to the note head only)."""
        return self.layout.lstm

    @property
    def input_blocks(self) -> dict[str, tuple[InputBlock, ...]]:
        """The keyword arguments of :meth:`~chopinbot.dataset.batches.SplitData.batch` for this model's inputs."""
        return {"blocks": self.blocks}

    @property
    def scoring_blocks(self) -> dict[str, tuple[InputBlock, ...]]:
        """As :attr:`input_blocks`, for scoring held-out pieces: a model with controls reads none
        (nothing requested), as it composes when asked for nothing, instead of reading the density,
        register and pitch classes of the very passage it is scored on; a model with styles reads
        every piece's own (training hides it from some chunks)."""
        return {"blocks": tuple(replace(b, requested=Controls()) if isinstance(b, ControlBlock)
                                else replace(b, hide_share=0.0) if isinstance(b, StyleBlock) else b
                                for b in self.blocks)}

    @property
    def per_key_inputs(self) -> int:
        """Per-key values the note head reads besides the neighbourhood (each
        block's :meth:`~chopinbot.dataset.inputs.InputBlock.key_columns`)."""
        return self.layout.per_key

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        d = {**{b.flag: False for b in OPTIONAL_BLOCKS}, "joint_keys": False, **d}  # saved before these inputs
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def neighbourhood_index(zero: int) -> np.ndarray:
    """(88, 2 (2 NEIGHBOURS + 1)) int64: the columns of an input row each key
    reads as its neighbourhood -- the keys an octave either side of it, then
    their onsets (a row's first 2 x 88 columns) -- with column ``zero`` (a
    zero) beyond the keyboard."""
    k = np.arange(N_KEYS)[:, None] + np.arange(-NEIGHBOURS, NEIGHBOURS + 1)[None, :]
    inside = (k >= 0) & (k < N_KEYS)
    return np.concatenate([np.where(inside, k, zero), np.where(inside, k + N_KEYS, zero)], 1).astype(np.int64)


class Outputs(NamedTuple):
    key_logits: torch.Tensor  # (B, T, 88)
    onset_logits: torch.Tensor | None  # (B, T, 88)
    duration: torch.Tensor  # (B, T, V) class logits, or (B, T, dur_nodes) node logits
    loudness: torch.Tensor | None = None  # (B, T, LOUDNESS_BINS) logits of the next state's velocity class


class ChopinLSTM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # The backbone: rows -> one feature vector per state, ``(x, state) -> (h, state)`` either way.  The
        # LSTM keeps its attribute name (it is in every saved checkpoint's tensor names).
        if c.model_type == "transformer":
            self.transformer = CausalTransformer(c.lstm_input_dim, c.hidden, c.layers, c.heads, c.span, c.dropout)
        else:
            self.lstm = nn.LSTM(c.lstm_input_dim, c.hidden, c.layers, batch_first=True,
                                dropout=c.dropout if c.layers > 1 else 0.0)
        self.norm = nn.LayerNorm(c.hidden) if c.layer_norm else nn.Identity()
        dense: list[nn.Module] = []
        width = c.hidden
        for _ in range(c.dense_layers):
            dense += [nn.Linear(width, max(width // 2, 8)), nn.ReLU(), nn.Dropout(c.dropout)]
            width = max(width // 2, 8)
        self.dense = nn.Sequential(*dense)
        self.key_out = nn.Linear(width, N_KEYS)
        self.onset_out = nn.Linear(width, N_KEYS) if c.onset_head else None
        n_dur = len(c.duration_classes) if c.duration_head == "classes" else c.dur_nodes
        self.dur_out = nn.Linear(width, n_dur)
        layout = c.layout
        self.lstm_width, self.input_width = layout.lstm, layout.width
        # What the input blocks give the duration head (the repeats' rhythmic value, as is and scaled by
        # the match's length: a long match is trusted more), straight to its outputs; starts at 0.  Named
        # for the repeats, the only such block so far: the name is in saved weights.
        self.duration_terms = layout.duration_terms()
        n_terms = layout.duration_width
        self.repeat_dur = nn.Linear(n_terms, n_dur, bias=False) if n_terms else None
        if self.repeat_dur is not None:
            nn.init.zeros_(self.repeat_dur.weight)
        if c.note_head:
            self.pitch_emb = nn.Parameter(torch.randn(N_KEYS, PITCH_EMB) * 0.1)
            self.note_ctx = nn.Linear(width, c.note_context)
            n_in = 2 * (2 * NEIGHBOURS + 1) + layout.per_key + PITCH_EMB + c.note_context
            n_in += JOINT_INPUTS if c.joint_keys else 0  # last: the new state's keys below (joint_features)
            self.note_mlp = nn.Sequential(nn.Linear(n_in, c.note_hidden), nn.ReLU(), nn.Linear(c.note_hidden, 2))
            nn.init.zeros_(self.note_mlp[2].weight)
            nn.init.zeros_(self.note_mlp[2].bias)
            # what each key reads of the row padded by one zero column: its neighbourhood, then its own
            # values of the input blocks (not saved: checkpoints hold weights only)
            index = np.concatenate([neighbourhood_index(layout.width), layout.key_index()], 1)
            self.register_buffer("note_index", torch.from_numpy(index), persistent=False)
        self.loud_out = nn.Linear(width, LOUDNESS_BINS) if c.loudness else None
        n_skip = 2 * N_KEYS if c.onset_head else N_KEYS
        self.skip = nn.Linear(2 * N_KEYS, n_skip, bias=False) if c.skip else None
        if self.skip is not None:
            # Start as "the keys now sounding will sound next" (the copy
            # baseline): +4 on the key->key diagonal lifts a sounding key's
            # logit from its log-odds (about -3.5) to about +0.5.
            nn.init.zeros_(self.skip.weight)
            with torch.no_grad():
                self.skip.weight[:N_KEYS, :N_KEYS] += 4.0 * torch.eye(N_KEYS)

    def init_output_biases(self, key_rate: torch.Tensor, onset_rate: torch.Tensor | None,
                           dur_prior: torch.Tensor) -> None:
        """Start at the data's marginals: key/onset biases at their log-odds,
        duration logits at the log class frequencies (or the mean duration)."""
        with torch.no_grad():
            self.key_out.bias.copy_(torch.logit(key_rate.clamp(1e-4, 1 - 1e-4)))
            if self.onset_out is not None and onset_rate is not None:
                self.onset_out.bias.copy_(torch.logit(onset_rate.clamp(1e-4, 1 - 1e-4)))
            self.dur_out.bias.copy_(dur_prior)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
        given: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[Outputs, tuple[torch.Tensor, torch.Tensor]]:
        """The next state's outputs after each row of ``x`` (B, T, input_dim).  ``given``
        (``joint_keys`` only): the next states' keys and onsets (B, T, 88) on which each
        key's conditional is taken (key k reads only keys < k); None: nothing below any key."""
        h, new_state = self.features(x, state)
        return self.heads(x, h, given), new_state

    def features(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """What the heads read after each row of ``x``: the backbone's features through the layer norm
        and the dense layers (B, T, width), and the backbone's state after the last row."""
        h, new_state = self.backbone(self.lstm_inputs(x), state)
        return self.dense(self.norm(h)), new_state

    def heads(self, x: torch.Tensor, h: torch.Tensor, given: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> Outputs:
        """The outputs from the rows ``x`` and their :meth:`features` ``h`` (``given`` as in :meth:`forward`):
        apart so that the note head can adapt to a piece without the backbone being run again
        (:mod:`chopinbot.model.adaptation`)."""
        keys = self.key_out(h)
        onsets = self.onset_out(h) if self.onset_out is not None else None
        if self.skip is not None:
            s = self.skip(x[..., : 2 * N_KEYS])  # keys and onsets of the current state
            keys = keys + s[..., :N_KEYS]
            if onsets is not None:
                onsets = onsets + s[..., N_KEYS:]
        if self.config.note_head:
            adj = self._note_logits(x, h, given)
            keys = keys + adj[..., 0]
            if onsets is not None:
                onsets = onsets + adj[..., 1]
        loudness = self.loud_out(h) if self.loud_out is not None else None
        return Outputs(keys, onsets, self.duration_outputs(x, h), loudness)

    @property
    def backbone(self) -> nn.Module:
        """The LSTM or the Transformer (``model_type``): input rows and a state -> features and the next state."""
        return self.transformer if self.config.model_type == "transformer" else self.lstm

    def lstm_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The columns of the input rows the LSTM reads (the note-head columns go to the note head only)."""
        return x[..., : self.lstm_width] if self.lstm_width < self.input_width else x

    def duration_outputs(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The duration head's outputs from the dense features ``h`` (and what the input blocks give it)."""
        out = self.dur_out(h)
        if self.repeat_dur is not None:
            parts = [x[..., a:b] if s is None else x[..., a:b] * x[..., s : s + 1] for a, b, s in self.duration_terms]
            out = out + self.repeat_dur(torch.cat(parts, -1))
        return out

    def _note_logits(self, x: torch.Tensor, h: torch.Tensor,
                     given: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T, 88, 2) key/onset logit corrections from the shared per-key MLP.
        Each key's inputs are gathered from the row by a constant index (its
        neighbourhood and its values of the input blocks): one operation, and
        one that ONNX exports with dynamic shapes (``unfold`` is not).  On the
        rows as a matrix, ``index_select`` is the fast form: measured here at
        batch 8 x 64 states, 1.4 ms against 6.5 ms for ``x[..., index]`` and
        2.7 ms for the ``unfold`` it replaces."""
        B, T = x.shape[0], x.shape[1]
        rows = nn.functional.pad(x, (0, 1)).reshape(B * T, -1)
        per_key = rows.index_select(1, self.note_index.reshape(-1)).reshape(B, T, N_KEYS, -1)  # (..., 2w + per-key)
        ctx = self.note_ctx(h).unsqueeze(2).expand(B, T, N_KEYS, self.config.note_context)
        emb = self.pitch_emb.expand(B, T, N_KEYS, PITCH_EMB)
        parts = [per_key, emb, ctx]
        if self.config.joint_keys:
            if given is None:
                given = (x.new_zeros(B, T, N_KEYS), x.new_zeros(B, T, N_KEYS))
            parts.append(joint_features(given[0].to(x.dtype), given[1].to(x.dtype)))
        return self.note_mlp(torch.cat(parts, -1))

    def expected_duration(self, duration_out: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Predicted length in beats: the mean of the seed nodes, or the
        expectation under the class distribution."""
        c = self.config
        if c.duration_head == "seed":
            return torch.sigmoid(duration_out).mean(-1) * c.max_duration
        values = torch.tensor(c.duration_classes, dtype=duration_out.dtype, device=duration_out.device)
        return torch.softmax(duration_out / temperature, -1) @ values

    def point_duration(self, duration_out: torch.Tensor) -> torch.Tensor:
        """One length in beats per state, for metrics and deterministic decoding.

        Seed head: the mean of its nodes.  Classes head: the rhythmic value with
        the least expected duration error 2|d - v| / (d + v) under the predicted
        distribution (the Bayes decision for the metric we report; the mean of
        a two-peaked distribution is a length that seldom occurs)."""
        if self.config.duration_head == "seed":
            return self.expected_duration(duration_out)
        v = torch.tensor(self.config.duration_classes, dtype=duration_out.dtype, device=duration_out.device)
        cost = 2 * (v[:, None] - v[None, :]).abs() / (v[:, None] + v[None, :])  # cost[true, chosen]
        expected_cost = torch.softmax(duration_out, -1) @ cost
        return v[expected_cost.argmin(-1)]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def joint_features(keys: torch.Tensor, onsets: torch.Tensor) -> torch.Tensor:
    """(..., 88, JOINT_INPUTS): what key k reads of the new state's keys/onsets (..., 88)
    below it: keys and onsets k-12..k-1, the number of keys on below k / 8, the
    distance from k to the highest and to the lowest key on below k (capped at 24
    and 48, scaled to [0, 1]; 0 when none) and a flag "none below".  Only keys < k
    enter (tests/test_joint.py checks it); :func:`chopinbot.compose.stepper.joint_features_np`
    is the same in NumPy."""
    W = NEIGHBOURS
    kw = nn.functional.pad(keys, (W, 0)).unfold(-1, W, 1)[..., :N_KEYS, :]  # window of key i: keys i-12..i-1
    ow = nn.functional.pad(onsets, (W, 0)).unfold(-1, W, 1)[..., :N_KEYS, :]
    on = keys > 0.5
    count = torch.cumsum(keys, -1) - keys  # keys on strictly below
    idx = torch.arange(N_KEYS, device=keys.device)
    hi = torch.cummax(torch.where(on, idx, -1), -1).values  # the highest key on at or below k
    hi = torch.cat([hi.new_full(hi.shape[:-1] + (1,), -1), hi[..., :-1]], -1)  # ... strictly below
    lo = torch.cummin(torch.where(on, idx, N_KEYS), -1).values
    lo = torch.cat([lo.new_full(lo.shape[:-1] + (1,), N_KEYS), lo[..., :-1]], -1)
    none = hi < 0
    d_hi = torch.where(none, 0.0, (idx - hi).clamp(max=24) / 24.0).to(keys.dtype)
    d_lo = torch.where(none, 0.0, (idx - lo).clamp(min=0, max=48) / 48.0).to(keys.dtype)
    return torch.cat([kw, ow, torch.stack([count / 8.0, d_hi, d_lo, none.to(keys.dtype)], -1)], -1)


def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Keras-style max-norm constraint: rescale each weight row (a unit's
    incoming weights) whose L2 norm exceeds ``max_norm``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "weight" in name:
                norms = p.norm(dim=1, keepdim=True)
                p.mul_(torch.clamp(max_norm / (norms + 1e-12), max=1.0))
