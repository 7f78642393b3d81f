"""Running a model over held-out states: the metrics of a whole split.

Used for validation during training and by ``chopinbot evaluate``.  Each key
segment is one sequence from its first state (no windows), so the figures are
those of a model that listens to the piece from its start.
"""

from __future__ import annotations

import torch

from chopinbot.dataset.batches import Chunk, SplitData
from chopinbot.model.adaptation import can_listen, listening_outputs
from chopinbot.model.loss import HARSHNESS, maestro_loss
from chopinbot.model.metrics import EpochMetrics
from chopinbot.model.network import ChopinLSTM, Outputs


def batch_metrics_update(
    metrics: EpochMetrics, model: ChopinLSTM, out: Outputs, targets, losses: dict[str, torch.Tensor]
) -> None:
    """Add one batch's predictions (masked positions only) to ``metrics``."""
    m = targets.mask.bool()
    with torch.no_grad():
        probs = torch.sigmoid(out.key_logits[m]).float().cpu().numpy()
        d_pred = model.point_duration(out.duration[m]).float().cpu().numpy()
        class_pred = out.duration[m].argmax(-1).cpu().numpy() if model.config.duration_head == "classes" else None
    metrics.update(
        probs,
        targets.keys[m].cpu().numpy(),
        targets.dur_beats[m].cpu().numpy(),
        d_pred,
        {k: v.item() for k, v in losses.items()},
        float(m.sum()),
        class_pred,
        targets.dur_class[m].cpu().numpy() if class_pred is not None else None,
    )


def batch_outputs(model: ChopinLSTM, x: torch.Tensor, targets, forward=None) -> Outputs:
    """The outputs for a batch ``x`` (through ``forward``, default the model; e.g. its DDP
    wrapper): a ``joint_keys`` model's key logits are each key's conditional given the
    target's keys and onsets below it (teacher forcing)."""
    forward = forward or model
    if model.config.joint_keys:
        return forward(x, None, (targets.keys, targets.onsets))[0]
    return forward(x)[0]


def compute_losses(model: ChopinLSTM, out: Outputs, targets, harshness: float, clip: bool,
                   class_weight: float = 1.0) -> dict[str, torch.Tensor]:
    classes = model.config.duration_head == "classes"
    return maestro_loss(
        out.key_logits,
        out.onset_logits,
        model.expected_duration(out.duration),
        targets,
        harshness=harshness,
        clip=clip,
        class_logits=out.duration if classes else None,
        class_weight=class_weight,
        loudness_logits=out.loudness,
    )


@torch.no_grad()
def evaluate_split(
    model: ChopinLSTM,
    data: SplitData,
    harshness: float = HARSHNESS,
    clip: bool = True,
    class_weight: float = 1.0,
    device: torch.device | str = "cpu",
    max_states_per_batch: int = 2048,  # the note head makes (states x 88 x 91) activations: keep peaks small
    listen: bool = False,
) -> EpochMetrics:
    """Metrics of ``model`` over every target of the split (whole segments).  ``listen``: as a model
    whose note head learns each piece while it reads it, as the composer learns its primer
    (:func:`chopinbot.model.adaptation.listening_outputs`; a model that cannot listen is scored as is)."""
    model.eval()
    metrics = EpochMetrics()
    chunks = sorted(data.whole_segments(), key=lambda c: c.length)
    if listen and can_listen(model):
        for c in chunks:  # one piece at a time: each learns its own
            x, t = data.batch([c], **model.config.scoring_blocks)
            x, t = x.to(device), t.to(device)
            out = listening_outputs(model, x, t.keys, t.onsets, t.mask)
            batch_metrics_update(metrics, model, out, t, compute_losses(model, out, t, harshness, clip, class_weight))
        return metrics
    batch: list[Chunk] = []
    for c in chunks + [None]:
        if c is not None and (not batch or (len(batch) + 1) * c.length <= max_states_per_batch):
            batch.append(c)
            continue
        if batch:
            x, t = data.batch(batch, **model.config.scoring_blocks)
            x, t = x.to(device), t.to(device)
            out = batch_outputs(model, x, t)
            losses = compute_losses(model, out, t, harshness, clip, class_weight)
            batch_metrics_update(metrics, model, out, t, losses)
        batch = [c] if c is not None else []
    return metrics
