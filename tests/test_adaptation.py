"""Listening (model.adaptation): the note head learns a piece block by block, never from what it has not read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.dataset.batches import SplitData
from chopinbot.model.adaptation import LISTENING, can_listen, listened, listening_outputs
from chopinbot.model.formats import load_model
from chopinbot.model.predict import batch_outputs, evaluate_split

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    return load_model("piano-transformer")


@pytest.fixture(scope="module")
def piece(shipped, dataset):
    """The rows and targets of the longest valid segment (1, T, ...)."""
    data = SplitData(dataset, "valid", shipped.config.vocab)
    chunk = max(data.whole_segments(), key=lambda c: c.length)
    return data.batch([chunk], **shipped.config.scoring_blocks)


def _keys_out(model, x, keys, onsets, mask, **kw) -> torch.Tensor:
    return listening_outputs(model, x, keys, onsets, mask, **kw).key_logits[0]


def test_each_block_is_scored_before_it_is_learnt(shipped, piece):
    x, t = piece
    x, keys, onsets, mask = x[:, :200], t.keys[:, :200], t.onsets[:, :200], t.mask[:, :200]
    out = _keys_out(shipped, x, keys, onsets, mask, block=16, states=512)
    with torch.no_grad():
        own = batch_outputs(shipped, *piece).key_logits[0, :200]
    assert torch.allclose(out[:16], own[:16], atol=1e-5)  # nothing learnt before the first block
    assert not torch.allclose(out[16:32], own[16:32], atol=1e-3)  # the second block is scored after the first
    # what follows state 50 changes: the blocks before its own are scored as they were (its own block reads the
    # keys below each key of the state it predicts: teacher forcing), every later block differently
    other = keys.clone()
    other[0, 50] = 1.0 - other[0, 50]
    changed = _keys_out(shipped, x, other, onsets, mask, block=16, states=512)
    assert torch.equal(changed[:48], out[:48])
    assert not torch.allclose(changed[64:], out[64:], atol=1e-4)


def test_weights_stay_fixed_after_the_states_learnt(shipped, piece):
    x, t = piece
    x, keys, onsets, mask = x[:, :200], t.keys[:, :200], t.onsets[:, :200], t.mask[:, :200]
    out = _keys_out(shipped, x, keys, onsets, mask, block=16, states=32)
    other = keys.clone()
    other[0, 100] = 1.0 - other[0, 100]  # after the 32 states learnt: only its own row reads it
    changed = _keys_out(shipped, x, other, onsets, mask, block=16, states=32)
    assert torch.equal(changed[:100], out[:100]) and torch.equal(changed[101:], out[101:])


def test_listened_copy_learns_the_note_head_only(shipped, piece):
    x, t = piece
    before = {n: p.detach().clone() for n, p in shipped.named_parameters()}
    rows = x[:, :100].numpy()
    states_keys = np.concatenate([np.zeros((1, 1, 88), np.float32), t.keys[:, :99].numpy()], 1)
    states_onsets = np.concatenate([np.zeros((1, 1, 88), np.float32), t.onsets[:, :99].numpy()], 1)
    learnt = listened(shipped, rows, states_keys, states_onsets)
    assert learnt is not shipped
    for n, p in shipped.named_parameters():  # the shared model is never changed
        assert torch.equal(p, before[n]), n
    moved = {n for n, p in learnt.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(LISTENING) for n in moved)
    # a primer shorter than one block (15 transitions) teaches nothing: the model itself composes
    assert listened(shipped, rows[:, :16], states_keys[:, :16], states_onsets[:, :16]) is shipped


def test_listening_lowers_the_held_out_key_nll(shipped, dataset):
    data = SplitData(dataset, "valid", shipped.config.vocab)
    plain = evaluate_split(shipped, data).summary()["key_nll"]
    listening = evaluate_split(shipped, data, listen=True).summary()["key_nll"]
    assert listening < plain - 0.1, (plain, listening)


def test_models_that_cannot_listen_are_scored_and_compose_as_they_are(dataset):
    original = load_model("original")  # the 2020 design: no note head
    assert not can_listen(original)
    data = SplitData(dataset, "valid", original.config.vocab)
    assert evaluate_split(original, data, listen=True).summary() == evaluate_split(original, data).summary()


def test_the_composer_listens_to_its_primer_and_not_to_a_seed_alone(shipped):
    seed = seed_from_test(20, context_states=256)  # 272 states read: 256 learnt

    def piece(listen: bool, s=seed):
        return generate(shipped, s, GenerateConfig(steps=48, random_seed=5, listen=listen)).states.keys

    assert not np.array_equal(piece(True), piece(False))
    alone = seed_from_test(20, context_states=0)  # 16 states: less than a block
    assert np.array_equal(piece(True, alone), piece(False, alone))
