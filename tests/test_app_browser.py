"""The web app in a real browser: `chopinbot app` on a free loopback port,
driven by Playwright's Python package with the system Chromium
(/usr/bin/chromium; no browser is ever downloaded).

Open the page, press Generate, wait for the audio player (and for the audio to
be loaded) and the download buttons, download the MIDI, change key and tempo,
upload a primer; then, in a second visitor's page, set every steering control
(density, register, loudness, key hold) and see each reach the piece's measured
figures, and ask for 4 variations and wait for their 4 players; in a third, compose
in a form (ABA) and infill a span of an uploaded piece.  Screenshots go
under the test's output folder.  With ``CHOPINBOT_APP_SCREENSHOT=path.png`` the
first result's screenshot is also copied there (that is how docs/app.png is made).

The app runs on the tiny test model with controls, or on ``CHOPINBOT_APP_TEST_MODEL``
(e.g. a real model with controls, to measure); ``CHOPINBOT_LATENCY_REPEATS=N`` times
N more clicks for one piece and for 4 variations.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from chopinbot.render.audio import audio_available
from conftest import CORPUS, make_midi
from test_app_load import start_app, stop_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
pytest.importorskip("streamlit", reason="Streamlit is not installed")


@pytest.fixture(scope="module")
def app_url(tiny_controls_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser_app")
    model = os.environ.get("CHOPINBOT_APP_TEST_MODEL") or tiny_controls_model_dir  # a real model, to measure
    proc, url = start_app(Path(model), out / "server.log")
    try:
        yield url, out / "server.log"
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _wait_for_result(page, timeout_ms=90_000):
    page.wait_for_selector("audio, [data-testid='stAlertContentInfo']:has-text('No audio player')",
                           timeout=timeout_ms)
    page.wait_for_selector("[data-testid='stDownloadButton']", timeout=timeout_ms)


def _click_to_audio(page, button, has_audio: bool, players: int = 1) -> float:
    """Seconds from clicking Generate until the new pieces' audio is playable: the
    browser shows ``players`` players, each with a new WAV whose metadata it has
    loaded and whose length it knows (>= 30 s)."""
    before = page.evaluate("() => [...document.querySelectorAll('audio')].map(a => a.src)")
    t0 = time.perf_counter()
    button.click()
    if has_audio:
        page.wait_for_function(
            "([prev, n]) => { const all = [...document.querySelectorAll('audio')];"
            " return all.length === n && all.every(a => !prev.includes(a.src) && a.readyState >= 1"
            " && a.duration >= 30); }", arg=[before, players], timeout=120_000)
    _wait_for_result(page)
    return time.perf_counter() - t0


def _latency_repeats(log_path) -> int:
    """CHOPINBOT_LATENCY_REPEATS; when measuring, first let the server finish its one-off
    warm-up (~8 s of CPU), as a visitor who takes a few seconds to read the page would."""
    repeats = int(os.environ.get("CHOPINBOT_LATENCY_REPEATS", "0"))
    if repeats:
        deadline = time.time() + 120
        while "warmed up" not in log_path.read_text() and time.time() < deadline:
            time.sleep(0.2)
    return repeats


def _caption_with(page, text):
    return page.locator("[data-testid='stCaptionContainer']", has_text=text).first.inner_text()


def test_generate_listen_download_change_key_tempo_and_upload(app_url, browser, tmp_path):
    url, log_path = app_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    seen_hosts = set()
    page.on("request", lambda req: seen_hosts.add(req.url.split("/")[2]))
    page.goto(url)
    button = page.get_by_role("button", name="Generate", exact=True)
    button.wait_for(timeout=90_000)
    page.get_by_text("Choose a seed and the settings on the left").wait_for(timeout=90_000)

    has_audio = audio_available()[0]
    repeats = _latency_repeats(log_path)
    times = [_click_to_audio(page, button, has_audio)]
    for _ in range(repeats):
        times.append(_click_to_audio(page, button, has_audio))
    text = ", ".join(f"{t:.2f}" for t in times)
    print(f"\nclick -> playable 30-second piece (s): {text}; median {sorted(times)[len(times) // 2]:.2f}")
    (tmp_path / "click_to_audio_seconds.txt").write_text(text + "\n")
    caption = _caption_with(page, " · random seed ")
    assert " · random seed " in caption and " · model " in caption
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("CHOPINBOT_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CHOPINBOT_APP_SCREENSHOT"])

    # download the whole piece's MIDI
    with page.expect_download() as dl:
        page.get_by_role("button", name="MIDI: seed + generated").click()
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    assert saved.suffix == ".mid" and saved.read_bytes()[:4] == b"MThd"
    if has_audio:
        assert page.get_by_role("button", name="Audio (WAV)").count() == 1

    # change the key (to one of the seed's mode) and the tempo
    subheader = page.locator("h3", has_text=" bpm").first.inner_text()
    mode = "minor" if "minor" in subheader else "major"
    target = f"F {mode}" if not subheader.startswith(f"F {mode}") else f"G {mode}"
    page.locator("[data-testid='stSelectbox']", has_text="Key").click()
    page.keyboard.type(target)  # the list is long and virtualised: filter it by typing
    page.get_by_role("option", name=target, exact=True).click()
    tempo = page.get_by_role("spinbutton", name="Tempo (bpm)")
    tempo.fill("84")
    tempo.press("Enter")
    page.wait_for_timeout(500)
    button.click()
    page.locator("h3", has_text=f"{target}, 84 bpm").wait_for(timeout=90_000)
    page.screenshot(path=str(tmp_path / "app-key-tempo.png"), full_page=True)

    # upload a primer
    page.get_by_text("my MIDI file or score", exact=True).click()
    notes = [(i * 0.5, i * 0.5 + 0.5, 62 + (i * 5) % 12) for i in range(32)]
    primer = make_midi(tmp_path / "my primer.mid", notes, sharps=2)
    page.locator("input[type='file']").set_input_files(str(primer))
    page.get_by_text("Using primer my primer.mid").wait_for(timeout=60_000)
    button.click()
    page.locator("[data-testid='stCaptionContainer']", has_text="seed: primer my primer.mid").wait_for(
        timeout=90_000)
    page.screenshot(path=str(tmp_path / "app-primer.png"), full_page=True)

    # a bad upload: a friendly message, no traceback
    bad = tmp_path / "not-midi.mid"
    bad.write_bytes(b"just some text, not MIDI" * 4)
    page.locator("input[type='file']").set_input_files(str(bad))
    page.get_by_text("is not a MIDI file").wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    page.close()

    assert seen_hosts <= {url.split("/")[2]}, f"the page fetched from other hosts: {seen_hosts}"
    log = log_path.read_text()
    assert "[session " in log and "] compose:" in log and "] done: piece" in log


def _measured(page, variation: int = 0) -> str:
    """The text of a piece's measured figures (density, register, loudness, key hold)."""
    return page.locator("[data-testid='stMarkdownContainer']", has_text="Measured (the new music)").nth(
        variation).inner_text()


def _fill_number(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(value)
    box.press("Enter")
    page.wait_for_timeout(400)  # the rerun that takes the value


def test_every_control_and_variations(app_url, browser, tmp_path):
    url, log_path = app_url
    page = browser.new_page(viewport={"width": 1600, "height": 1200})  # a second visitor
    page.goto(url)
    button = page.get_by_role("button", name="Generate", exact=True)
    button.wait_for(timeout=90_000)
    page.get_by_text("Choose a seed and the settings on the left").wait_for(timeout=90_000)
    has_audio = audio_available()[0]
    density = page.get_by_role("spinbutton", name="Density (notes per second)")
    if density.is_disabled():
        pytest.skip("the model under test has no controls (CHOPINBOT_APP_TEST_MODEL)")
    page.get_by_text("New random seed for each piece", exact=True).click()  # a fixed random seed: compare
    _fill_number(page, "Seconds of new music", "12")

    button.click()
    page.locator("h3", has_text="s of new music").wait_for(timeout=90_000)
    free = _measured(page)
    assert "density" in free and "asked" not in free

    # every steering control: density, register (narrowed from C3-C6 to G3-G5), loudness, key hold
    _fill_number(page, "Density (notes per second)", "12")
    page.get_by_text("Keep to a register", exact=True).click()
    register = page.locator("[data-testid='stSlider']", has_text="Register")
    register.wait_for(timeout=30_000)
    low, high = register.get_by_role("slider").all()
    low.focus()
    for _ in range(7):
        low.press("ArrowRight")
    high.focus()
    for _ in range(5):
        high.press("ArrowLeft")
    page.wait_for_timeout(400)
    page.get_by_role("combobox", name="Loudness").click()
    page.keyboard.type("ff")  # the list shows the options that match what is typed
    page.get_by_role("option", name="ff (velocity 74)").click()
    page.get_by_text("Stay in the key", exact=True).click()
    page.wait_for_timeout(500)
    button.click()
    page.locator("[data-testid='stMarkdownContainer']", has_text="(asked ff)").wait_for(timeout=90_000)
    steered = _measured(page)
    assert "(asked 12)" in steered and "(asked G3–G5)" in steered and "(asked ff)" in steered, steered
    inside = re.search(r"([\d.]+)% of the notes inside", steered)
    assert inside and float(inside.group(1)) >= 90.0, steered  # confined (a note held from the seed may lie out)
    log = log_path.read_text()
    assert "controls: density 12/s, register 55-79, loudness ff, key not held" in log
    page.screenshot(path=str(tmp_path / "app-steered.png"), full_page=True)

    # 4 variations of 30 s, side by side, each with its player and its figures (a fresh random seed at each
    # click: each click's pieces are new ones)
    page.get_by_text("New random seed for each piece", exact=True).click()
    _fill_number(page, "Seconds of new music", "30")
    _fill_number(page, "Variations", "4")
    repeats = _latency_repeats(log_path)
    times = [_click_to_audio(page, button, has_audio, players=4 if has_audio else 0) for _ in range(1 + repeats)]
    text = ", ".join(f"{t:.2f}" for t in times)
    print(f"\nclick -> 4 playable 30-second variations (s): {text}; median {sorted(times)[len(times) // 2]:.2f}")
    (tmp_path / "click_to_audio_4_variations_seconds.txt").write_text(text + "\n")
    page.locator("h4", has_text="Variation 4").wait_for(timeout=30_000)
    assert page.locator("h4", has_text="Variation").count() == 4
    if has_audio:
        assert page.locator("audio").count() == 4
    assert page.locator("[data-testid='stMarkdownContainer']", has_text="Measured (the new music)").count() == 4
    assert page.get_by_role("button", name="MIDI: seed + generated").count() == 4
    figures = {_measured(page, i) for i in range(4)}
    assert len(figures) > 1 and all("(asked ff)" in f for f in figures)  # different pieces, the same request
    page.screenshot(path=str(tmp_path / "app-variations.png"), full_page=True)
    if os.environ.get("CHOPINBOT_APP_VARIATIONS_SCREENSHOT"):
        shutil.copyfile(tmp_path / "app-variations.png", os.environ["CHOPINBOT_APP_VARIATIONS_SCREENSHOT"])
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()


def test_form_and_infill(app_url, browser, tmp_path):
    url, _ = app_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100})  # a third visitor
    page.goto(url)
    button = page.get_by_role("button", name="Generate", exact=True)
    button.wait_for(timeout=90_000)
    # A fixed seed window: a visitor's is random, and a slow seed (32 bpm) needs more than the default
    # 30 s for three sections of 8 beats, which the page rightly refuses ("ask for 68 s or more").
    _fill_number(page, "Seed window", "0")
    page.get_by_role("combobox", name="Form").click()
    page.keyboard.type("ABA")
    page.get_by_role("option", name="ABA", exact=True).click()
    page.wait_for_timeout(500)
    button.click()
    page.locator("[data-testid='stMarkdownContainer']", has_text="Form ABA: A 0.0-").wait_for(timeout=90_000)

    page.get_by_text("my MIDI file or score", exact=True).click()
    page.get_by_text("Compose a span of it anew (infill)", exact=True).click()
    page.locator("input[type='file']").set_input_files(str(CORPUS / "chpn-p20.mid"))
    page.get_by_text("The piece ends at").wait_for(timeout=60_000)
    assert page.get_by_role("spinbutton", name="Seconds of new music").is_disabled()
    _fill_number(page, "Span start (s)", "4")
    _fill_number(page, "Span end (s)", "9")
    _fill_number(page, "Candidates", "4")
    button.click()
    page.locator("h3", has_text="composed anew").wait_for(timeout=90_000)
    page.get_by_role("button", name="MIDI: the whole piece, span replaced").wait_for(timeout=30_000)
    summary = page.locator("[data-testid='stMarkdownContainer']", has_text="Summary.").first.inner_text()
    assert "infilled" in summary and "the best of 4 candidates" in summary, summary
    if audio_available()[0]:
        assert page.locator("audio").count() == 1
    page.screenshot(path=str(tmp_path / "app-infill.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()


def test_score_shown_and_downloaded(app_url, browser, tmp_path):
    """The engraved first page appears under the piece (after its player), and the MusicXML and the
    PDF download; the player still comes first."""
    url, _ = app_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.goto(url)
    button = page.get_by_role("button", name="Generate", exact=True)
    button.wait_for(timeout=90_000)
    page.get_by_text("Choose a seed and the settings on the left").wait_for(timeout=90_000)
    seconds = _click_to_audio(page, button, audio_available()[0])
    t0 = time.perf_counter()
    page.get_by_text("The score's first page").wait_for(timeout=90_000)
    print(f"\nclick -> audio {seconds:.2f} s; the score {time.perf_counter() - t0:.2f} s later")
    # the engraved page: an A4-shaped picture (the piano roll and the guide are wide), loaded
    page.wait_for_function("() => [...document.querySelectorAll(\"[data-testid='stImage'] img\")].some(i => "
                           "i.complete && i.naturalWidth >= 800 && i.naturalHeight > 1.3 * i.naturalWidth)",
                           timeout=60_000)
    page.screenshot(path=str(tmp_path / "app-score.png"), full_page=True)
    for label, suffix, head in (("Score: MusicXML", ".musicxml", b"<?xml"), ("Score: PDF", ".pdf", b"%PDF")):
        with page.expect_download() as dl:
            page.get_by_role("button", name=label).click()
        saved = tmp_path / dl.value.suggested_filename
        dl.value.save_as(saved)
        assert saved.suffix == suffix and saved.read_bytes().startswith(head), saved
    xml = (tmp_path / next(p.name for p in tmp_path.iterdir() if p.suffix == ".musicxml")).read_text()
    assert "<score-partwise" in xml and "<staves>2</staves>" in xml and "ChopinBot" in xml
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()
