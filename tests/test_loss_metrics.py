"""The Maestro loss and the metrics, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chopinbot.model.loss import Targets, maestro_loss
from chopinbot.model.metrics import EpochMetrics, KeyCounts, prf_from_sets


def _targets(keys, d_true, onsets=None, cls=None):
    keys = torch.as_tensor(keys, dtype=torch.float32)
    B, T, K = keys.shape
    return Targets(
        keys=keys,
        onsets=torch.zeros_like(keys) if onsets is None else torch.as_tensor(onsets, dtype=torch.float32),
        dur_class=torch.zeros(B, T, dtype=torch.long) if cls is None else torch.as_tensor(cls),
        dur_beats=torch.as_tensor(d_true, dtype=torch.float32).reshape(B, T),
        mask=torch.ones(B, T),
    )


def test_terms_by_hand():
    t = _targets(torch.ones(1, 2, 88), [[1.0, 1.0]])
    logits = torch.zeros(1, 2, 88)  # p = 0.5 everywhere: bce = ln 2
    d_pred = torch.tensor([[3.0, 1.0]])  # relative errors |1-3|/4 = 0.5 and 0
    out = maestro_loss(logits, None, d_pred, t, harshness=0.05)
    assert out["bce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["dur"].item() == pytest.approx(2 * 0.05 * 0.25, rel=1e-5)  # mean of 0.5 and 0
    assert out["total"].item() == pytest.approx(math.log(2) + 0.025, rel=1e-6)
    assert out["key_nll"].item() == pytest.approx(88 * math.log(2), rel=1e-6)


def test_clip_takes_twice_bce_when_duration_term_is_larger():
    t = _targets(torch.ones(1, 1, 88), [[1.0]])
    out = maestro_loss(torch.zeros(1, 1, 88), None, torch.tensor([[3.0]]), t, harshness=2.0)
    assert out["dur"].item() == pytest.approx(2.0)
    assert out["total"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    unclipped = maestro_loss(torch.zeros(1, 1, 88), None, torch.tensor([[3.0]]), t, harshness=2.0, clip=False)
    assert unclipped["total"].item() == pytest.approx(math.log(2) + 2.0, rel=1e-6)


def test_onsets_enter_the_mean_and_class_ce_is_added():
    keys = torch.zeros(1, 1, 88)
    on = torch.zeros(1, 1, 88)
    # key logits 0 -> ln2 each; onset logits very negative on 0 targets -> ~0
    out = maestro_loss(torch.zeros(1, 1, 88), torch.full((1, 1, 88), -50.0), torch.tensor([[1.0]]),
                       _targets(keys, [[1.0]], on), harshness=0.05,
                       class_logits=torch.zeros(1, 1, 4))
    assert out["bce"].item() == pytest.approx(math.log(2) / 2, rel=1e-5)
    assert out["dur_ce"].item() == pytest.approx(math.log(4), rel=1e-6)
    assert out["total"].item() == pytest.approx(out["bce"].item() + math.log(4), rel=1e-5)


@pytest.mark.parametrize("logit", [-1e4, -88.0, 0.0, 88.0, 1e4])
@pytest.mark.parametrize("d", [0.0, 1e-9, 0.5, 1.0])
def test_never_nan_or_inf(logit, d):
    t = _targets(torch.randint(0, 2, (2, 3, 88)), torch.full((2, 3), d))
    out = maestro_loss(torch.full((2, 3, 88), logit, requires_grad=True), torch.full((2, 3, 88), logit),
                       torch.full((2, 3), 1.0 - d), t, class_logits=torch.full((2, 3, 5), logit))
    for v in out.values():
        assert torch.isfinite(v)
    out["total"].backward()


def test_key_counts_match_direct_computation(rng):
    probs = rng.random((500, 88))
    true = rng.random((500, 88)) < 0.1
    kc = KeyCounts()
    kc.update(probs[:250].ravel(), true[:250].ravel())
    kc.update(probs[250:].ravel(), true[250:].ravel())  # accumulation over batches
    for thr in (0.3, 0.5, 0.8):
        assert kc.at(thr) == pytest.approx(prf_from_sets(probs >= thr, true), abs=1e-9)
    best = kc.best_threshold()
    assert kc.at(best)[2] >= max(kc.at(t)[2] for t in np.linspace(0, 0.99, 50)) - 1e-12


def test_copy_of_a_repeated_state_is_perfect():
    s = np.zeros((10, 88), bool)
    s[:, [39, 43, 46]] = True  # a C major chord held
    assert prf_from_sets(s[:-1], s[1:]) == (1.0, 1.0, 1.0)


def test_epoch_metrics_duration_error_and_class_accuracy():
    m = EpochMetrics()
    m.update(np.array([0.9, 0.1]), np.array([1, 0]), np.array([1.0, 1.0]), np.array([1.0, 3.0]), {"total": 1.0},
             2, class_pred=np.array([1, 2]), class_true=np.array([1, 1]))
    s = m.summary()
    assert s["dur_error"] == pytest.approx((0 + 2 * 2 / 4) / 2)  # 2|dt-dp|/(dt+dp), averaged
    assert s["dur_class_acc"] == 0.5 and s["f1"] == 1.0 and s["total"] == 1.0
