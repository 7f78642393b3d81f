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
import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chopinbot.constants import BUNDLED_MODELS_DIR, PACKAGE_DIR
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


# The bundled composers' given names (and other spellings of the surname), so that a name typed
# for `prepare --composer` finds the style the bundled corpus and models already have: "Franz
# Schubert", "F. Schubert", "Schubert, Franz" and "schubert" are all style "schubert", while
# "Clara Schumann" or "C. P. E. Bach" are not Robert Schumann or J. S. Bach.
GIVEN_NAMES: dict[str, tuple[str, ...]] = {
    "albeniz": ("isaac", "manuel", "francisco"), "bach": ("johann", "sebastian"), "balakirev": ("mily", "alexeyevich"),
    "beethoven": ("ludwig",), "borodin": ("alexander", "aleksandr", "porfiryevich"), "brahms": ("johannes",),
    "burgmueller": ("johann", "friedrich", "franz"), "chopin": ("frederic", "francois", "fryderyk", "franciszek"),
    "clementi": ("muzio",), "debussy": ("claude", "achille"), "godowsky": ("leopold",), "granados": ("enrique",),
    "grieg": ("edvard", "hagerup"), "haydn": ("franz", "joseph"), "liszt": ("franz", "ferenc"),
    "mendelssohn": ("felix", "jakob", "ludwig", "bartholdy"), "moszkowski": ("moritz",),
    "mozart": ("wolfgang", "amadeus", "johann", "chrysostom", "theophilus"),
    "mussorgsky": ("modest", "petrovich"), "rachmaninoff": ("sergei", "sergey", "vasilyevich"),
    "ravel": ("maurice", "joseph"), "schubert": ("franz", "peter"), "schumann": ("robert", "alexander"),
    "sinding": ("christian",), "tchaikovsky": ("pyotr", "peter", "piotr", "ilyich", "ilich"),
}
SURNAMES: dict[str, tuple[str, ...]] = {  # other spellings of a style's surname
    "albeniz": ("albeniz",), "burgmueller": ("burgmuller",), "chopin": ("szopen",),
    "mussorgsky": ("musorgsky", "moussorgsky"), "rachmaninoff": ("rachmaninov", "rachmaninow"),
    "tchaikovsky": ("tchaikowsky", "tschaikowsky", "chaikovsky", "tschaikowski"),
}
PARTICLES = ("van", "von", "de", "der", "di")


@dataclass(frozen=True)
class ComposerStyle:
    """What ``prepare --composer NAME`` makes of a name: the composer written in the manifest, its
    style, whether that style already exists (in the bundled corpus and models), and which bundled
    models know it."""

    given: str
    composer: str
    style: str
    existing: bool
    models: tuple[str, ...] = ()

    def describe(self) -> str:
        """What the name means for training, in one paragraph."""
        if self.existing:
            known = f"the bundled models {', '.join(self.models)}" if self.models else "the bundled corpus"
            return (f"composer {self.given!r} is the existing style {self.style!r} ({known} know it): its files "
                    f"are written as composer {self.composer!r}, and fine-tuning (`chopinbot train --init-from "
                    f"MODEL`) goes on training that style rather than making a new one; compose in it with "
                    f"`--style {self.style}`.")
        return (f"composer {self.given!r} is no style a bundled model knows: its files make a NEW style "
                f"{self.style!r}. A model fine-tuned from a bundled one gains that style with zero weights: it "
                f"composes exactly as the original until training moves it, and only these files train it. "
                f"If you meant a known composer, give their name (e.g. --composer schubert; `chopinbot styles` "
                f"lists them).")


def _words(name: str) -> list[str]:
    """A name's words, lower case, without accents or punctuation; "Last, First" turned round."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    if plain.count(",") == 1:
        last, first = plain.split(",")
        plain = f"{first} {last}"
    return [w for w in re.split(r"[^a-z]+", plain) if w]


@functools.lru_cache(maxsize=1)
def known_styles() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every style of the bundled corpora -> (its composer as the tables write it, the bundled
    models that have a style input for it)."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for folder in BUNDLED_SOURCES.values():
        if (folder / CORPUS_TABLE).is_file():
            with open(folder / CORPUS_TABLE, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    if row.get("composer"):
                        out.setdefault(style_name(row["composer"]), (row["composer"], ()))
    models: dict[str, list[str]] = {}
    for config in sorted(BUNDLED_MODELS_DIR.glob("*/config.json")):
        try:
            styles = json.loads(config.read_text()).get("model", {}).get("styles") or []
        except (OSError, ValueError, AttributeError):
            continue
        for style in styles:
            models.setdefault(style, []).append(config.parent.name)
    return {style: (composer, tuple(models.get(style, ()))) for style, (composer, _) in out.items()}


def match_style(name: str, styles: Iterable[str] | None = None) -> str | None:
    """The existing style a composer's name stands for (by its surname and given names or their
    initials, accents and case aside), or None: ``styles`` (default: :func:`known_styles`)."""
    styles = list(known_styles()) if styles is None else list(styles)
    exact = style_name(name)
    if exact in styles:
        return exact
    words = [w for w in _words(name) if w not in PARTICLES]
    found = []
    for style in styles:
        surnames = {style, *SURNAMES.get(style, ())}
        if not any(w in surnames for w in words):
            continue
        given = GIVEN_NAMES.get(style, ())
        others = [w for w in words if w not in surnames]
        if all(any(g == w or (len(w) == 1 and g.startswith(w)) for g in given) for w in others):
            found.append(style)
    return found[0] if len(found) == 1 else None


def resolve_composer(name: str) -> ComposerStyle:
    """``prepare --composer NAME``: an existing style when the name stands for one
    (:func:`match_style`), written as that style's composer; else a new style of the name."""
    style = match_style(name)
    if style is None:
        return ComposerStyle(name, name.strip(), style_name(name), False)
    composer, models = known_styles()[style]
    return ComposerStyle(name, composer, style, True, models)


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
