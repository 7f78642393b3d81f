"""The corpus: which files to prepare, and what each one is (work, composer, source).

A *source* is a folder of MIDI files (or scores).  A folder may describe its
files in a ``corpus.tsv`` (tab-separated, header
``file work composer source title``; ``file`` relative to the folder, so a
source can have a folder per composer); every file it lists is used, and
only those.  A folder without one is a plain folder of the user's music: each
file is its own work (named by its file name), by the ``composer`` the user
names (``chopinbot prepare --composer``), from a source named after the
folder.  A file given on its own is what its folder's table says, if it has one.

The package ships three sources (``BUNDLED_SOURCES``):

* ``chopin``: the 48 Chopin pieces of piano-midi.de, performed (rubato, dynamics);
* ``nifc``: one first edition of each of 187 Chopin works from the Fryderyk
  Chopin Institute, scores (no dynamics, no rubato);
* ``piano-midi.de``: the other 24 composers of piano-midi.de (289 files),
  performed like the Chopin ones.

and names three corpora made of them (``CORPORA``).  Which files are the
same work is decided by the notes as well (:mod:`chopinbot.dataset.works`);
the bundled corpora's splits, by work, are committed in ``data/splits.json``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chopinbot.constants import PACKAGE_DIR
from chopinbot.errors import DatasetError
from chopinbot.music.scores import NOTE_SUFFIXES

CORPUS_TABLE = "corpus.tsv"
TABLE_COLUMNS = ("file", "work", "composer", "source", "title")
DATA_DIR = PACKAGE_DIR / "data"
BUNDLED_SOURCES: dict[str, Path] = {
    "chopin": DATA_DIR / "chopin",
    "nifc": DATA_DIR / "chopin_nifc",
    "piano-midi.de": DATA_DIR / "piano_midi_de",
}
CORPORA: dict[str, tuple[str, ...]] = {
    "chopin48": ("chopin",),  # the 48 performed pieces alone (the corpus of the first models)
    "chopin": ("chopin", "nifc"),  # every Chopin work we have
    "piano": ("chopin", "nifc", "piano-midi.de"),  # all the piano music: 25 composers
}
COMMITTED_SPLITS = DATA_DIR / "splits.json"
UNKNOWN_COMPOSER = "unknown"


@dataclass(frozen=True)
class CorpusFile:
    """One input file and what it is."""

    path: Path
    work: str  # the work it declares (its folder's table, or its name); the notes may merge works
    composer: str  # e.g. "Chopin"
    source: str  # e.g. "piano-midi.de", "nifc", or the user's folder name
    title: str = ""

    @property
    def name(self) -> str:
        """The file's name: its key in the dataset's manifest."""
        return self.path.name


def style_name(composer: str) -> str:
    """The style a composer's music trains: the name in lower case, words joined by "-" (e.g. "chopin")."""
    return "-".join(composer.strip().lower().split()) or UNKNOWN_COMPOSER


def corpus_sources(name: str) -> list[Path]:
    """The folders of a named corpus (``CORPORA``)."""
    if name not in CORPORA:
        raise DatasetError(f"unknown corpus {name!r}; the bundled corpora are {', '.join(CORPORA)}")
    return [BUNDLED_SOURCES[s] for s in CORPORA[name]]


def read_table(folder: Path) -> list[CorpusFile]:
    """The files a folder's ``corpus.tsv`` lists."""
    path = folder / CORPUS_TABLE
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in TABLE_COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (need {' '.join(TABLE_COLUMNS)})")
        out = []
        for i, row in enumerate(reader, start=2):
            file = folder / (row["file"] or "")
            if not row["file"] or not file.is_file():
                raise DatasetError(f"{path}, line {i}: no such file {row['file']!r}")
            if not row["work"] or not row["composer"]:
                raise DatasetError(f"{path}, line {i}: the work and the composer must be given")
            out.append(CorpusFile(file, row["work"], row["composer"], row["source"] or folder.name,
                                  row.get("title") or ""))
    return out


def list_corpus(inputs: Iterable[str | os.PathLike], composer: str | None = None) -> list[CorpusFile]:
    """Every input file with its work, composer and source (see the module
    docstring).  ``composer`` names the composer of files no table describes
    (default ``unknown``).  Raises :class:`DatasetError` for a missing path, a
    bad table, or two files with the same name (the manifest's key)."""
    plain = composer or UNKNOWN_COMPOSER
    out: list[CorpusFile] = []
    tables: dict[Path, dict[Path, CorpusFile]] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            if (p / CORPUS_TABLE).is_file():
                out += read_table(p)
            else:
                out += [CorpusFile(q, q.name, plain, p.name) for q in sorted(p.iterdir())
                        if q.suffix.lower() in NOTE_SUFFIXES and q.is_file()]
        elif p.is_file():
            described = _described(p.parent, tables)
            out.append(described.get(p.resolve()) or CorpusFile(p, p.name, plain, p.parent.name))
        elif p.exists():
            raise DatasetError(f"{p}: not a regular file or folder")
        else:
            raise DatasetError(f"{p}: no such file or folder")
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"two input files share a name: {', '.join(dup[:5])}")
    return out


def _described(folder: Path, tables: dict[Path, dict[Path, CorpusFile]]) -> dict[Path, CorpusFile]:
    """The files a folder's table describes, by resolved path (read once per folder; {} without a table):
    a file given on its own is still the work its folder's table says."""
    if folder not in tables:
        rows = read_table(folder) if (folder / CORPUS_TABLE).is_file() else []
        tables[folder] = {r.path.resolve(): r for r in rows}
    return tables[folder]


def is_bundled(files: Iterable[CorpusFile]) -> bool:
    """Whether every file comes from the package's own sources (whose splits are committed)."""
    roots = [p.resolve() for p in BUNDLED_SOURCES.values()]
    return all(any(f.path.resolve().is_relative_to(r) for r in roots) for f in files)
