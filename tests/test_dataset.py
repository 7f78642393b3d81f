"""`prepare` on the real corpus and on bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from chopinbot.dataset.prepare import prepare, process_file
from chopinbot.dataset.splits import assign_splits
from chopinbot.dataset.store import Dataset, PrepareSettings, merge_datasets
from chopinbot.errors import DatasetError, MidiError
from chopinbot.music.midi import read_midi, read_midi_bytes
from conftest import CORPUS, make_midi


def test_all_48_files_used_and_no_time_lost(dataset):
    m = dataset.manifest
    assert len(m["files"]) == 48 and m["skipped"] == []
    for f in m["files"]:
        assert f["beats"] == pytest.approx(f["piece_beats"], abs=1e-9), f["name"]
        assert f["seconds"] == pytest.approx(f["piece_seconds"], abs=0.01), f["name"]
        assert sum(s["stop"] - s["start"] for s in f["segments"]) == f["states"]
    total_min = sum(f["seconds"] for f in m["files"]) / 60
    assert 125 < total_min < 132  # the corpus is ~2 h 9 min of music


def test_splits_are_whole_pieces_of_about_ten_percent(dataset):
    tot = dataset.manifest["totals"]
    n = sum(t["states"] for t in tot.values())
    for split in ("valid", "test"):
        assert tot[split]["pieces"] >= 4
        assert 0.08 <= tot[split]["states"] / n <= 0.13
    names = {s: set(dataset.pieces(s)) for s in ("train", "valid", "test")}
    assert not (names["train"] & names["test"]) and not (names["train"] & names["valid"])
    for seg in dataset.segments():
        assert seg.split == next(f["split"] for f in dataset.manifest["files"] if f["name"] == seg.piece)


def test_key_change_splits_the_piece(dataset):
    p15 = next(f for f in dataset.manifest["files"] if f["name"] == "chpn-p15.mid")
    assert [s["key"] for s in p15["segments"]] == ["Db major", "C# minor", "Db major"]
    assert [s["shift"] for s in p15["segments"]] == [-1, -4, -1]


def test_segments_are_in_c_major_or_a_minor(dataset):
    from chopinbot.music.keys import pitch_class_histogram

    for seg in dataset.segments():
        assert (seg.tonic + seg.shift) % 12 == (9 if seg.minor else 0)
        s = dataset.states(seg)
        if len(s) > 300:
            # after transposition the music lives on the white keys (A minor's G# aside)
            hist = pitch_class_histogram(s.keys, s.beats)
            black = hist[[1, 3, 6, 10]].sum() / hist.sum()
            assert black < 0.25, (seg, black)


def test_compact_on_disk_and_in_memory(dataset, dataset_dir):
    assert dataset.nbytes < 5e6
    assert (dataset_dir / "states.npy").stat().st_size < 5e6
    assert dataset.records.dtype.itemsize == 31


def test_rebuilds_only_when_something_changed(tmp_path):
    src = tmp_path / "midi"
    src.mkdir()
    for name in ["chpn-p1.mid", "chpn-p7.mid", "chpn-p20.mid"]:
        shutil.copy(CORPUS / name, src)
    out = tmp_path / "ds"
    assert prepare([src], out, progress=False).rebuilt
    assert not prepare([src], out, progress=False).rebuilt
    assert prepare([src], out, PrepareSettings(pedal="apply"), progress=False).rebuilt
    (src / "chpn-p7.mid").write_bytes((CORPUS / "chpn-p9.mid").read_bytes())
    assert prepare([src], out, PrepareSettings(pedal="apply"), progress=False).rebuilt


def test_rule_based_splits_without_a_committed_list():
    sizes = {f"piece{i}.mid": 100 + i for i in range(40)}
    a = assign_splits(sizes)
    assert a == assign_splits(dict(reversed(list(sizes.items()))))  # order-independent
    for split in ("valid", "test"):
        chosen = [p for p, s in a.items() if s == split]
        assert len(chosen) >= 4
        assert sum(sizes[p] for p in chosen) >= 0.1 * sum(sizes.values())


@pytest.mark.parametrize(
    "case, expected",
    [
        ("text", "not a MIDI file"),
        ("truncated", "malformed MIDI|no notes"),
        ("empty", "no notes"),
        ("drums", "only drum notes"),
        ("out_of_range", "no notes in the piano range"),
        ("zero_division", "0 ticks per quarter"),
    ],
)
def test_bad_files_are_reported_with_a_reason(tmp_path, case, expected):
    path = tmp_path / f"{case}.mid"
    if case == "text":
        path.write_text("this is not music")
    elif case == "truncated":
        path.write_bytes((CORPUS / "chpn-p1.mid").read_bytes()[:300])
    elif case == "empty":
        make_midi(path, [])
    elif case == "drums":
        make_midi(path, [(0, 1, 36), (1, 2, 38)], drum=True)
    elif case == "out_of_range":
        make_midi(path, [(0, 1, 5), (1, 2, 12)])
    elif case == "zero_division":
        data = bytearray((CORPUS / "chpn-p1.mid").read_bytes())
        data[12:14] = b"\x00\x00"
        path.write_bytes(bytes(data))
    with pytest.raises(MidiError, match=expected):
        read_midi(path)
    res = process_file(path)
    assert res.error and res.name == path.name


def test_prepare_skips_bad_files_and_fails_only_when_none_usable(tmp_path):
    src = tmp_path / "mix"
    src.mkdir()
    shutil.copy(CORPUS / "chpn-p1.mid", src)
    (src / "bad.mid").write_text("nope")
    rep = prepare([src], tmp_path / "ds", progress=False)
    assert [f["name"] for f in rep.manifest["files"]] == ["chpn-p1.mid"]
    assert rep.manifest["skipped"][0]["name"] == "bad.mid"
    assert "not a MIDI file" in rep.manifest["skipped"][0]["reason"]
    with pytest.raises(MidiError, match="bad.mid"):
        prepare([src], tmp_path / "ds2", progress=False, strict=True)
    assert not (tmp_path / "ds2" / "manifest.json").exists()
    (src / "chpn-p1.mid").unlink()
    with pytest.raises(DatasetError, match="no usable MIDI file"):
        prepare([src], tmp_path / "ds3", progress=False)
    assert not list((tmp_path / "ds3").glob("*")) if (tmp_path / "ds3").exists() else True


def test_multitrack_and_format0_read_alike(tmp_path):
    notes = [(0, 1, 60), (0, 2, 48), (1, 2, 64), (2, 3, 67)]
    one = read_midi(make_midi(tmp_path / "one.mid", notes, tracks=1))
    two = read_midi(make_midi(tmp_path / "two.mid", notes, tracks=2))
    np.testing.assert_array_equal(one.pitch, two.pitch)
    np.testing.assert_array_equal(one.start, two.start)


def test_op35_2_keeps_both_parts(dataset):
    import symusic

    score = symusic.Score(str(CORPUS / "chpn_op35_2.mid"))
    n_notes = sum(t.note_num() for t in score.tracks if not t.is_drum)
    assert len(read_midi(CORPUS / "chpn_op35_2.mid")) == n_notes
    assert sum(1 for t in score.tracks if t.note_num()) >= 3


def test_manifest_records_hash_key_shift_and_split(dataset_dir):
    m = json.loads((dataset_dir / "manifest.json").read_text())
    f = next(f for f in m["files"] if f["name"] == "chpn-p2.mid")
    assert f["key"] == "A minor" and f["shift"] == 0 and len(f["sha256"]) == 64
    assert f["split"] in ("train", "valid", "test")
    assert m["settings"]["pedal"] == "ignore"


def test_read_bytes_rejects_garbage_quickly():
    for data in [b"", b"MThd", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff\xff\xff"]:
        with pytest.raises(MidiError):
            read_midi_bytes(data)


def test_shards_merge_into_the_same_dataset(tmp_path, dataset):
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, p in enumerate(parts):
        prepare(None, p, shard=(i, 3), progress=False)
    merged = merge_datasets(parts, tmp_path / "merged")
    assert merged["rows"] == len(dataset.records)
    by_name = {f["name"]: f for f in dataset.manifest["files"]}
    for f in merged["files"]:
        assert f["split"] == by_name[f["name"]]["split"]  # splits unchanged
    m = Dataset(tmp_path / "merged")
    a = next(s for s in m.segments() if s.piece == "chpn-p2.mid")
    b = next(s for s in dataset.segments() if s.piece == "chpn-p2.mid")
    np.testing.assert_array_equal(m.states(a).keys, dataset.states(b).keys)


def test_parallel_prepare_gives_identical_states(tmp_path, dataset_dir):
    prepare(None, tmp_path / "par", jobs=2, progress=False)
    assert (tmp_path / "par" / "states.npy").read_bytes() == (dataset_dir / "states.npy").read_bytes()
