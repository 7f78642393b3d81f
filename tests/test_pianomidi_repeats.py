"""The repeats input of the frame models: hand cases, causality (it reads only the past), its
alignment in training batches, and a biaxial model that reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chopinbot.music.repeats import MAX_MATCH
from chopinbot_tools.frame_models import FrameModelConfig, build_model
from chopinbot_tools.frame_repeats import REPEAT_KINDS, repeat_inputs, transpose_repeats
from chopinbot_tools.frame_training import ChunkSampler
from chopinbot_tools.pianomidi import evaluate, load_piano_midi, previous_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread

EXACT, TRANSPOSED = REPEAT_KINDS.index("exact"), REPEAT_KINDS.index("transposed")




@pytest.fixture(scope="module")
def piece():
    return load_piano_midi(limit=1)["valid"][0][:300]


def frames_with(*on_sets):
    x = np.zeros((len(on_sets), 88), np.uint8)
    for t, on in enumerate(on_sets):
        x[t, list(on)] = 1
    return x


def test_exact_and_transposed_continuations_by_hand():
    a, b, c = {40, 44}, {41}, {47, 50}
    up = lambda s: {k + 2 for k in s}  # noqa: E731 - a one-line helper for the hand case
    piece = frames_with(a, b, c, a, b, c, up(a), up(b), up(c))
    rep = repeat_inputs(previous_frames(piece))
    # frame 5 follows "a b" heard again (frames 0-1, then c): a match of 2 frames; "c a b" is new
    assert set(np.flatnonzero(rep[5, EXACT, :88])) == c
    assert rep[5, EXACT, 88] == pytest.approx(np.log2(3) / np.log2(1 + MAX_MATCH))
    # frame 8 follows b a tone higher, never heard: no exact match; as a shape after the same step
    # up from the frame before, it matches frame 4 (b after a), followed by c, moved up a tone
    assert not rep[8, EXACT].any()
    assert set(np.flatnonzero(rep[8, TRANSPOSED, :88])) == up(c)
    assert rep[8, TRANSPOSED, 88] == pytest.approx(1 / np.log2(1 + MAX_MATCH))
    # the first frame has nothing before it to match
    assert not rep[0, :, :88].any() and not rep[0, :, 88].any()


def test_repeats_read_only_the_past(piece):
    """Changing frame t changes no repeats input of frames <= t (their lookups end at t-1)."""
    base = repeat_inputs(previous_frames(piece))
    for t in (37, 150, 299):
        changed = piece.copy()
        changed[t:] = np.roll(changed[t:], 5, axis=1)  # frame t and everything after it, moved
        rep = repeat_inputs(previous_frames(changed))
        np.testing.assert_array_equal(rep[:t + 1], base[:t + 1])
        if t < 299:
            assert not np.array_equal(rep[t + 1:], base[t + 1:])  # later inputs do see the change


def test_model_with_repeats_later_frames_leave_earlier_probabilities_unchanged(piece):
    torch.manual_seed(0)
    m = build_model(FrameModelConfig(model_type="biaxial", time_hidden=6, time_layers=2, note_hidden=5,
                                     note_layers=2, dropout=0.0, repeats=True, repeat_vicinity=2)).eval()

    def per_frame_nll(p):
        prev = previous_frames(p)
        with torch.no_grad():
            nll, _ = m(torch.from_numpy(prev).float()[None], torch.from_numpy(p).float()[None],
                       rep=torch.from_numpy(repeat_inputs(prev))[None])
        return nll[0].numpy()

    base = per_frame_nll(piece)
    t = 120
    changed = piece.copy()
    changed[t:] = 1 - changed[t:]
    nll = per_frame_nll(changed)
    np.testing.assert_allclose(nll[:t], base[:t], rtol=1e-6)
    assert not np.allclose(nll[t:], base[t:])
    # the exact evaluation (whole pieces, windows carrying the state) agrees with the direct pass
    assert evaluate(m, [piece], window=64, accuracy=False).nll == pytest.approx(base.mean(), rel=1e-5)


def test_a_model_with_repeats_refuses_to_run_without_them():
    m = build_model(FrameModelConfig(model_type="biaxial", time_hidden=4, time_layers=1, note_hidden=4,
                                     note_layers=1, repeats=True))
    with pytest.raises(ValueError, match="repeats input"):
        m.encode(torch.zeros(1, 3, 88))


def test_training_batches_carry_the_repeats_of_the_whole_piece(piece):
    """Without transposition each chunk's repeats are the whole piece's rows for those frames
    (looked up over the piece's past, not only the chunk's); with it they move with the chunk."""
    rng = np.random.default_rng(3)
    sampler = ChunkSampler([piece], chunk=40, batch_size=64, transpose=0, rng=rng, repeats=True)
    whole = repeat_inputs(previous_frames(piece))
    prev, x, mask, rep = next(sampler.epoch())
    for r in range(len(prev)):
        n = int(mask[r].sum())
        # the chunk's start in the piece, by its frames (a repeated passage may fit in several places)
        starts = [a for a in range(len(piece) - n + 1) if np.array_equal(piece[a:a + n], x[r, :n])]
        assert any(np.array_equal(rep[r, :n], whole[a:a + n]) for a in starts)
    assert len(prev) > 3 and mask[:, 0].all()
    moved = transpose_repeats(whole, 3)
    np.testing.assert_array_equal(moved[:, :, 3:88], whole[:, :, :85])
    np.testing.assert_array_equal(moved[:, :, 88], whole[:, :, 88])  # match lengths do not move


def test_with_repeats_key_k_still_depends_only_on_lower_keys_of_its_frame(piece):
    """The chain rule over the keys stays exact with the repeats input: key k's log-odds do not move
    when key k or any key above it in the same frame changes (the repeats come from earlier frames)."""
    torch.manual_seed(2)
    m = build_model(FrameModelConfig(model_type="biaxial", time_hidden=6, time_layers=2, note_hidden=5,
                                     note_layers=2, dropout=0.0, repeats=True, repeat_vicinity=2)).eval()
    prev = previous_frames(piece)[:60]
    x = torch.from_numpy(piece[:60]).float()[None]
    with torch.no_grad():
        ctx, _ = m.encode(torch.from_numpy(prev).float()[None], rep=torch.from_numpy(repeat_inputs(prev))[None])
        base = m.logits(ctx, x)
        for k in (0, 40, 87):
            y = x.clone()
            y[..., k:] = 1 - y[..., k:]
            changed = m.logits(ctx, y)
            torch.testing.assert_close(changed[..., :k + 1], base[..., :k + 1])
            if k < 87:
                assert not torch.allclose(changed[..., k + 1:], base[..., k + 1:])
