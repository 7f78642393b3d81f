"""A user's own music end to end (issue 28): scores wherever MIDI goes, `prepare --composer` mapped to a
known style or told it is new, empty splits warned about, seeds from a dataset's own held-out pieces, and
pieces labelled with the model and the style that made them."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chopinbot.app.seeds import UploadError, check_upload
from chopinbot.cli import main
from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.infill import read_source
from chopinbot.compose.seeds import list_seeds, model_dataset, seed_from_dataset, seed_from_primer, seed_from_test
from chopinbot.constants import SHIPPED_MODEL
from chopinbot.dataset.corpus import match_style, resolve_composer
from chopinbot.dataset.prepare import prepare, split_warnings
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ConfigError, DatasetError, MidiError
from chopinbot.model.checkpoint import model_name, read_config
from chopinbot.model.formats import load_model
from chopinbot.music.scores import read_notes_bytes
from chopinbot.render.outputs import maker_label

FIXTURES = Path(__file__).parent / "fixtures" / "scores"
MUSICXML = FIXTURES / "little.musicxml"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "schubert-scores"


def mxl_bytes() -> bytes:
    """little.musicxml as a compressed MusicXML file, as notation programs write one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="score.xml"/></rootfiles>'
                                             '</container>')
        z.writestr("score.xml", MUSICXML.read_bytes())
    return buf.getvalue()


# --- scores as primers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["little.musicxml", "little.krn", "little.mxl"])
def test_a_score_primes_like_its_midi_and_keeps_its_key_and_metre(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(mxl_bytes() if name.endswith(".mxl") else (FIXTURES / name).read_bytes())
    midi = seed_from_primer(FIXTURES / "little.mid", 8)
    for seed in (seed_from_primer(path, 8), seed_from_primer(path.read_bytes(), 8, name=name)):
        assert seed.key.name == "D minor" == midi.key.name  # the score's last key signature
        assert seed.time_signature == (4, 4)
        assert np.array_equal(seed.states.keys, midi.states.keys) and seed.start_beat == pytest.approx(midi.start_beat)
        assert seed.source.startswith(f"primer {name} (D minor, last 8 states")


def test_a_score_read_from_memory_is_told_by_its_content_when_its_name_says_nothing():
    assert len(read_notes_bytes(MUSICXML.read_bytes(), "upload")) == 17
    assert len(read_notes_bytes(mxl_bytes(), "upload")) == 17
    with pytest.raises(MidiError, match="not a file ChopinBot reads: use MIDI .*MusicXML .*Humdrum"):
        read_notes_bytes(b"Dear Frederic, a mazurka", "upload")


def test_bad_score_primers_are_named_by_their_format(tmp_path):
    cut = tmp_path / "cut.musicxml"
    cut.write_bytes(MUSICXML.read_bytes()[:2000])
    with pytest.raises(MidiError, match="not a readable MusicXML score: not well-formed XML"):
        seed_from_primer(cut)
    with pytest.raises(MidiError, match="not a readable compressed MusicXML"):
        seed_from_primer(b"PK\x03\x04 no zip", name="broken.mxl")
    mislabelled = tmp_path / "score.mid"  # a score under a MIDI name: not "no MThd header"
    shutil.copy(MUSICXML, mislabelled)
    with pytest.raises(MidiError, match="not a MIDI file: it is a MusicXML score"):
        seed_from_primer(mislabelled)


def test_an_infill_source_may_be_a_score():
    piece = read_source(MUSICXML)
    midi = read_source(FIXTURES / "little.mid")
    assert piece.time_signatures == midi.time_signatures == [(0, 4, 4)]
    assert np.array_equal(piece.states.keys, midi.states.keys)
    assert read_source(MUSICXML.read_bytes(), name="little.musicxml").time_signatures == [(0, 4, 4)]


def test_uploads_take_scores_and_say_what_is_accepted():
    assert check_upload(MUSICXML.read_bytes(), "little.musicxml")
    assert check_upload(mxl_bytes(), "little.mxl")
    assert check_upload((FIXTURES / "little.krn").read_bytes(), "little.krn")
    with pytest.raises(UploadError, match="neither a MIDI file nor a score.*MusicXML"):
        check_upload(b"just some words" * 10, "notes.txt")


def test_generate_continues_a_score_and_names_model_and_seed(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "a.mid"
    assert main(["generate", "--model", str(tiny_model_dir), "--primer", str(MUSICXML), "--primer-states", "8",
                 "--steps", "12", "--no-include-seed", "--random-seed", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    name = tiny_model_dir.name
    assert said.startswith(f"ChopinBot ({name}): 12 new states")
    assert "after the seed primer little.musicxml (D minor, last 8 states) (read, not in the output)" in said
    assert "0-state" not in said and out.read_bytes()[:4] == b"MThd"


def test_generate_with_a_score_and_infill(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "i.mid"
    assert main(["generate", "--model", str(tiny_model_dir), "--primer", str(FIXTURES / "little.krn"),
                 "--infill", "2b", "3b", "--infill-candidates", "2", "--random-seed", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"ChopinBot ({tiny_model_dir.name}): infilled" in said and "little.krn" in said


# --- labels ------------------------------------------------------------------------------------------


def test_pictures_and_summaries_name_the_model_and_the_style(tiny_model_dir):
    assert maker_label("piano-controls", "schubert") == "ChopinBot (piano-controls, style schubert)"
    assert maker_label(None, None) == "ChopinBot"
    assert model_name(tiny_model_dir) == tiny_model_dir.name and model_name(None) == SHIPPED_MODEL
    model = load_model(tiny_model_dir)
    res = generate(model, seed_from_test(0, 8), GenerateConfig(steps=6, random_seed=0))
    assert res.summary().startswith("6 new states") and "after the seed chpn-" in res.summary()
    res.label = maker_label("mine", "schubert")
    assert res.figure().axes[0].get_title().startswith("ChopinBot (mine, style schubert) in ")
    assert res.summary().startswith("ChopinBot (mine, style schubert): 6 new states")


# --- prepare: composer styles and empty splits ------------------------------------------------------------


@pytest.mark.parametrize("name, style", [
    ("Franz Schubert", "schubert"), ("F. Schubert", "schubert"), ("schubert", "schubert"),
    ("Schubert, Franz", "schubert"), ("Frédéric Chopin", "chopin"), ("J. S. Bach", "bach"),
    ("Burgmüller", "burgmueller"), ("Rachmaninov", "rachmaninoff"),
    ("Clara Schumann", None), ("C. P. E. Bach", None), ("Fanny Hensel", None),
])
def test_a_composer_name_finds_its_existing_style(name, style):
    assert match_style(name) == style


def test_prepare_maps_a_known_composer_and_tells_a_new_one(tmp_path, capsys):
    folder = tmp_path / "scores"
    folder.mkdir()
    shutil.copy(MUSICXML, folder)
    assert main(["prepare", str(folder), "--composer", "F. Schubert", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "is the existing style 'schubert'" in said and "piano-controls" in said
    manifest = Dataset(tmp_path / "a").manifest
    assert manifest["files"][0]["composer"] == "Schubert"
    assert manifest["composer_style"]["style"] == "schubert" and manifest["composer_style"]["existing"]
    assert main(["prepare", str(folder), "--composer", "Clara Schumann", "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "NEW style 'clara-schumann'" in said and "zero weights" in said
    assert resolve_composer("Clara Schumann").composer == "Clara Schumann"


def test_prepare_warns_of_an_empty_split_and_says_how_to_fix_it(tmp_path, capsys):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("D780-moment-musical-4.mxl", "D780-moment-musical-5.mxl"):
        shutil.copy(EXAMPLES / name, folder)
    assert main(["prepare", str(folder), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "warning: the valid split is empty (1 train, 0 valid, 1 test pieces)" in said
    assert "splits.json" in said and "more files" in said
    assert Dataset(tmp_path / "ds").manifest["warnings"] == [said.split("warning: ")[1].strip()]
    (folder / "splits.json").write_text(json.dumps({"valid": ["D780-moment-musical-4.mxl"]}))
    assert main(["prepare", str(folder), "--out", str(tmp_path / "ds2"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "warning: the test split is empty" in said and "valid split is empty" not in said
    assert split_warnings({s: {"pieces": 1} for s in ("train", "valid", "test")}) == []


# --- seeds from a dataset's own held-out pieces ------------------------------------------------------------


def test_seeds_come_from_a_datasets_own_held_out_pieces(tiny_dataset_dir):
    ds = Dataset(tiny_dataset_dir)
    held = set(ds.pieces("test")) or set(ds.pieces("valid"))
    infos = list_seeds(8, seeds_from=tiny_dataset_dir)
    assert infos and {i.piece for i in infos} <= held
    seed = seed_from_dataset(tiny_dataset_dir, 1, 8)
    assert seed.source.startswith(f"{tiny_dataset_dir.name}/{infos[1].piece} ({infos[1].key}) @ state")
    assert len(seed.states) == 8 and seed.states.onsets.any()
    with pytest.raises(ConfigError, match="out of range"):
        seed_from_dataset(tiny_dataset_dir, len(infos), 8)


def test_seeds_from_a_folder_that_is_no_dataset_or_holds_nothing_out(tmp_path, tiny_dataset_dir):
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        list_seeds(seeds_from=tmp_path)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(MUSICXML, folder)
    prepare([folder], tmp_path / "ds", progress=False)  # one piece: all train
    with pytest.raises(DatasetError, match="holds no held-out piece.*splits.json"):
        list_seeds(seeds_from=tmp_path / "ds")


def test_a_model_knows_its_own_dataset(tiny_model_dir, tiny_dataset_dir):
    meta = read_config(tiny_model_dir / "best")
    assert model_dataset(meta).resolve() == tiny_dataset_dir.resolve()
    assert model_dataset(dict(meta, dataset_sha256="another")) is None  # prepared again since
    assert model_dataset({}) is None


def test_generate_and_seeds_take_seeds_from_a_dataset(tiny_model_dir, tiny_dataset_dir, tmp_path, capsys):
    assert main(["seeds", "--seeds-from", str(tiny_dataset_dir), "--seed-len", "8"]) == 0
    said = capsys.readouterr().out
    assert f"from {tiny_dataset_dir.name}'s held-out pieces" in said and "--seeds-from" in said
    assert main(["generate", "--model", str(tiny_model_dir), "--seeds-from", str(tiny_dataset_dir),
                 "--seed-index", "0", "--seed-len", "8", "--steps", "6", "--out", str(tmp_path / "s.mid")]) == 0
    assert f"after the seed {tiny_dataset_dir.name}/" in capsys.readouterr().out
    assert main(["generate", "--primer", str(MUSICXML), "--seeds-from", str(tiny_dataset_dir),
                 "--out", str(tmp_path / "x.mid")]) == 2


# --- the app: statistics beside the style's own real music ------------------------------------------------


def test_statistics_are_set_beside_the_real_music_of_the_style(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from chopinbot.app.reference import style_reference
    from chopinbot.app.registry import load_entry

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("D760-wanderer-fantasy-3.mxl", "D780-moment-musical-4.mxl", "D780-moment-musical-5.mxl"):
        shutil.copy(EXAMPLES / name, folder)
    (folder / "splits.json").write_text(json.dumps({"valid": ["D780-moment-musical-4.mxl"],
                                                    "test": ["D780-moment-musical-5.mxl"]}))
    prepare([folder], tmp_path / "ds", progress=False, composer="Franz Schubert")
    entry = replace(load_entry(tiny_model_dir / "best", "tiny"), dataset=tmp_path / "ds")
    own = style_reference(entry, "schubert", 64)
    assert own.label == "real Schubert" and own.source == "the held-out pieces of ds, the model's own data"
    assert len(own.stats) >= 30  # 2,515 held-out states in 64-state excerpts
    bundled = style_reference(entry, "borodin", 64)  # none of the model's own data: the bundled corpus's
    assert bundled.label == "real Borodin" and bundled.source == "the bundled corpus's held-out pieces"
    assert len(bundled.stats) >= 3 and bundled.stats != own.stats
    assert style_reference(entry, "chopin", 64).label == "real Chopin"  # none of the model's own data is Chopin's
    assert style_reference(replace(entry, dataset=None), None, 64).label == "real Chopin"
