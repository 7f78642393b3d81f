"""The Maestro loss of the original design, made numerically safe.

    bce   = mean binary cross-entropy over the key outputs
            (88 keys, plus 88 onsets when the onset head is on: mean over 176)
    dur   = 2 * harshness * mean(|d_true - d_pred| / (d_true + d_pred + eps))
    total = min(2 * bce, bce + dur)        (the original's clip; ``clip=False``: bce + dur)

With the ``classes`` duration head, ``d_pred`` is the expected length under
the predicted distribution, and the class cross-entropy, weighted, is added to
the minimised objective (outside the clip) so that the head learns a
distribution, not just a mean:

    objective = maestro + class_weight * class_ce

``maestro`` (the Maestro loss as defined above) is what early stopping and
the reports call "the loss"; the class cross-entropy is reported beside it.
A model with a loudness head adds its cross-entropy over velocity classes
(``vel_ce``) to the objective too, over the states in which something is
struck (a target of -1 is left out; files without dynamics could be left out
the same way, per source).

``key_nll`` is the keys' negative log-likelihood per state (nats).  For a
``joint_keys`` model, whose key logits are each key's conditional given the
target's keys below it (teacher forcing), it is the sum of the conditionals'
NLL: the exact NLL of the state's keys under the model's joint distribution.

BCE is computed from logits (``binary_cross_entropy_with_logits``), never as
``log(sigmoid(x))``, so no input gives NaN or inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chopinbot.dataset.batches import Targets  # built with the batch it belongs to

EPS = 1e-6
HARSHNESS = 0.05  # the original's default weight of the duration term


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def relative_duration_error(d_true: torch.Tensor, d_pred: torch.Tensor) -> torch.Tensor:
    """|d_true - d_pred| / (d_true + d_pred + eps), elementwise, in [0, 1]."""
    return (d_true - d_pred).abs() / (d_true + d_pred + EPS)


def maestro_loss(
    key_logits: torch.Tensor,
    onset_logits: torch.Tensor | None,
    d_pred: torch.Tensor,
    targets: Targets,
    harshness: float = HARSHNESS,
    clip: bool = True,
    class_logits: torch.Tensor | None = None,
    class_weight: float = 1.0,
    loudness_logits: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All terms of the loss as a dict (``total`` is what is minimised)."""
    m = targets.mask
    bce_keys = F.binary_cross_entropy_with_logits(key_logits, targets.keys, reduction="none").mean(-1)
    if onset_logits is not None:
        bce_on = F.binary_cross_entropy_with_logits(onset_logits, targets.onsets, reduction="none").mean(-1)
        bce = masked_mean((bce_keys + bce_on) / 2, m)
    else:
        bce = masked_mean(bce_keys, m)
    dur = 2.0 * harshness * masked_mean(relative_duration_error(targets.dur_beats, d_pred), m)
    maestro = torch.minimum(2.0 * bce, bce + dur) if clip else bce + dur
    total = maestro
    out = {"bce": bce, "dur": dur, "maestro": maestro}
    if class_logits is not None:
        ce = F.cross_entropy(class_logits.flatten(0, 1), targets.dur_class.flatten(), reduction="none")
        out["dur_ce"] = masked_mean(ce.view_as(m), m)
        total = total + class_weight * out["dur_ce"]
    if loudness_logits is not None and targets.vel_class is not None:
        struck = m * (targets.vel_class >= 0).to(m.dtype)
        ce = F.cross_entropy(loudness_logits.flatten(0, 1), targets.vel_class.clamp(min=0).flatten(), reduction="none")
        out["vel_ce"] = masked_mean(ce.view_as(m), struck)
        total = total + out["vel_ce"]
    out["total"] = total
    # key NLL per state in nats (keys only): the sum over 88 keys of the BCE
    out["key_nll"] = masked_mean(bce_keys * key_logits.shape[-1], m)
    return out
