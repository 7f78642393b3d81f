"""The verovio side of reading a score, run in a child process by :mod:`chopinbot.music.scores`.

verovio (the Music Encoding Initiative's engraving library, C++ with Python bindings) reads
MusicXML and Humdrum and writes MIDI, but it can take its whole process down: it aborts on a
Humdrum spine used after its end (tests/fixtures/scores/verovio_crash.krn) and on a corrupt
``.mxl``, and with its default options ``renderToMIDI`` segfaults on 2 of the 377 NIFC Humdrum
files.  So it runs here, one child per score (``python -m chopinbot.music.verovio_worker
humdrum|musicxml`` with the score as UTF-8 on stdin): a crash costs that file, never the
caller.  The child writes one JSON object to stdout, ``{"midi": <base64 MIDI>,
"key_signatures": [[quarter, sharps, minor], ...], "measures": [quarter, ...]}`` (where each bar starts)
or ``{"error": <reason>}``; verovio's own
error lines go to stderr.

Only verovio and the standard library are imported here, so a child starts in ~30 ms.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import verovio

FORMATS = ("humdrum", "musicxml")
NAMES = {"humdrum": "Humdrum", "musicxml": "MusicXML"}  # as the messages name them
MEI = "{http://www.music-encoding.org/ns/mei}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


def parse_sig(sig: str) -> int | None:
    """Sharps (negative: flats) of an MEI ``sig`` value: '0', '3s', '2f'; None for 'mixed' and the like."""
    if sig == "0":
        return 0
    if len(sig) >= 2 and sig[:-1].isdigit() and sig[-1] in "sf":
        return int(sig[:-1]) * (1 if sig[-1] == "s" else -1)
    return None


def signature_of(element: ET.Element) -> tuple[int, int] | None:
    """(sharps, minor) if ``element`` states a key signature, else None.

    MEI says it as ``<keySig sig="2s" mode="minor"/>``, as a ``<keySig>`` of ``<keyAccid>``
    children (verovio writes that when a change cancels accidentals: naturals, then the new
    sharps), or as a ``keysig`` attribute of ``<scoreDef>``/``<staffDef>``.  ``minor`` is 1 only
    where the score names the mode (the opening key, mostly); 0 otherwise, as in MIDI files.
    """
    tag = element.tag.removeprefix(MEI)
    if tag == "keySig":
        sig, mode = element.get("sig"), element.get("mode")
        if sig is not None:
            sharps = parse_sig(sig)
        else:
            accids = [a.get("accid") for a in element if a.tag == f"{MEI}keyAccid"]
            n_sharp, n_flat = accids.count("s"), accids.count("f")
            sharps = None if n_sharp and n_flat else n_sharp - n_flat  # naturals (accid="n") only cancel
    elif tag in ("scoreDef", "staffDef") and element.get("keysig"):
        sharps, mode = parse_sig(element.get("keysig", "")), element.get("key.mode")
    else:
        return None
    if sharps is None or abs(sharps) > 7:  # e.g. NIFC op. 56 no. 1 writes 'fn-', which verovio reads as F-flat
        return None
    return sharps, int(mode == "minor")


def key_signatures(mei: str, timemap: list[dict]) -> list[list[float | int]]:
    """Every key signature of the score, as ``[quarter, sharps, minor]`` where it takes effect.

    A signature applies from the next element, in document order, that the timemap times: the
    next measure when it stands in a ``<scoreDef>`` between measures, the next note or rest of
    its layer when it changes mid-measure.  Where several take effect at one time (one per
    staff, or a cancelling signature and then the new one), the last in the document is kept.
    """
    times: dict[str, float] = {}
    for entry in timemap:
        for ident in [entry.get("measureOn"), *entry.get("on", []), *entry.get("restsOn", [])]:
            if ident:
                times.setdefault(ident, float(entry["qstamp"]))
    found: dict[float, tuple[int, int]] = {}
    pending: list[tuple[int, int]] = []
    for element in ET.fromstring(mei).iter():  # document order
        signature = signature_of(element)
        if signature is not None:
            pending.append(signature)
        elif pending and element.get(XML_ID) in times:
            found[times[element.get(XML_ID, "")]] = pending[-1]
            pending = []
    return [[quarter, sharps, minor] for quarter, (sharps, minor) in sorted(found.items())]


def convert(text: str, input_format: str) -> dict:
    """The JSON reply for one score: its MIDI (base64) and key signatures, or an error."""
    toolkit = verovio.toolkit()
    # expandNever: verovio follows only the first of a score's expansion lists (Humdrum '*>[A,A,B]'),
    # so NIFC op. 18 came out as its first section (408 of 3,565 notes): every bar once, as written.
    # breaks none: one long system, no page layout to compute; the MIDI is the same.
    toolkit.setOptions({"expandNever": True, "breaks": "none"})
    toolkit.setInputFrom(input_format)
    if not toolkit.loadData(text):  # renderToMIDI after a failed load segfaults: stop here
        return {"error": f"verovio cannot read this {NAMES[input_format]} score"}
    midi = toolkit.renderToMIDI()
    if not midi:
        return {"error": f"verovio made no MIDI from this {NAMES[input_format]} score"}
    timemap = toolkit.renderToTimemap({"includeMeasures": True, "includeRests": True})
    measures = sorted({float(e["qstamp"]) for e in timemap if e.get("measureOn")})
    return {"midi": midi, "key_signatures": key_signatures(toolkit.getMEI(), timemap), "measures": measures}


def die_with_parent() -> None:
    """Linux: this child is killed when the process that started it dies.  A caller killed at a time
    limit (a fuzzer's worker, a server's request) would otherwise leave verovio grinding on an
    absurd score for minutes, with no one to read its answer.  Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took hold
        os._exit(1)


def main() -> int:
    die_with_parent()
    if len(sys.argv) != 2 or sys.argv[1] not in FORMATS:
        print(f"usage: python -m chopinbot.music.verovio_worker {'|'.join(FORMATS)} < score", file=sys.stderr)
        return 2
    verovio.enableLog(verovio.LOG_ERROR)  # its layout warnings are noise; errors explain a failure
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    try:
        reply = convert(text, sys.argv[1])
    except ET.ParseError as e:  # verovio's own MEI unreadable: a verovio bug, reported as such
        reply = {"error": f"verovio wrote MEI that cannot be parsed, from this {NAMES[sys.argv[1]]} score ({e})"}
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
