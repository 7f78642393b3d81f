"""MusicXML mutators of the score fuzzer (:mod:`chopinbot_tools.fuzz_scores`): they work on the
text, with regular expressions, so that they apply to files already broken by another mutation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

# --------------------------------------------------------------------------------------------
# MusicXML mutators: (rng, bytes) -> bytes, on the text (so they work on broken files too)
# --------------------------------------------------------------------------------------------

ScoreMutator = Callable[[random.Random, bytes], bytes]
_TAG = re.compile(rb"<([A-Za-z][\w.-]*)((?:\s+[\w.:-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))+)\s*/?>")
_ATTR = re.compile(rb"\s+([\w.:-]+)\s*=\s*(\"[^\"]*\"|'[^']*')")


def _pick(rng: random.Random, matches: list):
    return rng.choice(matches) if matches else None


def _set_values(rng: random.Random, xml: bytes, element: str, values: list[bytes], every: float = 0.2) -> bytes:
    """Replace the text of some ``<element>`` (one, or each with probability ``every``)."""
    hits = list(re.finditer(rb"<" + element.encode() + rb">([^<]*)</", xml))
    if not hits:
        return xml
    chosen = hits if rng.random() < 0.3 else [rng.choice(hits)]
    out, pos = [], 0
    for m in chosen:
        if len(chosen) > 1 and rng.random() > every:
            continue
        out += [xml[pos : m.start(1)], rng.choice(values)]
        pos = m.end(1)
    return b"".join(out) + xml[pos:]


def x_attr_delete(rng, xml):
    hits = list(_ATTR.finditer(xml))
    m = _pick(rng, hits)
    return xml if m is None else xml[: m.start()] + xml[m.end() :]


def x_attr_duplicate(rng, xml):
    m = _pick(rng, list(_ATTR.finditer(xml)))
    return xml if m is None else xml[: m.end()] + m.group(0) + xml[m.end() :]


def x_attr_huge(rng, xml):
    m = _pick(rng, list(_ATTR.finditer(xml)))
    if m is None:
        return xml
    value = rng.choice([b"9" * 400, b"x" * 1_000_000, b"-" + b"9" * 40, b"&#0;", b"1e309", b"\xff\xfe"])
    return xml[: m.start(2)] + b'"' + value + b'"' + xml[m.end(2) :]


def x_divisions(rng, xml):
    return _set_values(rng, xml, "divisions", [b"0", b"-1", b"-480", b"1", b"2147483648", b"1e9", b"0.0001",
                                                b"abc", b"", b"nan", b"99999999999999999999"], every=1.0)


def x_durations(rng, xml):
    return _set_values(rng, xml, "duration", [b"0", b"-1", b"-100000", b"1099511627776", b"2147483647",
                                               b"1e300", b"nan", b"inf", b"", b"0.5", b"3/2"])


def x_tuplets(rng, xml):
    values = [b"0", b"1", b"-3", b"1000000", b"2147483647", b"7", b"x"]
    xml = _set_values(rng, xml, "actual-notes", values, every=0.5)
    xml = _set_values(rng, xml, "normal-notes", values, every=0.5)
    if b"<time-modification>" not in xml and rng.random() < 0.5:  # put one on some notes
        tm = b"<time-modification><actual-notes>" + rng.choice(values) + b"</actual-notes><normal-notes>" + \
            rng.choice(values) + b"</normal-notes></time-modification>"
        xml = re.sub(rb"(</type>)", rb"\1" + tm, xml, count=rng.choice([1, 50, 0]))
    return xml


def x_pitches(rng, xml):
    xml = _set_values(rng, xml, "octave", [b"-100", b"100", b"10", b"-1", b"2147483648", b""])
    xml = _set_values(rng, xml, "alter", [b"1000", b"-1000", b"0.5", b"nan", b"1e308"])
    return _set_values(rng, xml, "step", [b"H", b"c", b"", b"CC"])


def x_signatures(rng, xml):
    xml = _set_values(rng, xml, "fifths", [b"1000", b"-128", b"8", b"-8", b"x"], every=1.0)
    xml = _set_values(rng, xml, "beats", [b"0", b"-4", b"3+abc", b"1000000", b""], every=1.0)
    xml = _set_values(rng, xml, "beat-type", [b"0", b"3", b"-8", b"1048576"], every=1.0)
    return _set_values(rng, xml, "staves", [b"0", b"1000000", b"-1", b"64"], every=1.0)


def x_tempo(rng, xml):
    value = rng.choice([b"0", b"-5", b"1e308", b"nan", b"0.000001", b"100000000"])
    if b"<sound " in xml and rng.random() < 0.5:
        return re.sub(rb'tempo="[^"]*"', b'tempo="' + value + b'"', xml)
    return re.sub(rb"(<measure\b[^>]*>)", rb'\1<sound tempo="' + value + b'"/>', xml, count=rng.choice([1, 0]))


def x_backup_forward(rng, xml):
    el = rng.choice([b"backup", b"forward"])
    val = rng.choice([b"1000000000", b"-1000000000", b"0", b"2147483647"])
    return re.sub(rb"(</note>)", rb"\1<" + el + b"><duration>" + val + b"</duration></" + el + b">", xml,
                  count=rng.choice([1, 20]))


def x_voice_staff(rng, xml):
    xml = _set_values(rng, xml, "voice", [b"-1", b"0", b"1000000", b"x"])
    return _set_values(rng, xml, "staff", [b"0", b"999", b"-2", b"2147483648"])


def _elements(xml: bytes, names: tuple[bytes, ...]) -> list[re.Match]:
    return [m for n in names for m in re.finditer(rb"<" + n + rb"\b[^>]*>.*?</" + n + rb">", xml, re.S)][:5000]


def x_element_delete(rng, xml):
    m = _pick(rng, _elements(xml, (b"note", b"measure", b"attributes", b"pitch", b"part-list", b"score-part",
                                   b"part", b"divisions", b"duration", b"time", b"key")))
    return xml if m is None else xml[: m.start()] + xml[m.end() :]


def x_element_multiply(rng, xml):
    """A note, chord member, measure or part repeated up to thousands of times (files up to ~20 MB)."""
    m = _pick(rng, _elements(xml, (b"note", b"measure", b"part")))
    if m is None:
        return xml
    times = rng.choice([2, 10, 100, 1000, 5000])
    times = max(1, min(times, 20_000_000 // max(1, len(m.group(0)))))
    piece = m.group(0)
    if piece.startswith(b"<note") and rng.random() < 0.5 and b"<chord/>" not in piece:
        piece = piece.replace(b"<pitch>", b"<chord/><pitch>", 1)  # a chord of `times` notes
    return xml[: m.end()] + piece * times + xml[m.end() :]


def x_part_ids(rng, xml):
    ids = re.findall(rb'<score-part id="([^"]*)"', xml)
    if not ids:
        return xml
    kind = rng.choice(["missing", "duplicate", "empty", "renamed"])
    old = rng.choice(ids)
    if kind == "missing":
        return xml.replace(b'<part id="' + old + b'"', b'<part id="nowhere"', 1)
    if kind == "duplicate":
        return re.sub(rb'<part id="[^"]*"', b'<part id="' + old + b'"', xml)
    if kind == "empty":
        return xml.replace(b'id="' + old + b'"', b'id=""')
    return xml.replace(b'<score-part id="' + old + b'"', b'<score-part id="P999"', 1)


def x_root(rng, xml):
    new = rng.choice([b"score-timewise", b"opus", b"mei", b"score-partwise", b"html"])
    return re.sub(rb"(</?)score-(?:partwise|timewise)\b", rb"\1" + new, xml)


BOMB_DTD = b'<!DOCTYPE score-partwise [<!ENTITY a "' + b"ha" * 5 + b'">' + b"".join(
    b"<!ENTITY " + bytes([98 + i]) + b' "' + (b"&" + bytes([97 + i]) + b";") * 10 + b'">' for i in range(9)) + b"]>"
ENTITY_DTDS = {
    "billion_laughs": (BOMB_DTD, b"&j;"),
    "quadratic": (b'<!DOCTYPE score-partwise [<!ENTITY q "' + b"Q" * 50_000 + b'">]>', b"&q;" * 20_000),
    "external_file": (b'<!DOCTYPE score-partwise [<!ENTITY x SYSTEM "file:///etc/passwd">]>', b"&x;"),
    "external_url": (b'<!DOCTYPE score-partwise [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>', b"&x;"),
    "parameter": (b'<!DOCTYPE score-partwise [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>', b""),
    "external_dtd": (b'<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" '
                     b'"http://127.0.0.1:9/partwise.dtd">', b""),
    "undeclared": (b"", b"&nbsp;"),
}


def x_entities(rng, xml, kind: str | None = None):
    """An entity bomb, an external entity or DTD, or an undeclared entity, used in the title or a note."""
    dtd, use = ENTITY_DTDS[kind or rng.choice(sorted(ENTITY_DTDS))]
    xml = re.sub(rb"<!DOCTYPE[^>]*>", b"", xml, count=1)
    root = re.search(rb"<score-(?:partwise|timewise)", xml)
    at = root.start() if root else 0
    xml = xml[:at] + dtd + xml[at:]
    m = re.search(rb"<(work-title|movement-title|words|creator[^>]*)>", xml)
    if m:
        return xml[: m.end()] + use + xml[m.end() :]
    end = xml.rfind(b"</")
    if end <= 0:
        return xml + use
    return xml[:end] + b"<credit><credit-words>" + use + b"</credit-words></credit>" + xml[end:]


def x_encoding(rng, xml):
    kind = rng.choice(["latin1", "utf16_lie", "utf16", "unknown", "bom", "ebcdic"])
    body = re.sub(rb"^<\?xml[^>]*\?>", b"", xml)
    if kind == "latin1":
        return b'<?xml version="1.0" encoding="ISO-8859-1"?>' + body.replace(b"<work-title>", b"<work-title>\xe9\xe8")
    if kind == "utf16_lie":
        return b'<?xml version="1.0" encoding="UTF-16"?>' + body
    if kind == "utf16":
        return ('<?xml version="1.0" encoding="UTF-16"?>' + body.decode("utf-8", "replace")).encode("utf-16")
    if kind == "unknown":
        return b'<?xml version="1.0" encoding="x-chopin-7"?>' + body
    if kind == "bom":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + xml
    return b'<?xml version="1.0" encoding="cp500"?>' + body


def x_deep_nesting(rng, xml):
    depth = rng.choice([1000, 100_000, 1_000_000])
    nest = b"<direction>" * depth + b"</direction>" * depth
    m = re.search(rb"</note>", xml)
    return xml[: m.end()] + nest + xml[m.end() :] if m else nest + xml


def x_many_parts(rng, xml):
    n = rng.choice([50, 500, 5000])
    parts = b"".join(b'<score-part id="F%d"><part-name>p</part-name></score-part>' % i for i in range(n))
    bodies = b"".join(b'<part id="F%d"><measure number="1"><note><rest/><duration>1</duration></note></measure>'
                      b"</part>" % i for i in range(n))
    xml = xml.replace(b"</part-list>", parts + b"</part-list>", 1)
    end = xml.rfind(b"</score-")
    return xml[:end] + bodies + xml[end:] if end > 0 else xml


XML_MUTATORS: dict[str, ScoreMutator] = {
    "x_attr_delete": x_attr_delete, "x_attr_duplicate": x_attr_duplicate, "x_attr_huge": x_attr_huge,
    "x_divisions": x_divisions, "x_durations": x_durations, "x_tuplets": x_tuplets, "x_pitches": x_pitches,
    "x_signatures": x_signatures, "x_tempo": x_tempo, "x_backup_forward": x_backup_forward,
    "x_voice_staff": x_voice_staff, "x_element_delete": x_element_delete, "x_element_multiply": x_element_multiply,
    "x_part_ids": x_part_ids, "x_root": x_root, "x_entities": x_entities, "x_encoding": x_encoding,
    "x_deep_nesting": x_deep_nesting, "x_many_parts": x_many_parts,
}
