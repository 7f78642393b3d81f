"""The score fuzzer's inputs (:mod:`chopinbot_tools.fuzz_scores`): a corpus of real scores and the
mutators that make them hostile.

Corpus: the six Schubert ``.mxl`` files of ``examples/schubert-scores`` (as they are, their
MusicXML unzipped, and excerpts of their first bars as MusicXML and re-zipped ``.mxl``), the
hand-written fixtures of ``tests/fixtures/scores`` and Humdrum ``**kern`` scores synthesized
here (the NIFC Humdrum editions are bundled as MIDI only).  Mutators work on bytes (truncation,
bit flips, random bytes), on MusicXML text (attributes deleted, duplicated or made huge;
``<divisions>`` 0, negative durations, absurd tuplets, pitches, keys and tempos; elements
deleted or multiplied; entity bombs and external entities; lying encodings; deep nesting), on
``.mxl`` archives (zip bombs, bad CRCs, encryption flags, unknown compression, container.xml
pointing nowhere or at ``../``) and on Humdrum (thousands of spines, megabyte records, broken
spine splits and merges, absurd durations and signatures, 100,000-line files).
"""

from __future__ import annotations

import functools
import io
import random
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chopinbot_tools.fuzz_mutate import m_flip_bits, m_insert_delete, m_random_bytes, m_truncate
from chopinbot_tools.fuzz_score_xml import BOMB_DTD, XML_MUTATORS, ScoreMutator

REPO = Path(__file__).resolve().parents[2]
SCHUBERT_DIR = REPO / "examples" / "schubert-scores"
FIXTURES_DIR = REPO / "tests" / "fixtures" / "scores"
SUFFIXES = (".musicxml", ".xml", ".mxl", ".krn")


@dataclass
class ScoreCase:
    """One input: the score's bytes, its suffix and the name an upload would carry."""

    index: int
    name: str  # what was done, e.g. "D780-5.excerpt8.musicxml+x_divisions+truncate"
    score: bytes
    suffix: str
    upload_name: str  # the name seed_from_primer is given ("" = no suffix: the content is sniffed)
    large: bool = False

    @property
    def data(self) -> bytes:
        """What a worker receives: suffix, upload name and the bytes (see ``fuzz_scores.split_payload``)."""
        return self.suffix.encode() + b"\0" + self.upload_name.encode() + b"\0" + self.score

    file_bytes = property(lambda self: self.score)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def zip_mxl(xml: bytes, member: str = "score.musicxml", container: bytes | None = None,
            method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An .mxl archive holding ``xml`` (and a container.xml naming it, unless one is given)."""
    if container is None:
        container = (b'<?xml version="1.0" encoding="UTF-8"?><container><rootfiles><rootfile full-path="'
                     + member.encode() + b'" media-type="application/vnd.recordare.musicxml+xml"/>'
                     b"</rootfiles></container>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("META-INF/container.xml", container)
        z.writestr(member, xml)
    return buf.getvalue()


def excerpt(xml: bytes, measures: int) -> bytes:
    """The first ``measures`` bars of every part (text surgery, so the file stays as written)."""
    out, pos = [], 0
    for part in re.finditer(rb"<part\s[^>]*>(.*?)</part>", xml, re.S):
        out.append(xml[pos : part.start(1)])
        bars = list(re.finditer(rb"<measure\b.*?</measure>", part.group(1), re.S))[:measures]
        out.append(b"\n".join(m.group(0) for m in bars))
        pos = part.end(1)
    out.append(xml[pos:])
    return b"".join(out)


def synth_kern(rng: random.Random, bars: int, spines: int = 2) -> bytes:
    """A Humdrum **kern score of ``bars`` 4/4 bars: chords, rests, ties, dotted and triplet notes."""
    keys = ["*k[]", "*k[f#]", "*k[b-e-a-]", "*k[f#c#g#d#]"]
    lines = ["!!!COM: ChopinBot fuzzer", "\t".join(["**kern"] * spines),
             "\t".join(f"*staff{spines - i}" for i in range(spines)),
             "\t".join(["*clefF4"] + ["*clefG2"] * (spines - 1)), "\t".join([rng.choice(keys)] * spines),
             "\t".join(["*M4/4"] * spines), "\t".join(["*MM96"] * spines)]
    names = ["C", "D", "E", "F", "G", "A", "B"]

    def pitch(low: bool) -> str:
        n = rng.choice(names)
        return rng.choice([n, n + n]) if low else rng.choice([n.lower(), n.lower() * 2, n.lower() * 3])

    for bar in range(1, bars + 1):
        lines.append("\t".join([f"={bar}"] * spines))
        # each bar: the same rhythm in every spine (8 eighths, a half + quarter triplets, ...)
        rhythm = rng.choice([["8"] * 8, ["2", "12", "12", "12", "4"], ["4.", "8", "2"], ["1"], ["16"] * 16])
        for dur in rhythm:
            tokens = []
            for s in range(spines):
                if rng.random() < 0.1:
                    tokens.append(dur + "r")
                else:
                    size = rng.choice([1, 1, 2, 3])
                    chord = [dur + pitch(s == 0) + rng.choice(["", "", "#", "-"]) for _ in range(size)]
                    tokens.append(" ".join(chord))
            lines.append("\t".join(tokens))
    lines += ["\t".join(["=="] * spines), "\t".join(["*-"] * spines)]
    return ("\n".join(lines) + "\n").encode()


def load_score_corpus() -> list[tuple[str, str, bytes]]:
    """(label, suffix, bytes) for every seed score; the same list on every run."""
    corpus: list[tuple[str, str, bytes]] = []
    for f in sorted(SCHUBERT_DIR.glob("*.mxl")):
        raw = f.read_bytes()
        stem = f.stem
        corpus.append((f.name, ".mxl", raw))
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            xml = z.read(next(n for n in z.namelist() if not n.startswith("META-INF/")))
        corpus.append((stem + ".musicxml", ".musicxml", xml))
        for bars in (4, 16):
            ex = excerpt(xml, bars)
            corpus.append((f"{stem}.excerpt{bars}.musicxml", ".musicxml", ex))
            corpus.append((f"{stem}.excerpt{bars}.mxl", ".mxl", zip_mxl(ex)))
    for f in sorted(FIXTURES_DIR.glob("*")):
        if f.suffix in SUFFIXES:
            corpus.append((f.name, f.suffix, f.read_bytes()))
    rng = random.Random("chopinbot-fuzz-scores-corpus")
    for bars, spines in ((4, 2), (16, 2), (32, 3), (64, 2)):
        corpus.append((f"synth{bars}x{spines}.krn", ".krn", synth_kern(rng, bars, spines)))
    if not any(s == ".mxl" for _, s, _ in corpus):
        raise FileNotFoundError(f"no .mxl scores in {SCHUBERT_DIR}")
    return corpus


def is_full_score(label: str) -> bool:
    """A whole Schubert movement (0.3-1.6 s of verovio per read): picked less often, it costs most."""
    return label.startswith("D") and ".excerpt" not in label


# --------------------------------------------------------------------------------------------
# .mxl mutators: (rng, archive bytes) -> bytes
# --------------------------------------------------------------------------------------------


def _inner(mxl: bytes) -> tuple[str, bytes]:
    """(member name, MusicXML) of an archive, or a tiny score when it cannot be read."""
    try:
        with zipfile.ZipFile(io.BytesIO(mxl)) as z:
            name = next(n for n in z.namelist() if not n.startswith("META-INF/"))
            if z.getinfo(name).file_size > 20_000_000:  # a bomb already
                raise ValueError
            return name, z.read(name)
    except Exception:  # noqa: BLE001 -- an already broken archive: start from a small score
        return "score.musicxml", (FIXTURES_DIR / "little.musicxml").read_bytes()


def z_rezip(rng, mxl):
    """The score inside mutated by a MusicXML mutator, zipped again (a valid archive, a hostile score)."""
    name, xml = _inner(mxl)
    m = rng.choice(sorted(XML_MUTATORS))
    return zip_mxl(XML_MUTATORS[m](rng, xml), name)


def z_bomb(rng, mxl):
    """A member that inflates to 60-200 MB of zeros (deflate compresses ~1000:1), or one whose
    declared size (1 KB) hides 60 MB; in the score, in container.xml or beside them."""
    kind = rng.choice(["score", "container", "extra", "lying_size"])
    return _bomb(kind, rng.choice([60, 200]), "score.musicxml")


@functools.lru_cache(maxsize=64)
def _bomb(kind: str, mb: int, name: str) -> bytes:
    """Made once per run and kind (compressing 200 MB takes a second)."""
    xml = (FIXTURES_DIR / "little.musicxml").read_bytes()
    if kind == "container":
        return zip_mxl(xml, name, container=b"<container>" + b" " * (mb << 20) + b"</container>")
    zeros = b"\0" * (mb << 20) if kind != "lying_size" else b"<a/>" + b" " * 60_000_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/container.xml", b'<container><rootfiles><rootfile full-path="' + name.encode()
                   + b'"/></rootfiles></container>')
        z.writestr(name, zeros if kind in ("score", "lying_size") else xml)
        if kind == "extra":
            z.writestr("padding.bin", zeros)
    data = buf.getvalue()
    if kind == "lying_size":  # the central directory says 1 KB, the member inflates to 60 MB
        data = _patch_sizes(data, name.encode(), 1024)
    return data


def _patch_sizes(data: bytes, name: bytes, size: int) -> bytes:
    """Overwrite the uncompressed size of member ``name`` in its local and central headers."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := b.find(sig, pos)) >= 0:
            nlen_at = 26 if sig == b"PK\x03\x04" else 28
            start = pos + (30 if sig == b"PK\x03\x04" else 46)
            (nlen,) = struct.unpack("<H", b[pos + nlen_at : pos + nlen_at + 2])
            if bytes(b[start : start + nlen]) == name:
                b[pos + off : pos + off + 4] = struct.pack("<I", size)
            pos += 4
    return bytes(b)


def z_container(rng, mxl):
    name, xml = _inner(mxl)
    target = rng.choice([b"missing.musicxml", b"../../etc/passwd", b"/etc/passwd", b"META-INF/", b"",
                         b"META-INF/container.xml"])
    kind = rng.choice(["target", "bomb", "external", "garbage", "two", "none"])
    if kind == "target":
        container = b'<container><rootfiles><rootfile full-path="' + target + b'"/></rootfiles></container>'
    elif kind == "bomb":
        container = BOMB_DTD.replace(b"score-partwise", b"container") + b"<container>&j;</container>"
    elif kind == "external":
        container = (b'<!DOCTYPE container [<!ENTITY x SYSTEM "file:///etc/passwd">]><container><rootfiles>'
                     b'<rootfile full-path="&x;"/></rootfiles></container>')
    elif kind == "garbage":
        container = bytes(rng.getrandbits(8) for _ in range(100))
    elif kind == "two":
        container = (b'<container><rootfiles><rootfile full-path="META-INF/container.xml"/><rootfile full-path="'
                     + name.encode() + b'"/></rootfiles></container>')
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("readme.txt", b"no score here")
        return buf.getvalue()
    return zip_mxl(xml, name, container=container)


def z_headers(rng, mxl):
    """Flags and fields of the zip headers: encrypted, unknown compression method, bad CRC, lying offsets."""
    b = bytearray(mxl)
    locals_ = [m.start() for m in re.finditer(rb"PK\x03\x04", mxl)]
    centrals = [m.start() for m in re.finditer(rb"PK\x01\x02", mxl)]
    kind = rng.choice(["encrypted", "method", "crc", "offset", "eocd", "count"])
    if kind == "encrypted":
        for p in centrals + locals_:
            b[p + (8 if p in centrals else 6)] |= 1
    elif kind == "method":
        value = struct.pack("<H", rng.choice([1, 6, 9, 12, 14, 95, 99, 0xFFFF]))
        for p in centrals:
            b[p + 10 : p + 12] = value
        for p in locals_:
            b[p + 8 : p + 10] = value
    elif kind == "crc" and centrals:
        p = rng.choice(centrals)
        b[p + 16 : p + 20] = struct.pack("<I", rng.getrandbits(32))
    elif kind == "offset" and centrals:
        p = rng.choice(centrals)
        b[p + 42 : p + 46] = struct.pack("<I", rng.choice([0, len(b), 0xFFFFFFFF, rng.randrange(len(b))]))
    elif kind in ("eocd", "count"):
        e = mxl.rfind(b"PK\x05\x06")
        if e >= 0:
            if kind == "count":
                b[e + 8 : e + 12] = struct.pack("<HH", 0xFFFF, 0xFFFF)
            else:
                b[e + 16 : e + 20] = struct.pack("<I", rng.choice([0, 0xFFFFFFFF, rng.randrange(len(b))]))
    return bytes(b)


def z_members(rng, mxl):
    """Odd archives: empty, stored, bz2/lzma, thousands of members, a MIDI file or an .mxl inside."""
    name, xml = _inner(mxl)
    kind = rng.choice(["empty", "stored", "bzip2", "lzma", "many", "midi", "nested"])
    if kind == "stored":
        return zip_mxl(xml, name, method=zipfile.ZIP_STORED)
    if kind in ("bzip2", "lzma"):
        return zip_mxl(xml, name, method=zipfile.ZIP_BZIP2 if kind == "bzip2" else zipfile.ZIP_LZMA)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if kind == "many":
            for i in range(rng.choice([1000, 10_000])):
                z.writestr(f"s{i}.xml", b"<a/>")
        elif kind == "midi":
            z.writestr("score.xml", (REPO / "tests" / "fixtures" / "scores" / "little.mid").read_bytes())
        elif kind == "nested":
            z.writestr("score.musicxml", mxl)
    return buf.getvalue()


MXL_MUTATORS: dict[str, ScoreMutator] = {
    "z_rezip": z_rezip, "z_bomb": z_bomb, "z_container": z_container, "z_headers": z_headers, "z_members": z_members,
}


# --------------------------------------------------------------------------------------------
# Humdrum mutators
# --------------------------------------------------------------------------------------------


def _lines(krn: bytes) -> list[bytes]:
    return krn.split(b"\n")


def _data_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line and not line.startswith((b"!", b"*", b"="))]


def k_huge_spines(rng, krn):
    n = rng.choice([100, 1000, 10_000])
    body = [b"\t".join([b"**kern"] * n), b"\t".join([b"*M4/4"] * n)]
    for _ in range(rng.choice([1, 8])):
        body.append(b"\t".join([rng.choice([b"4c", b"4r", b".", b"8dd#"]) for _ in range(n)]))
    body += [b"\t".join([b"*-"] * n)]
    return b"\n".join(body) + b"\n"


def k_huge_record(rng, krn):
    lines = _lines(krn)
    idx = _data_lines(lines)
    if not idx:
        return krn
    i = rng.choice(idx)
    cols = lines[i].split(b"\t")
    c = rng.randrange(len(cols))
    kind = rng.choice(["chord", "token", "comment"])
    if kind == "chord":  # one chord of thousands of notes
        notes = [b"c", b"C", b"ccc", b"CCC", b"d#"]
        cols[c] = b" ".join(b"4" + rng.choice(notes) for _ in range(rng.choice([100, 10_000])))
    elif kind == "token":
        cols[c] = b"4" + b"c" * rng.choice([50, 100_000]) + b"#" * 1000
    else:
        lines.insert(i, b"!!" + b"x" * rng.choice([100_000, 5_000_000]))
        return b"\n".join(lines)
    lines[i] = b"\t".join(cols)
    return b"\n".join(lines)


SPINE_OPS = [b"*^", b"*v", b"*x", b"*+", b"*-", b"**kern", b"**dynam", b"*", b"*v\t*v\t*v"]


def k_spine_ops(rng, krn):
    """Spine splits, joins, exchanges and ends where they do not fit (verovio aborted on one)."""
    lines = _lines(krn)
    for _ in range(rng.choice([1, 2, 5])):
        i = rng.randrange(len(lines) + 1)
        width = max(1, (lines[min(i, len(lines) - 1)].count(b"\t") + 1) if lines else 1)
        lines.insert(i, b"\t".join(rng.choice(SPINE_OPS) for _ in range(rng.choice([width, width, width + 1, 1]))))
    return b"\n".join(lines)


def k_durations(rng, krn):
    values = [b"0", b"00", b"000", b"1000000", b"4%9", b"4%0", b"0%0", b"-4", b"3.......", b"99999999999999999999"]
    return re.sub(rb"(?m)(^|\t| )(\d+\.*)(?=[a-gA-Gr])",
                  lambda m: m.group(1) + (rng.choice(values) if rng.random() < 0.2 else m.group(2)), krn)


def k_interpretations(rng, krn):
    kind = rng.choice(["no_end", "no_kern", "keysig", "meter", "tempo", "pitch", "tabs", "duplicate"])
    if kind == "no_end":
        return re.sub(rb"(?m)^\*-(\t\*-)*\n?", b"", krn)
    if kind == "no_kern":
        return krn.replace(b"**kern", rng.choice([b"**text", b"**kern2", b"**", b"**mens"]))
    if kind == "keysig":
        return re.sub(rb"\*k\[[^\]]*\]", rng.choice([b"*k[f#c#g#d#a#e#b#x#]", b"*k[" + b"b-" * 1000 + b"]", b"*k[",
                                                     b"*k[fn-cn-gn-]"]), krn)
    if kind == "meter":
        return krn.replace(b"*M4/4", rng.choice([b"*M0/0", b"*M4/0", b"*M1000000/1", b"*M-3/4", b"*M4/3%2"]))
    if kind == "tempo":
        return re.sub(rb"\*MM[\d.]+", rng.choice([b"*MM0", b"*MM-5", b"*MM1e9", b"*MM0.0001", b"*MMnan"]), krn)
    if kind == "pitch":
        return re.sub(rb"(\d)([a-gA-G])", lambda m: m.group(1) + (m.group(2) * rng.choice([1, 12, 40])), krn)
    if kind == "tabs":
        return krn.replace(b"\t", rng.choice([b"  ", b"\t\t", b" \t"]))
    lines = _lines(krn)
    i = rng.randrange(len(lines))
    return b"\n".join(lines[:i] + [lines[i]] * rng.choice([2, 1000]) + lines[i:])


def k_many_records(rng, krn):
    """Tens of thousands of notes or records (a score up to ~10 MB)."""
    n = rng.choice([20_000, 100_000, 210_000])
    kind = rng.choice(["notes", "bars", "nulls"])
    rec = {"notes": b"16c\t16e", "bars": b"=\t=", "nulls": b".\t."}[kind]
    return b"**kern\t**kern\n*M4/4\t*M4/4\n4c\t4e\n" + (rec + b"\n") * n + b"*-\t*-\n"


def k_lines(rng, krn):
    lines = _lines(krn)
    kind = rng.choice(["delete", "shuffle", "swap_columns"])
    if kind == "delete":
        for _ in range(rng.choice([1, 3, 10])):
            if lines:
                del lines[rng.randrange(len(lines))]
    elif kind == "shuffle":
        i = rng.randrange(len(lines))
        seg = lines[i : i + 20]
        rng.shuffle(seg)
        lines[i : i + 20] = seg
    else:
        lines = [b"\t".join(reversed(line.split(b"\t"))) if rng.random() < 0.3 else line for line in lines]
    return b"\n".join(lines)


KRN_MUTATORS: dict[str, ScoreMutator] = {
    "k_huge_spines": k_huge_spines, "k_huge_record": k_huge_record, "k_spine_ops": k_spine_ops,
    "k_durations": k_durations, "k_interpretations": k_interpretations, "k_many_records": k_many_records,
    "k_lines": k_lines,
}

# bytes mutators of the MIDI fuzzer, on any format
BYTE_MUTATORS: dict[str, ScoreMutator] = {
    "truncate": lambda rng, d: m_truncate(rng, d, []) if d else d,
    "flip_bits": lambda rng, d: m_flip_bits(rng, d, []),
    "random_bytes": lambda rng, d: m_random_bytes(rng, d, []),
    "insert_delete": lambda rng, d: m_insert_delete(rng, d, []),
}

LARGE_MUTATORS = {"x_element_multiply", "x_attr_huge", "x_deep_nesting", "x_many_parts", "z_bomb", "k_huge_spines",
                  "k_huge_record", "k_many_records"}


def mutators_for(suffix: str) -> dict[str, ScoreMutator]:
    own = {".krn": KRN_MUTATORS, ".mxl": MXL_MUTATORS}.get(suffix, XML_MUTATORS)
    return {**own, **BYTE_MUTATORS}


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

FULL_SCORE_FRACTION = 0.1  # whole movements: most of the time goes into reading them
UNNAMED_FRACTION = 0.1  # uploads without a suffix: the content is sniffed
SUFFIX_LIE_FRACTION = 0.03  # a score named as another kind (.krn holding MusicXML, ...)


def make_score_case(seed: int, index: int, corpus: list[tuple[str, str, bytes]], large: bool = True) -> ScoreCase:
    """Case ``index`` of run ``seed``: always the same bytes for the same corpus.  ``large=False``
    (quick in-process tests) never picks whole movements nor the mutators that make large files."""
    rng = random.Random(f"chopinbot-fuzz-scores:{seed}:{index}")
    fmt = rng.choice([".musicxml", ".mxl", ".krn"])  # a third each (.xml is read as .musicxml)
    full = [c for c in corpus if is_full_score(c[0]) and c[1] == fmt]
    small = [c for c in corpus if not is_full_score(c[0]) and c[1] == fmt]
    label, suffix, data = rng.choice(full if full and large and rng.random() < FULL_SCORE_FRACTION else small)
    names = []
    own = {k: v for k, v in mutators_for(suffix).items() if large or k not in LARGE_MUTATORS}
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        # the format's own mutators three times as often as the byte-level ones
        pool = [m for m in own if m not in BYTE_MUTATORS] * 3 + list(BYTE_MUTATORS)
        m = rng.choice(pool)
        data = own[m](rng, data)
        names.append(m)
    if rng.random() < SUFFIX_LIE_FRACTION:
        suffix = rng.choice([s for s in SUFFIXES if s != suffix])
        names.append(f"named{suffix}")
    upload = "" if rng.random() < UNNAMED_FRACTION else f"upload{suffix}"
    large = len(data) > 1_000_000 or any(n in LARGE_MUTATORS for n in names)
    return ScoreCase(index, "+".join([label] + names), data, suffix, upload, large)
