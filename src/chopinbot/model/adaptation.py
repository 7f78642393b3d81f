"""Listening: the note head learns the piece it reads (dynamic evaluation).

A trained model knows piano music in general; a piece has its own chords, voicings and figures,
and the backbone's attention (at most ``span`` states back) does not learn them, it only looks
them up.  Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence
Models") lets the weights learn them: after each block of :data:`LISTEN_BLOCK` states the model
has read, one Adam step on that block's loss.  Only the note head (:data:`LISTENING`, the small
per-key MLP that gives each key its probability from its neighbours and the backbone's features)
learns: measured on the valid pieces (key NLL of ``piano-transformer``, blocks of 32), every
parameter learning gave 3.470 -> 2.92 nats a state, the note head alone 2.89, the backbone's
input layer alone 3.51.  The note head is small, so a step costs milliseconds and leaves the
backbone and its cache as they are.

Asked to (``GenerateConfig.listen``, ``--listen``), the composer listens to what it reads before it
composes -- the primer: context and seed, at most :data:`LISTEN_STATES` states -- and composes with the
note head that has learnt them
(:func:`listened`); it does not learn from its own notes.  The likelihood is measured the same way
(:func:`listening_outputs`): each block of a held-out piece is scored, then learnt, through the
piece's first :data:`LISTEN_STATES` states, and the weights stay fixed after: a composer given that
much of the piece as its primer predicts every later state exactly so, and one given less has learnt
at least as much of it as the measure's blocks had.

The learning rate is chosen by the music, not the likelihood (valid pieces, ``scripts/listening_likelihood.py``
and twelve paired draws of ``chopinbot evaluate --suite realism --set seed_offset=0|1000|...|11000``
against the composer that does not listen): at 3e-3 the key NLL falls furthest (3.470 -> 2.83) but
the continuations keep to the primer's few pitch classes (8.4 a 20-s excerpt against 9.4 unlistening
and Chopin's 10.6) and are told from Chopin more often (+0.051 +- 0.014, six draws); at 1e-3 (2.97)
+0.015 +- 0.010; at **3e-4** (3.21) -0.009 +- 0.012 overall and -0.022 +- 0.011 for the composed
excerpts: the one that made the music better.  Blocks of 16 (of 32: 0.09 nats less gain at 3e-4), learnt once each.

Test, scored once with it on: key NLL 3.912 -> 3.784 (half the valid gain: the test pieces repeat less), but
the continuations were told from Chopin more often (0.59 -> 0.66) and the Mozart style came no nearer Mozart
than Chopin (by 0.004, against 0.057): it is off by default, an option for those who want the continuation
to keep to their primer's chords.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from chopinbot.model.network import ChopinLSTM, Outputs

LISTEN_LR = 3e-4  # Adam's step: each weight moves by about this much per block at first (see above)
LISTEN_BLOCK = 16  # states learnt per step
LISTEN_STATES = 512  # the composer learns at most this many states of its primer (its default context)
LISTENING = ("note_ctx.", "note_mlp.")  # the parameters that learn: the note head


def can_listen(model) -> bool:
    """Whether ``model`` can learn a piece: a float PyTorch model with a note head (an int8 or exported
    model cannot take a gradient step; a model without a note head has nothing that listens)."""
    return (type(model) is ChopinLSTM and model.config.note_head
            and all(p.dtype == torch.float32 for p in model.parameters()))


class Listener:
    """A copy of ``model`` whose note head learns, block by block, what it is shown (the model itself
    never changes: the app and the evaluation share it)."""

    def __init__(self, model: ChopinLSTM, lr: float = LISTEN_LR) -> None:
        with torch.inference_mode(False):  # copied in inference mode, its weights could take no gradient
            self.model = copy.deepcopy(model).eval()
        learning = [p for name, p in self.model.named_parameters() if name.startswith(LISTENING)]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for p in learning:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(learning, lr=lr)
        self.blocks = 0  # steps taken

    def outputs(self, x: torch.Tensor, h: torch.Tensor, given: tuple[torch.Tensor, torch.Tensor]) -> Outputs:
        """The model's outputs for rows ``x`` with :meth:`ChopinLSTM.features` ``h`` (no gradient)."""
        with torch.no_grad():
            return self.model.heads(x, h, given)

    def learn(self, x: torch.Tensor, h: torch.Tensor, keys: torch.Tensor, onsets: torch.Tensor,
              mask: torch.Tensor) -> None:
        """One step on a block: rows ``x`` (B, T, inputs) and their features ``h`` (B, T, width), the
        states that follow them ``keys``/``onsets`` (B, T, 88), ``mask`` (B, T): 1 where a state follows."""
        if not mask.any():
            return
        with torch.inference_mode(False), torch.enable_grad():  # the composer runs in inference mode
            x, h, keys, onsets, mask = (t.clone() for t in (x, h, keys, onsets, mask))
            out = self.model.heads(x, h, (keys, onsets))
            bce = F.binary_cross_entropy_with_logits(out.key_logits, keys, reduction="none").mean(-1)
            if out.onset_logits is not None:  # as the loss trains them: keys and onsets alike
                bce = (bce + F.binary_cross_entropy_with_logits(out.onset_logits, onsets,
                                                                reduction="none").mean(-1)) / 2
            loss = (bce * mask).sum() / mask.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.blocks += 1


def listened(model: ChopinLSTM, rows: np.ndarray, keys: np.ndarray, onsets: np.ndarray,
             states: int = LISTEN_STATES, block: int = LISTEN_BLOCK, lr: float = LISTEN_LR) -> ChopinLSTM:
    """A copy of ``model`` whose note head has learnt the last ``states`` states of a primer, in whole
    blocks of ``block`` (as :func:`listening_outputs` measures it: a primer shorter than a block teaches
    nothing): ``rows`` (B, S, inputs) its input rows, ``keys`` and ``onsets`` (B, S, 88) its states
    (row i is followed by state i + 1; the rows of several pieces learn together).  ``model`` itself
    when it cannot listen (:func:`can_listen`) or nothing is learnt."""
    learnt = min(states, rows.shape[1] - 1) // block * block
    if not can_listen(model) or learnt <= 0:
        return model
    listener = Listener(model, lr)
    x = torch.from_numpy(np.ascontiguousarray(rows, np.float32))
    with torch.no_grad():
        h = model.features(x)[0]
    k = torch.from_numpy(np.ascontiguousarray(keys[:, 1:], np.float32))
    o = torch.from_numpy(np.ascontiguousarray(onsets[:, 1:], np.float32))
    mask = torch.ones(k.shape[0], block)
    for a in range(k.shape[1] - learnt, k.shape[1], block):
        listener.learn(x[:, a : a + block], h[:, a : a + block], k[:, a : a + block], o[:, a : a + block], mask)
    return listener.model


def listening_outputs(model: ChopinLSTM, x: torch.Tensor, keys: torch.Tensor, onsets: torch.Tensor,
                      mask: torch.Tensor, states: int = LISTEN_STATES, block: int = LISTEN_BLOCK,
                      lr: float = LISTEN_LR) -> Outputs:
    """The outputs for one piece's rows ``x`` (1, T, inputs) followed by ``keys``/``onsets`` (1, T, 88)
    (``mask`` (1, T)) from a model that listens as the composer does: each block of ``block`` rows
    is scored by the note head as it has learnt the blocks before it, then learnt, until ``states``
    rows have been learnt; the rest is scored with the weights then (teacher forcing, as
    :func:`chopinbot.model.predict.batch_outputs`)."""
    if x.shape[0] != 1:
        raise ValueError("a listening model learns one piece at a time")
    with torch.no_grad():
        h = model.features(x)[0]
    listener = Listener(model, lr)
    parts, a, T = [], 0, x.shape[1]
    while a < T:
        if a >= states:  # learnt enough: the rest with the weights as they are
            parts.append(listener.outputs(x[:, a:], h[:, a:], (keys[:, a:], onsets[:, a:])))
            break
        b = min(a + block, T)
        parts.append(listener.outputs(x[:, a:b], h[:, a:b], (keys[:, a:b], onsets[:, a:b])))
        listener.learn(x[:, a:b], h[:, a:b], keys[:, a:b], onsets[:, a:b], mask[:, a:b])
        a = b
    if len(parts) == 1:
        return parts[0]
    return Outputs(*(None if parts[0][i] is None else torch.cat([p[i] for p in parts], 1)
                     for i in range(len(parts[0]))))
