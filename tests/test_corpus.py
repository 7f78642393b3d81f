"""The corpus: sources, works found by their notes, splits by work, no leakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import CORPUS, make_midi

from chopinbot.cli import prepare as prepare_cli
from chopinbot.dataset.batches import Chunk, SplitData
from chopinbot.dataset.corpus import BUNDLED_SOURCES, CORPORA, list_corpus, read_table
from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.prepare import prepare
from chopinbot.dataset.splits import work_splits
from chopinbot.dataset.store import Dataset, merge_datasets, read_fingerprints
from chopinbot.dataset.works import SAME_WORK_SHARE, fingerprint, group_works, shared_share
from chopinbot.errors import DatasetError
from chopinbot.music.midi import read_midi

NIFC = BUNDLED_SOURCES["nifc"]
TODAYS_TEST = ["chpn-p24.mid", "chpn_op10_e05.mid", "chpn_op27_2.mid", "chpn_op33_2.mid", "chpn_op35_3.mid"]


@pytest.fixture(scope="session")
def chopin_corpus(tmp_path_factory) -> Path:
    """The bundled "chopin" corpus (the 48 performed pieces and the NIFC editions), prepared."""
    out = tmp_path_factory.mktemp("chopin-corpus")
    prepare(None, out, corpus="chopin", progress=False)
    return out


def test_fingerprint_is_the_same_a_third_higher():
    notes = read_midi(CORPUS / "chpn-p7.mid")
    up = read_midi(CORPUS / "chpn-p7.mid")
    up.pitch = up.pitch + 4
    assert len(fingerprint(notes)) >= 20
    assert np.array_equal(fingerprint(notes), fingerprint(up))


def test_the_48_pieces_are_48_works():
    prints = [fingerprint(read_midi(f)) for f in sorted(CORPUS.glob("*.mid"))]
    share = shared_share(prints)
    np.fill_diagonal(share, 0.0)
    assert share.max() < SAME_WORK_SHARE
    assert len(set(group_works(prints))) == 48


def test_an_edition_is_found_by_its_notes_not_its_number():
    """The performed op. 33 no. 2 and its first edition are one work whatever the edition's number says."""
    performed = fingerprint(read_midi(CORPUS / "chpn_op33_2.mid"))
    editions = sorted(NIFC.glob("op033-*.mid"))
    assert len(editions) == 4
    share = shared_share([performed], [fingerprint(read_midi(f)) for f in editions])[0]
    assert share.max() >= SAME_WORK_SHARE  # one edition is this mazurka ...
    assert np.sort(share)[-2] < 0.1  # ... and the other three are not


def test_work_splits_keep_a_work_in_one_split():
    a, b, c = (np.arange(i * 1000, i * 1000 + 50) for i in range(3))
    entries = [dict(name="perf.mid", declared_work="op1", states=10),
               dict(name="edition.mid", declared_work="op1-other-number", states=10),
               dict(name="unrelated.mid", declared_work="op2", states=10),
               dict(name="renamed.mid", declared_work="op3", states=10)]
    work_splits(entries, [a, a.copy(), b, c], {"test": ["op1"], "valid": ["op3"]})
    assert [e["split"] for e in entries] == ["test", "test", "train", "valid"]
    assert entries[0]["work"] == entries[1]["work"] == "op1"


def test_no_test_work_appears_in_training(chopin_corpus):
    ds = Dataset(chopin_corpus)
    files = ds.manifest["files"]
    prints = read_fingerprints(chopin_corpus)
    assert set(prints) == {f["name"] for f in files}
    train = [prints[f["name"]] for f in files if f["split"] == "train"]
    for split in ("test", "valid"):
        held = [prints[f["name"]] for f in files if f["split"] == split]
        assert held and shared_share(held, train).max() < SAME_WORK_SHARE, split
    # a work and all its sources sit in one split
    split_of_work: dict[str, set[str]] = {}
    for f in files:
        split_of_work.setdefault(f["work"], set()).add(f["split"])
    assert all(len(s) == 1 for s in split_of_work.values())
    # today's test pieces stayed in test, joined by their editions and by new works from the NIFC
    test = [f for f in files if f["split"] == "test"]
    assert set(TODAYS_TEST) <= {f["name"] for f in test}
    assert any(f["source"] == "nifc" and f["work"] not in {g["work"] for g in files if g["source"] != "nifc"}
               for f in test)
    assert sum(f["source"] == "nifc" and f["work"] == next(g["work"] for g in test if g["name"] == "chpn_op33_2.mid")
               for f in files) >= 1


def test_manifest_records_work_composer_source_and_dynamics(chopin_corpus):
    files = Dataset(chopin_corpus).manifest["files"]
    assert all(f["work"] and f["composer"] == "Chopin" and f["source"] in ("piano-midi.de", "nifc") for f in files)
    nifc = [f for f in files if f["source"] == "nifc"]
    assert len(nifc) >= 180 and not any(f["dynamics"] for f in nifc)  # scores: one velocity
    assert all(f["dynamics"] for f in files if f["source"] == "piano-midi.de")


def test_files_without_dynamics_store_velocity_zero(chopin_corpus):
    ds = Dataset(chopin_corpus)
    for seg in ds.segments()[:400]:
        v = np.asarray(ds.records["velocity"][seg.start : seg.stop])
        assert (v == 0).all() if not seg.dynamics else (v > 0).any()


def test_corpus_table_is_checked(tmp_path):
    make_midi(tmp_path / "a.mid", [(0, 1, 60)])
    (tmp_path / "corpus.tsv").write_text("file\twork\tcomposer\tsource\ttitle\nb.mid\tw\tX\ts\t\n")
    with pytest.raises(DatasetError, match="no such file 'b.mid'"):
        list_corpus([tmp_path])
    (tmp_path / "corpus.tsv").write_text("file\twork\n")
    with pytest.raises(DatasetError, match="missing column"):
        list_corpus([tmp_path])


def test_a_plain_folder_is_one_work_per_file_by_the_named_composer(tmp_path):
    make_midi(tmp_path / "first.mid", [(0, 1, 60)])
    make_midi(tmp_path / "second.mid", [(0, 1, 62)])
    files = list_corpus([tmp_path], composer="Clara Schumann")
    assert [(f.work, f.composer, f.source) for f in files] == [("first.mid", "Clara Schumann", tmp_path.name),
                                                               ("second.mid", "Clara Schumann", tmp_path.name)]


def test_bundled_tables_list_every_file_once():
    for name, folder in BUNDLED_SOURCES.items():
        rows = read_table(folder)
        on_disk = {p.relative_to(folder) for p in folder.rglob("*.mid")}
        assert {r.path.relative_to(folder) for r in rows} == on_disk, name
    assert tuple(CORPORA) == prepare_cli.CORPORA


def test_merging_shards_splits_works_over_the_whole(tmp_path):
    """Two editions of one work prepared on different machines still end in one split."""
    src = tmp_path / "music"
    src.mkdir()
    tune = [(i * 0.5, i * 0.5 + 0.5, 60 + (i * 7) % 12 + (i % 5)) for i in range(120)]
    make_midi(src / "a-edition1.mid", tune)
    make_midi(src / "b-edition2.mid", [(s, e, p + 5) for s, e, p in tune])  # transposed
    for i in range(8):
        make_midi(src / f"other{i}.mid", [(j * 0.25, j * 0.25 + 0.25, 50 + (j * (i + 3)) % 23) for j in range(150)])
    parts = []
    for k in range(2):
        parts.append(tmp_path / f"part{k}")
        prepare([src], parts[-1], shard=(k, 2), progress=False)
    merged = merge_datasets(parts, tmp_path / "merged")
    by_name = {f["name"]: f for f in merged["files"]}
    assert by_name["a-edition1.mid"]["work"] == by_name["b-edition2.mid"]["work"]
    assert by_name["a-edition1.mid"]["split"] == by_name["b-edition2.mid"]["split"]
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["files"] == merged["files"]


def test_a_folder_may_hold_out_its_own_pieces(tmp_path):
    for i in range(6):
        make_midi(tmp_path / f"piece{i}.mid", [(j * 0.5, j * 0.5 + 0.5, 48 + (j * (i + 2)) % 25) for j in range(60)])
    (tmp_path / "splits.json").write_text(json.dumps({"test": ["piece1.mid", "piece2.mid"], "valid": ["piece4.mid"]}))
    prepare([tmp_path], tmp_path / "ds", progress=False)
    split = {f["name"]: f["split"] for f in Dataset(tmp_path / "ds").manifest["files"]}
    assert split == {"piece0.mid": "train", "piece1.mid": "test", "piece2.mid": "test", "piece3.mid": "train",
                     "piece4.mid": "valid", "piece5.mid": "train"}
    (tmp_path / "splits.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a splits file"):
        prepare([tmp_path], tmp_path / "ds2", progress=False)


def test_prepare_reads_scores_beside_midi(tmp_path):
    """A folder of MusicXML, Humdrum and MIDI: each file is read, none skipped (the fixture's scores hold
    the same few bars, so they are one work)."""
    folder = Path(__file__).parent / "fixtures" / "scores"
    files = [f for f in sorted(folder.iterdir()) if f.name.startswith("little.")]
    assert {f.suffix for f in files} == {".krn", ".musicxml", ".mid"}
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    rep = prepare([tmp_path], tmp_path / "ds", progress=False)
    manifest = rep.manifest
    assert rep.files == 3 and manifest["skipped"] == []
    assert {f["name"] for f in manifest["files"]} == {f.name for f in files}


def test_the_loudness_loss_skips_files_without_dynamics(chopin_corpus):
    """A score's states reach the loudness head as "no target" (-1); a performance's struck states do not."""
    ds = Dataset(chopin_corpus)
    split = SplitData(ds, "train", DurationVocab((0.25, 0.5, 1.0)))
    dynamics = {f["name"]: f["dynamics"] for f in ds.manifest["files"]}
    seg_of = {(s.start, s.stop): s for s in ds.segments("train")}
    for has in (False, True):
        a, b = next(ab for ab in split.segments if seg_of[ab].dynamics is has and ab[1] - ab[0] > 40)
        assert dynamics[seg_of[(a, b)].piece] is has
        _, t = split.batch([Chunk(a, 32)])
        struck = t.onsets[0].any(-1)
        assert ((t.vel_class[0][struck] >= 0).all() if has else (t.vel_class[0] == -1).all())


def test_a_file_given_alone_is_the_work_its_folder_table_says():
    (f,) = list_corpus([CORPUS / "chpn-p3.mid"])
    assert (f.work, f.composer, f.source) == ("op028-3", "Chopin", "piano-midi.de")


def test_the_two_split_lists_agree():
    """data/chopin/splits.json (by file, read by the seeds and the app) and data/splits.json (by work,
    read by prepare) hold out the same performed pieces."""
    by_file = json.loads((CORPUS / "splits.json").read_text())
    by_work = json.loads((CORPUS.parent / "splits.json").read_text())
    work_of = {f.name: f.work for f in read_table(CORPUS)}
    for split in ("test", "valid"):
        assert {work_of[n] for n in by_file[split]} == {work_of[n] for n in work_of} & set(by_work[split])
