"""A causal Transformer over piano states: the backbone that can replace the LSTM.

It reads the same input rows (:mod:`chopinbot.dataset.inputs`) and feeds the
same heads (:class:`chopinbot.model.network.ChopinLSTM`); only what turns the
rows into one feature vector per state differs:

  rows -> Linear(inputs -> d) -> ``layers`` x [pre-LN causal self-attention,
  pre-LN MLP (4d, GELU)] -> LayerNorm -> (B, T, d)

Positions are ALiBi biases (Press et al. 2022, "Train short, test long"): each
head subtracts ``slope x distance`` from its attention scores, so a model
trained on chunks of a few hundred states reads a longer piece without
positions it never saw, and no position table is stored.  Attention looks at
most ``span`` states back (itself included): composing stays flat in cost per state
however long the piece grows (the cache keeps ``span - 1`` states), and scoring a whole held-out
piece runs in query blocks instead of one (T x T) matrix.

The recurrent state of the LSTM becomes a cache: the keys and values of the
last ``span - 1`` states of every layer, ``(K, V)`` each ``(layers, B, heads, T,
d / heads)`` -- batch in dimension 1 as in the LSTM's ``(h, c)``, so the
composing code selects and expands rows of either the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

QUERY_BLOCK = 512  # queries attended at once when scoring a long sequence (keeps the score matrix small)

Cache = tuple[torch.Tensor, torch.Tensor]  # keys, values: (layers, B, heads, T, head_dim)


def alibi_slopes(heads: int) -> torch.Tensor:
    """The heads' ALiBi slopes: the geometric sequence 2^(-8/heads), 2^(-16/heads), ... of the paper."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor, past: Cache | None, slopes: torch.Tensor, span: int
                ) -> tuple[torch.Tensor, Cache]:
        B, T, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        P = k.shape[2] - T  # states before this call's first
        p = self.dropout if self.training else 0.0
        outs = []
        for a in range(0, T, QUERY_BLOCK):  # one block in training and composing; several for a whole piece
            b = min(a + QUERY_BLOCK, T)
            lo = max(0, P + a - span + 1)  # the earliest state any query of the block may see
            qpos = torch.arange(P + a, P + b, device=h.device)[:, None]
            kpos = torch.arange(lo, P + b, device=h.device)[None, :]
            dist = (qpos - kpos).to(h.dtype)
            bias = -slopes.to(h.dtype)[:, None, None] * dist  # (heads, q, k)
            bias = bias.masked_fill((dist < 0) | (dist >= span), float("-inf"))
            outs.append(F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, lo : P + b], v[:, :, lo : P + b],
                                                       attn_mask=bias, dropout_p=p))
        att = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
        h = h + F.dropout(self.proj(att.transpose(1, 2).reshape(B, T, d)), p, self.training)
        h = h + self.mlp(self.ln2(h))
        keep = span - 1  # the next state sees at most span - 1 states before it
        return h, (k[:, :, -keep:], v[:, :, -keep:])


class CausalTransformer(nn.Module):
    """``(x, cache) -> (features, cache)``: the interface of ``nn.LSTM(batch_first=True)``."""

    def __init__(self, n_in: int, d: int, layers: int, heads: int, span: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"the width {d} must be a multiple of the heads {heads}")
        self.span = span
        self.inp = nn.Linear(n_in, d)
        self.blocks = nn.ModuleList(_Block(d, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        h = self.inp(x)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            h, (k, v) = block(h, None if cache is None else (cache[0][i], cache[1][i]), self.slopes, self.span)
            ks.append(k)
            vs.append(v)
        return self.norm(h), (torch.stack(ks), torch.stack(vs))
