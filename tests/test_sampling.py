"""Which silent keys may start (chopinbot.compose.sampling.allowed_new_keys)."""

from __future__ import annotations

import numpy as np

from chopinbot.compose.generate import GenerateConfig
from chopinbot.compose.sampling import allowed_new_keys, filter_logits


def _probs() -> np.ndarray:
    p = np.full((1, 88), 0.002)
    p[0, 10] = 0.03  # a bass note, alone in its register
    p[0, 50], p[0, 48], p[0, 52] = 0.30, 0.10, 0.20  # a melody note and its neighbours
    return p


def test_top_k_keeps_only_the_melody_register():
    allowed = allowed_new_keys(_probs(), np.zeros((1, 88), bool), GenerateConfig(key_top_k=2, key_local_p=0.0))
    assert set(np.flatnonzero(allowed[0])) == {50, 52}  # the bass note never gets to start


def test_local_p_keeps_each_registers_likeliest_and_cuts_near_misses():
    cfg = GenerateConfig(key_top_k=0, key_local_p=0.5, key_window=4)
    allowed = allowed_new_keys(_probs(), np.zeros((1, 88), bool), cfg)
    # the bass note is the likeliest of its register; 48 is under half of 50's; the floor cuts the tail
    assert set(np.flatnonzero(allowed[0])) == {10, 50, 52}


def test_sounding_keys_are_never_candidates_and_no_rule_allows_every_silent_key():
    prev = np.zeros((1, 88), bool)
    prev[0, 50] = True
    allowed = allowed_new_keys(_probs(), prev, GenerateConfig(key_top_k=0, key_local_p=0.5, key_window=4))
    assert not allowed[0, 50] and allowed[0, 48]  # with 50 sounding, 48 is the likeliest silent key near it
    free = allowed_new_keys(_probs(), prev, GenerateConfig(key_top_k=0, key_local_p=0.0))
    assert free[0].sum() == 87


def test_top_one_keeps_exactly_the_likeliest():
    """k = 1 once selected nothing at all (an empty slice for the k-th largest value)."""
    allowed = allowed_new_keys(_probs(), np.zeros((1, 88), bool), GenerateConfig(key_top_k=1, key_local_p=0.0))
    assert set(np.flatnonzero(allowed[0])) == {50}
    kept = np.isfinite(filter_logits(np.log(np.array([[0.1, 0.6, 0.3]])), 1, 1.0))
    assert kept.tolist() == [[False, True, False]]
