"""Many visitors at once: `chopinbot app` on loopback, 20 concurrent sessions,
each pressing Generate for a 30-second piece.

Each session is a real Streamlit client speaking the app's own protocol (the
websocket at /_stcore/stream carrying BackMsg/ForwardMsg protobufs, as the
browser does), so every request takes exactly the path a browser's does:
script run -> ComposePool -> compose -> audio/picture -> elements sent back;
the audio element's URL is then fetched over HTTP like a browser's player.
A browser per session would cost far more CPU than the server under test.

Checks: no session fails; each sees its own result (its own random seed
and tempo in the page, a distinct piece fingerprint and audio file); sessions
beyond the pool's queue cap are refused at once with the busy message naming
the place they would have had; an over-long request in the same crowd (300 s,
past the server's 120-s cap) is refused with the server's message and never
composed; the server log has one "done" line per piece composed.  Printed:
latency (press -> audio element) p50/p95/max, the failures, how many waiting
visitors were shown their queue position, and the page process's CPU.  The
visitors press Generate after the server's warm-up.  Bounded: a 240 s deadline.
``CHOPINBOT_LOAD_SESSIONS`` changes the number of sessions (20);
``CHOPINBOT_APP_TEST_MODEL`` a model folder, or ``shipped``, instead of the tiny
test model (issue 28's measurement: docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ClientState_pb2 import ClientState  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates  # noqa: E402

from chopinbot.app.settings import DEFAULT_MAX_QUEUE, MAX_REQUEST_SECONDS  # noqa: E402

pytestmark = pytest.mark.slow

SESSIONS = int(os.environ.get("CHOPINBOT_LOAD_SESSIONS", "20"))
QUEUE_CAP = DEFAULT_MAX_QUEUE
DEADLINE_S = 240.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model_dir: Path, log_path: Path, extra_env: dict | None = None, port: int | None = None):
    """`chopinbot app` on a free loopback port; returns (process, url). Waits for the health check."""
    port = port or free_port()
    env = dict(os.environ, CHOPINBOT_MODELS_DIR=str(log_path.parent / "no-runs"), **(extra_env or {}))
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "chopinbot", "app", "--host", "127.0.0.1", "--port", str(port),
                             "--model", str(model_dir)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_app(proc)
            raise AssertionError("the app did not answer its health check within 90 s")
        time.sleep(0.3)


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Client:
    """A minimal Streamlit client: run the script with given widget states, collect the elements."""

    def __init__(self, base_url: str) -> None:
        from websockets.sync import client as ws_client

        self.base = base_url
        self.ws = ws_client.connect(base_url.replace("http://", "ws://") + "/_stcore/stream",
                                    subprotocols=["streamlit"], max_size=None, open_timeout=60).__enter__()
        self.widgets: dict[str, object] = {}  # label -> element proto of the widget

    def run(self, states: list[WidgetState], timeout: float, until=None) -> tuple[list, float | None]:
        """Rerun the script; returns the new elements and when ``until(element)`` first held (s)."""
        msg = BackMsg()
        msg.rerun_script.CopyFrom(ClientState(widget_states=WidgetStates(widgets=states)))
        t0 = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        elements, hit = [], None
        end = t0 + timeout
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(self.ws.recv(timeout=max(0.1, end - time.perf_counter())))
            kind = fm.WhichOneof("type")
            if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                el = fm.delta.new_element
                elements.append(el)
                widget = el.WhichOneof("type")
                label = getattr(getattr(el, widget), "label", None) if widget else None
                if label:
                    self.widgets[label] = getattr(el, widget)
                if hit is None and until is not None and until(el):
                    hit = time.perf_counter() - t0
            elif kind == "script_finished":
                if fm.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    return elements, hit

    def state(self, label: str, **value) -> WidgetState:
        ws = WidgetState(id=self.widgets[label].id)
        for k, v in value.items():
            setattr(ws, k, v)
        return ws

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(self.base + "/" + url.lstrip("/"), timeout=60) as r:
            return r.read()

    def close(self) -> None:
        self.ws.__exit__(None, None, None)


def _texts(elements) -> list[str]:
    out = []
    for el in elements:
        kind = el.WhichOneof("type")
        if kind in ("markdown", "heading"):
            out.append(getattr(el, kind).body)
        elif kind == "alert":
            out.append(el.alert.body)
    return out


def _session(url: str, i: int, seconds: float, barrier: threading.Barrier, results: list) -> None:
    out = {"i": i, "ok": False}
    results[i] = out
    client = None
    try:
        client = Client(url)
        client.run([], timeout=DEADLINE_S)  # the page, as a browser's first visit
        bpm, seed = 60.0 + 4 * i, 1000 + i
        states = [client.state("New random seed for each piece", bool_value=False),
                  client.state("Random seed", int_value=seed),
                  client.state("Tempo (bpm)", double_value=bpm),
                  client.state("Seconds of new music", double_value=seconds),
                  client.state("Generate", trigger_value=True)]
        barrier.wait(timeout=DEADLINE_S)
        elements, latency = client.run(states, timeout=DEADLINE_S, until=lambda el: el.WhichOneof("type") == "audio")
        texts = _texts(elements)
        out["texts"] = texts
        out["latency"] = latency
        caption = next((t for t in texts if t.startswith("piece ")), "")
        m = re.match(r"piece ([0-9a-f]{12}) · random seed (\d+)", caption)
        heading = next((t for t in texts if " bpm — " in t), "")
        out["told_position"] = any("in the queue" in t for t in texts)
        out["busy"] = next((t for t in texts if t.startswith("The server is busy:") and "as many as it queues" in t),
                           None)
        if seconds > MAX_REQUEST_SECONDS:  # refused by the server's cap, with its message, and never composed
            out["composed"] = bool(caption)
            out["ok"] = any(f"at most {MAX_REQUEST_SECONDS:g} s" in t for t in texts) and not caption
            return
        if out["busy"]:  # over the queue's cap: refused at once, told where it would stand
            out["ok"] = "would be number" in out["busy"]
            return
        audio = [el.audio.url for el in elements if el.WhichOneof("type") == "audio"]
        out.update(fingerprint=m.group(1) if m else None, seed=int(m.group(2)) if m else None, heading=heading,
                   audio_url=audio[0] if audio else None)
        wav = client.fetch(audio[0]) if audio else b""
        out["wav_bytes"] = len(wav)
        out["ok"] = bool(m and out["seed"] == seed and f"{bpm:.0f} bpm" in heading and wav[:4] == b"RIFF")
    except Exception as e:  # reported by the test
        out["error"] = repr(e)
    finally:
        if client is not None:
            client.close()


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the server process so far: its own, and its finished children's (FluidSynth)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _wait_for_warm_up(url: str, log_path: Path, timeout: float = 120.0) -> None:
    """Visitors arrive after the server's one-off warm-up (as in tests/test_app_browser.py's measurements),
    which the first visit starts."""
    first = Client(url)
    first.run([], timeout=DEADLINE_S)
    first.close()
    end = time.monotonic() + timeout
    while time.monotonic() < end and "warmed up" not in log_path.read_text(errors="replace"):
        time.sleep(0.3)


def test_many_concurrent_sessions(tiny_model_dir, tmp_path):
    from chopinbot.render.audio import audio_available

    if not audio_available()[0]:
        pytest.skip("FluidSynth or a GM soundfont is missing: " + audio_available()[1])
    model = os.environ.get("CHOPINBOT_APP_TEST_MODEL")  # a real model (a folder, or "shipped"), to measure
    if model == "shipped":
        from chopinbot.constants import SHIPPED_MODEL_DIR

        model = SHIPPED_MODEL_DIR
    proc, url = start_app(Path(model) if model else tiny_model_dir, tmp_path / "server.log")
    try:
        _wait_for_warm_up(url, tmp_path / "server.log")
        n = SESSIONS + 1  # plus one visitor asking for too much
        results: list = [None] * n
        at_press: list = []  # the page process's CPU when every session has its page and presses Generate
        barrier = threading.Barrier(n, action=lambda: at_press.append(_cpu_seconds(proc.pid)))
        over_long = MAX_REQUEST_SECONDS + 180.0
        threads = [threading.Thread(target=_session, args=(url, i, over_long if i == SESSIONS else 30.0, barrier,
                                                          results), daemon=True) for i in range(n)]
        load_before = os.getloadavg()[0]
        cpu0 = _cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, DEADLINE_S - (time.perf_counter() - t0)))
        wall = time.perf_counter() - t0
        cpu1 = _cpu_seconds(proc.pid)  # the page's process alone: its worker processes are still running
        assert not any(t.is_alive() for t in threads), "sessions still running at the deadline"
    finally:
        stop_app(proc)
    failed = [r for r in results[:SESSIONS] if not r["ok"]]
    assert not failed, json.dumps(failed[:3], indent=1)[:3000]
    assert results[SESSIONS]["ok"], results[SESSIONS]  # the over-long request: refused with the cap's message
    busy = [r for r in results[:SESSIONS] if r.get("busy")]
    pieces = [r for r in results[:SESSIONS] if not r.get("busy")]
    assert len(busy) <= max(0, SESSIONS + 1 - QUEUE_CAP), "refused as busy below the queue's cap"
    fingerprints = {r["fingerprint"] for r in pieces}
    assert len(fingerprints) == len(pieces), "two sessions were shown the same piece"
    assert len({r["audio_url"] for r in pieces}) == len(pieces)
    lat = sorted(r["latency"] for r in pieces)
    p50, p95 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    log = (tmp_path / "server.log").read_text()
    done = set(re.findall(r"\[session (\w+)\] done: piece", log))
    assert len(done) == len(pieces)
    server = [float(x) for x in re.findall(r"done: piece .*? in ([\d.]+) s \(queued", log)]
    queued = [float(x) for x in re.findall(r"\(queued ([\d.]+) s", log)]
    summary = {"sessions": SESSIONS, "served": len(pieces), "refused_busy_told_position": len(busy),
               "waited_told_position": sum(r["told_position"] for r in pieces), "failures": len(failed),
               "over_long": "composed" if results[SESSIONS]["composed"] else "refused with the message",
               "p50_s": round(p50, 2), "p95_s": round(p95, 2), "max_s": round(lat[-1], 2),
               "wall_s": round(wall, 1),
               "server_compose_max_s": round(max(server), 2), "server_queued_max_s": round(max(queued), 2),
               "page_cpu_first_visits_s": round(at_press[0][0] - cpu0[0], 2),
               "page_cpu_after_press_s": round(cpu1[0] - at_press[0][0], 2),
               "load_average_before": round(load_before, 2),
               "mean_wav_mb": round(sum(r["wav_bytes"] for r in pieces) / len(pieces) / 1e6, 2)}
    (tmp_path / "load.json").write_text(json.dumps(summary, indent=1))
    print("\nload test:", json.dumps(summary))
