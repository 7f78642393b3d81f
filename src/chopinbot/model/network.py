"""The network: a stacked LSTM that predicts the next piano state.

input (keys, onsets, rhythmic value of the current state)
  -> ``layers`` stacked LSTM of ``hidden`` units (dropout between layers)
  -> optional LayerNorm
  -> dense head: ``dense_layers`` x [Linear(h -> h/2), ReLU, dropout] (the original's)
  -> 88 key logits, 88 onset logits, and a duration head:
     * ``classes``: logits over the duration vocabulary (softmax), or
     * ``seed``: the original design's ``dur_nodes`` sigmoid nodes, each
       predicting duration / max_duration; their mean is the prediction.

A *note head* (``note_head``, on by default) adds to each key's logits the
output of one small MLP shared by all 88 keys (weights tied across keys, as
in the bi-axial LSTM): it sees the key's own neighbourhood (which keys an
octave around it sound and are struck), its age, a learned pitch embedding
and a projection of the LSTM's state.  Whether a held key is released
depends on the same few things for every key; a per-key output layer has to
learn that 88 times from 40k states, and did not (continuation AUC 0.53 vs
0.66 for a tree model given the same features).

Outputs are logits: the sigmoid lives inside the loss (``BCEWithLogits``),
where the original took ``log`` of sigmoids by hand and its runs ended in NaN.

A direct path (``skip``) adds a linear map of the current state to the key
and onset logits: "the same keys again" is the best first guess (copying the
previous state scores F1 0.51), and without the path the LSTM must first learn
to carry 88 bits through its gates, which kept plain models on the
key-frequency plateau for ~1,000 updates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
from torch import nn

from chopinbot.constants import GRID_PER_BEAT, N_KEYS
from chopinbot.dataset.features import DurationVocab, InputLayout
from chopinbot.errors import ConfigError

NEIGHBOURS = 12  # the note head sees keys up to an octave either side
PITCH_EMB = 8
MAX_HIDDEN = 4096  # refuse absurd configs from untrusted files before allocating
MAX_LAYERS = 8


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
    key_recency: bool = True  # the note head also reads each key's recency (encoding.key_recency); off without it
    repeats: bool = True  # read what followed the passage's last occurrence (chopinbot.music.repeats); off without the note head
    repeats_transposed: bool = True  # ... and the last occurrence at another pitch; off without the note head
    duration_head: str = "classes"  # "classes" (softmax over rhythmic values) or "seed" (original)
    dur_nodes: int = 20  # sigmoid nodes of the seed head
    max_duration: float = 8.0  # beats; the seed head's normalisation (corpus maximum)
    duration_classes: list[float] = field(default_factory=list)  # the duration vocabulary, beats
    grid_per_beat: int = GRID_PER_BEAT
    model_type: str = "lstm"

    def __post_init__(self) -> None:
        if self.note_head is False:
            self.key_recency = False  # only the note head reads it
            self.repeats = self.repeats_transposed = False  # their keys go to the note head
        self.validate()

    def validate(self) -> None:
        ints = ("layers", "hidden", "dense_layers", "note_hidden", "note_context", "dur_nodes", "grid_per_beat")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be a whole number, got {v!r}")
        for name in ("dropout", "max_duration"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"{name} must be a number, got {v!r}")
        for name in ("layer_norm", "onset_head", "skip", "note_head", "key_recency", "repeats",
                     "repeats_transposed"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false")
        if not isinstance(self.duration_classes, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.duration_classes
        ):
            raise ConfigError("duration_classes must be a list of numbers")
        if not (1 <= self.grid_per_beat <= 960):
            raise ConfigError(f"grid_per_beat must be 1..960, got {self.grid_per_beat}")
        if self.model_type != "lstm":
            raise ConfigError(f"unknown model_type {self.model_type!r} (this version knows 'lstm')")
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
    def layout(self) -> InputLayout:
        """Where each block of an input row sits."""
        return InputLayout(len(self.duration_classes), self.key_recency, len(self.repeat_kinds))

    @property
    def repeat_kinds(self) -> tuple[str, ...]:
        """The repeat kinds read (:data:`chopinbot.music.repeats.KINDS`), in the order of their input blocks."""
        return (("exact",) if self.repeats else ()) + (("transposed",) if self.repeats_transposed else ())

    @property
    def input_dim(self) -> int:
        """Width of an input row (what :func:`~chopinbot.dataset.features.state_features` makes)."""
        return self.layout.width

    @property
    def lstm_input_dim(self) -> int:
        """The part of the row the LSTM reads (the per-key blocks go to the note head only)."""
        return self.layout.lstm

    @property
    def input_blocks(self) -> dict[str, bool | tuple[str, ...]]:
        """The optional input blocks, as :meth:`~chopinbot.dataset.batches.SplitData.batch` takes them."""
        return {"recency": self.key_recency, "repeats": self.repeat_kinds}

    @property
    def per_key_inputs(self) -> int:
        """Per-key values the note head reads besides the neighbourhood: age
        [, beats since struck, previous interval] [, per repeat kind: the continuation's key and
        onset, the match length]."""
        return 1 + (2 if self.key_recency else 0) + 3 * len(self.repeat_kinds)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        d = {"key_recency": False, "repeats": False, "repeats_transposed": False, **d}  # saved before these inputs
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


class Outputs(NamedTuple):
    key_logits: torch.Tensor  # (B, T, 88)
    onset_logits: torch.Tensor | None  # (B, T, 88)
    duration: torch.Tensor  # (B, T, V) class logits, or (B, T, dur_nodes) node logits


class ChopinLSTM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.lstm = nn.LSTM(c.lstm_input_dim, c.hidden, c.layers, batch_first=True, dropout=c.dropout if c.layers > 1 else 0.0)
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
        # The repeat's rhythmic value, as is and scaled by the match's length (a
        # long match is trusted more), straight to the duration outputs; starts at 0.
        n_rep = len(c.repeat_kinds)
        self.repeat_dur = nn.Linear(2 * n_rep * len(c.duration_classes), n_dur, bias=False) if n_rep else None
        if self.repeat_dur is not None:
            nn.init.zeros_(self.repeat_dur.weight)
        if c.note_head:
            self.pitch_emb = nn.Parameter(torch.randn(N_KEYS, PITCH_EMB) * 0.1)
            self.note_ctx = nn.Linear(width, c.note_context)
            n_in = 2 * (2 * NEIGHBOURS + 1) + c.per_key_inputs + PITCH_EMB + c.note_context
            self.note_mlp = nn.Sequential(nn.Linear(n_in, c.note_hidden), nn.ReLU(), nn.Linear(c.note_hidden, 2))
            nn.init.zeros_(self.note_mlp[2].weight)
            nn.init.zeros_(self.note_mlp[2].bias)
        n_skip = 2 * N_KEYS if c.onset_head else N_KEYS
        self.skip = nn.Linear(2 * N_KEYS, n_skip, bias=False) if c.skip else None
        if self.skip is not None:
            # Start as "the keys now sounding will sound next" (the copy
            # baseline): +4 on the key->key diagonal lifts a sounding key's
            # logit from its log-odds (about -3.5) to about +0.5.
            nn.init.zeros_(self.skip.weight)
            with torch.no_grad():
                self.skip.weight[:N_KEYS, :N_KEYS] += 4.0 * torch.eye(N_KEYS)

    def init_output_biases(self, key_rate: torch.Tensor, onset_rate: torch.Tensor | None, dur_prior: torch.Tensor) -> None:
        """Start at the data's marginals: key/onset biases at their log-odds,
        duration logits at the log class frequencies (or the mean duration)."""
        with torch.no_grad():
            self.key_out.bias.copy_(torch.logit(key_rate.clamp(1e-4, 1 - 1e-4)))
            if self.onset_out is not None and onset_rate is not None:
                self.onset_out.bias.copy_(torch.logit(onset_rate.clamp(1e-4, 1 - 1e-4)))
            self.dur_out.bias.copy_(dur_prior)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[Outputs, tuple[torch.Tensor, torch.Tensor]]:
        h, new_state = self.lstm(self.lstm_inputs(x), state)
        h = self.dense(self.norm(h))
        keys = self.key_out(h)
        onsets = self.onset_out(h) if self.onset_out is not None else None
        if self.skip is not None:
            s = self.skip(x[..., : 2 * N_KEYS])  # keys and onsets of the current state
            keys = keys + s[..., :N_KEYS]
            if onsets is not None:
                onsets = onsets + s[..., N_KEYS:]
        if self.config.note_head:
            adj = self._note_logits(x, h)
            keys = keys + adj[..., 0]
            if onsets is not None:
                onsets = onsets + adj[..., 1]
        return Outputs(keys, onsets, self.duration_outputs(x, h)), new_state

    def lstm_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The columns of the input rows the LSTM reads (the per-key blocks go to the note head only)."""
        c = self.config
        return x[..., : c.lstm_input_dim] if c.lstm_input_dim < c.input_dim else x

    def duration_outputs(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The duration head's outputs from the dense features ``h`` (and the repeat's rhythm in ``x``)."""
        out = self.dur_out(h)
        if self.repeat_dur is not None:
            c, parts = self.config, []
            for i in range(len(c.repeat_kinds)):
                g = x[..., c.layout.repeat_global(i)]
                onehot = g[..., : len(c.duration_classes)]
                parts += [onehot, onehot * g[..., -1:]]
            out = out + self.repeat_dur(torch.cat(parts, -1))
        return out

    def key_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 88, per_key_inputs): what the note head reads of each key
        besides its neighbourhood (see :attr:`ModelConfig.per_key_inputs`)."""
        c = self.config
        lay = c.layout
        B, T = x.shape[0], x.shape[1]
        parts = [x[..., 2 * N_KEYS : 3 * N_KEYS].unsqueeze(-1)]  # age
        if c.key_recency:  # beats since struck, previous interval
            parts.append(x[..., lay.recency_block].reshape(B, T, 2, N_KEYS).transpose(2, 3))
        for i in range(len(c.repeat_kinds)):  # the continuation's key and onset, the match length
            parts.append(x[..., lay.repeat_keys(i)].reshape(B, T, 2, N_KEYS).transpose(2, 3))
            end = lay.repeat_global(i).stop
            parts.append(x[..., end - 1 : end, None].expand(B, T, N_KEYS, 1))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def _note_logits(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(B, T, 88, 2) key/onset logit corrections from the shared per-key MLP."""
        B, T, _ = x.shape
        w = 2 * NEIGHBOURS + 1
        kon = x[..., : 2 * N_KEYS].reshape(B * T, 2, N_KEYS)
        padded = torch.nn.functional.pad(kon, (NEIGHBOURS, NEIGHBOURS))
        local = padded.unfold(2, w, 1)  # (B*T, 2, 88, w): each key's neighbourhood
        local = local.permute(0, 2, 1, 3).reshape(B, T, N_KEYS, 2 * w)
        return self.note_mlp_on(local, x, h)

    def note_mlp_on(self, local: torch.Tensor, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The note head's MLP on each key's neighbourhood ``local`` (B, T, 88, 2w) and the rest of its inputs."""
        B, T = x.shape[0], x.shape[1]
        ctx = self.note_ctx(h).unsqueeze(2).expand(B, T, N_KEYS, self.config.note_context)
        emb = self.pitch_emb.expand(B, T, N_KEYS, PITCH_EMB)
        return self.note_mlp(torch.cat([local, self.key_features(x), emb, ctx], -1))

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


def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Keras-style max-norm constraint: rescale each weight row (a unit's
    incoming weights) whose L2 norm exceeds ``max_norm``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "weight" in name:
                norms = p.norm(dim=1, keepdim=True)
                p.mul_(torch.clamp(max_norm / (norms + 1e-12), max=1.0))
