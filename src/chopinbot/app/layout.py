"""ChopinBot's web app (Streamlit): layout only.

Start it with ``chopinbot app`` (or ``make app``).  Every piece of logic lives
in the modules beside this one, which call the same library functions as the
CLI: models (:mod:`~chopinbot.app.registry`), seeds and uploads
(:mod:`~chopinbot.app.seeds`), requests, composing and results
(:mod:`~chopinbot.app.request`), the worker pool (:mod:`~chopinbot.app.pool`),
the real music each piece is set beside and the threshold guide (:mod:`~chopinbot.app.reference`),
session logs (:mod:`~chopinbot.app.sessions`), the controls' help texts
(:mod:`~chopinbot.app.help`).  Every control takes its range and default from
:mod:`chopinbot.app.settings` and the bounds beside
:class:`~chopinbot.compose.generate.GenerateConfig`, so none offers what the
server refuses.  Each visitor's choices and results live in
``st.session_state`` only; nothing is written to disk.
"""

from __future__ import annotations

import os

import numpy as np
import streamlit as st

from chopinbot.app import registry
from chopinbot.app.help import HELP
from chopinbot.app.pool import get_pool, in_background, queue_message, tune_for_serving, warm_up
from chopinbot.app.reference import threshold_guide_png
from chopinbot.app.registry import ModelEntry, list_models
from chopinbot.app.rendering import score_files
from chopinbot.app.request import ComposeRequest, ComposeResult, RequestRefused, describe_request, figures_lines
from chopinbot.app.seeds import UPLOAD_TYPES, infill_source, pick_random_seed, primer_seed, seed_infos
from chopinbot.app.sessions import configure_logging, new_session_id, session_log
from chopinbot.app.settings import (
    BPM_RANGE,
    DEFAULT_REGISTER,
    MAX_PRIMER_STATES,
    MAX_REQUEST_SECONDS,
    MAX_REQUEST_STATES,
    MAX_VARIATIONS,
    SERVE_ENV,
    UPLOAD_LIMIT_MB,
)
from chopinbot.compose.form import FORMS
from chopinbot.compose.generate import (
    DENSITY_RANGE,
    KEY_MIN_P_RANGE,
    MAX_SECONDS,
    MAX_STEPS,
    MIN_REGISTER_SPAN,
    TEMPERATURE_RANGE,
    THRESHOLD_RANGE,
    GenerateConfig,
)
from chopinbot.compose.infill import DEFAULT_CANDIDATES, MAX_CANDIDATES, PICTURE_MARGIN_BEATS
from chopinbot.constants import HIGHEST_PITCH, LOWEST_PITCH
from chopinbot.errors import ChopinBotError
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import ALL_KEYS, pitch_name

REQUEST_DEFAULTS = ComposeRequest()
GENERATE_DEFAULTS = GenerateConfig()

SEED_KEY_OPTION = "the seed's own key"
HELD_OUT_OPTION = "a held-out piece"
PRIMER_OPTION = "my MIDI file or score"
BUNDLED_SEEDS_OPTION = "the bundled Chopin test pieces"
MODEL_LOUDNESS_OPTION = "the model's choice"
FREE_FORM_OPTION = "free (a continuation)"
INFILL_NOTE = "An infill keeps the span's length and the piece's key and tempo: these do not apply."
NO_CONTROLS = ("This model has no controls: density, register, loudness and key hold steer a model trained "
               "with them (`chopinbot train --controls`). Choose such a model above to use them.")


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def load_entry(path: str, label: str) -> ModelEntry:
    return registry.load_entry(path, label)


def init_session() -> None:
    ss = st.session_state
    if "session_id" not in ss:
        ss.session_id = new_session_id()
        session_log(ss.session_id).info("session started")
    rng = np.random.default_rng()
    ss.setdefault("random_seed", int(rng.integers(0, 1_000_000)))
    ss.setdefault("fresh_seed", True)
    ss.setdefault("result", None)
    ss.setdefault("message", None)


def sidebar_controls(models: dict) -> tuple[ModelEntry, dict]:
    ss = st.session_state
    sb = st.sidebar
    sb.header("Controls")
    label = sb.selectbox("Model", list(models), key="model", help=HELP["model"])
    entry = load_entry(str(models[label]), label)
    if os.environ.get(SERVE_ENV) == "1":
        warm_up(entry, pool=get_pool())  # once per model, in the background (and in the pool's workers)
    sb.caption(entry.description)

    sb.subheader("Seed")
    source = sb.radio("Start from", [HELD_OUT_OPTION, PRIMER_OPTION], key="seed_source",
                      help=HELP["seed_source"], horizontal=True)
    own_seeds = False
    if entry.dataset is not None and source == HELD_OUT_OPTION:
        own = f"{entry.dataset.name}'s held-out pieces (the model's own data)"
        # first (the default) when the model composes in another style than Chopin's: a model fine-tuned on
        # a user's Schubert starts from the user's held-out Schubert
        options = [BUNDLED_SEEDS_OPTION, own]
        if entry.default_style not in (None, "chopin"):
            options.reverse()
        own_seeds = sb.radio("Held-out pieces from", options, key=f"seeds_from:{label}",
                             help=HELP["seeds_from"]) == own
    seeds_from = entry.dataset if own_seeds else None
    infos = seed_infos(entry, seeds_from)
    # The visitor's seed window lives in "seed_window" (kept across reruns, even
    # while the widget is hidden); the widget "seed_index" only edits it.
    if "seed_window" not in ss or not 0 <= ss.seed_window < len(infos):
        ss.seed_window = pick_random_seed(entry, seeds_from=seeds_from)
    primer, infill = None, {}
    if source == HELD_OUT_OPTION:
        ss.seed_index = ss.seed_window
        sb.number_input(f"Seed window (0–{len(infos) - 1})", min_value=0, max_value=len(infos) - 1, step=1,
                        key="seed_index", help=HELP["seed_index"], on_change=_copy_seed_index)
        sb.button("New random seed", key="new_seed", help=HELP["new_seed"], on_click=new_random_seed,
                  args=(entry, seeds_from))
        info = infos[ss.seed_window]
        sb.caption(f"{info.piece}, {info.key}, from state {info.position} ({info.seconds:.1f} s)")
    else:
        upload = sb.file_uploader("MIDI or score primer", type=UPLOAD_TYPES, key="primer", help=HELP["primer"],
                                  max_upload_size=UPLOAD_LIMIT_MB)
        infill_on = sb.checkbox("Compose a span of it anew (infill)", key="infill_on", help=HELP["infill"])
        sb.number_input("States of the primer to use", min_value=1, max_value=MAX_PRIMER_STATES,
                        value=REQUEST_DEFAULTS.primer_states, key="primer_states", help=HELP["primer_states"],
                        disabled=infill_on)
        if upload is not None:
            data = upload.getvalue()
            try:
                seed = primer_seed(data, upload.name, entry, int(ss.primer_states))
                primer = (data, upload.name)
                if not infill_on:  # an infill reads the whole piece, not its last states
                    sb.caption(f"Using {seed.source}.")
            except ChopinBotError as e:
                sb.error(str(e))
                if ss.get("logged_primer") != upload.file_id:  # once per upload, not on every rerun
                    ss.logged_primer = upload.file_id
                    session_log(ss.session_id).info("primer refused: %s", e)
        if infill_on:
            infill = infill_controls(entry, primer)

    sb.subheader("Length")
    if infill:
        sb.caption(INFILL_NOTE)
    unit = sb.radio("Measure in", ["seconds", "states"], key="length_unit", horizontal=True,
                    help=HELP["length_unit"], disabled=bool(infill))
    if unit == "seconds":
        # up to the library's own bound: the server's smaller cap refuses with a message (check_limits)
        length = sb.number_input("Seconds of new music", min_value=1.0, max_value=MAX_SECONDS,
                                 value=REQUEST_DEFAULTS.seconds, step=5.0, key="seconds", help=HELP["seconds"],
                                 disabled=bool(infill))
    else:
        length = sb.number_input("States of new music", min_value=1, max_value=MAX_STEPS,
                                 value=GENERATE_DEFAULTS.steps, step=16, key="states", help=HELP["states"],
                                 disabled=bool(infill))
    variations = variations_control(unit, float(length), disabled=bool(infill))
    form = sb.selectbox("Form", [FREE_FORM_OPTION, *FORMS], key="form", help=HELP["form"], disabled=bool(infill))

    sb.subheader("Decoding")
    decoding = sb.radio("How notes are chosen", ["sampling", "threshold"], key="decoding", horizontal=True,
                        help=HELP["decoding"])
    if decoding == "sampling":
        value = sb.slider("Temperature", min_value=TEMPERATURE_RANGE[0], max_value=TEMPERATURE_RANGE[1],
                          value=REQUEST_DEFAULTS.temperature, step=0.05, key="temperature", help=HELP["temperature"])
        sb.slider("Key min-p", min_value=KEY_MIN_P_RANGE[0], max_value=KEY_MIN_P_RANGE[1],
                  value=REQUEST_DEFAULTS.key_min_p, step=0.01, key="key_min_p", help=HELP["key_min_p"])
        sb.slider("Key local p", min_value=KEY_MIN_P_RANGE[0], max_value=KEY_MIN_P_RANGE[1],
                  value=REQUEST_DEFAULTS.key_local_p, step=0.05, key="key_local_p", help=HELP["key_local_p"])
        sb.slider("Repetition", min_value=1.0, max_value=32.0, value=REQUEST_DEFAULTS.repeat_boost, step=0.5,
                  key="repeat_boost", help=HELP["repeat_boost"])
        sb.slider("Repeats helped", min_value=0, max_value=4, value=REQUEST_DEFAULTS.repeat_passes, step=1,
                  key="repeat_passes", help=HELP["repeat_passes"])
        sb.slider("Repeats run at most (states)", min_value=0, max_value=256, value=REQUEST_DEFAULTS.repeat_span,
                  step=16, key="repeat_span", help=HELP["repeat_span"])
    else:
        value = sb.slider("Threshold", min_value=THRESHOLD_RANGE[0], max_value=THRESHOLD_RANGE[1],
                          value=round(entry.threshold, 2), step=0.01, key="threshold", help=HELP["threshold"])
    notatable = sb.checkbox("Rhythms the score writes exactly", value=REQUEST_DEFAULTS.notatable, key="notatable",
                            help=HELP["notatable"])
    listen = sb.checkbox("Learn the primer first", value=REQUEST_DEFAULTS.listen, key="listen", help=HELP["listen"])
    chopin_runs = sb.checkbox("Stop a hammered chord where Chopin would", value=REQUEST_DEFAULTS.chopin_runs,
                              key="chopin_runs", help=HELP["chopin_runs"])

    sb.subheader("Result")
    key = sb.selectbox("Key", [SEED_KEY_OPTION] + [k.name for k in ALL_KEYS], key="key", help=HELP["key"],
                       disabled=bool(infill))
    style = None
    if entry.model.config.style_input:  # only a model with a style input can change style
        styles = entry.model.config.styles
        style = sb.selectbox("Style", styles, index=styles.index(entry.model.config.default_style),
                             key=f"style:{label}", help=HELP["style"])
    bpm = sb.number_input("Tempo (bpm)", min_value=BPM_RANGE[0], max_value=BPM_RANGE[1],
                          value=None, step=5.0, placeholder="the seed's own tempo", key="bpm", help=HELP["bpm"],
                          disabled=bool(infill))
    sb.number_input("Random seed", min_value=0, max_value=2**31 - 1, step=1, key="random_seed",
                    help=HELP["random_seed"])
    sb.checkbox("New random seed for each piece", key="fresh_seed", help=HELP["fresh_seed"])
    steering = steering_controls(entry)

    request = dict(
        model=label,
        seed_index=int(ss.seed_window) if source == HELD_OUT_OPTION else None,
        own_seeds=own_seeds and source == HELD_OUT_OPTION,
        primer=primer[0] if primer else None,
        primer_name=primer[1] if primer else None,
        primer_states=int(ss.get("primer_states", REQUEST_DEFAULTS.primer_states)),
        seconds=float(length) if unit == "seconds" else None,
        steps=int(length) if unit == "states" else None,
        threshold=float(value) if decoding == "threshold" else None,
        temperature=float(value) if decoding == "sampling" else REQUEST_DEFAULTS.temperature,
        key_min_p=float(ss.get("key_min_p", REQUEST_DEFAULTS.key_min_p)) if decoding == "sampling"
        else REQUEST_DEFAULTS.key_min_p,
        key_local_p=float(ss.get("key_local_p", REQUEST_DEFAULTS.key_local_p)) if decoding == "sampling"
        else REQUEST_DEFAULTS.key_local_p,
        repeat_boost=float(ss.get("repeat_boost", REQUEST_DEFAULTS.repeat_boost)) if decoding == "sampling"
        else REQUEST_DEFAULTS.repeat_boost,
        repeat_passes=int(ss.get("repeat_passes", REQUEST_DEFAULTS.repeat_passes)) if decoding == "sampling"
        else REQUEST_DEFAULTS.repeat_passes,
        repeat_span=int(ss.get("repeat_span", REQUEST_DEFAULTS.repeat_span)) if decoding == "sampling"
        else REQUEST_DEFAULTS.repeat_span,
        notatable=bool(notatable), listen=bool(listen), chopin_runs=bool(chopin_runs),
        key=None if key == SEED_KEY_OPTION or infill else key,
        bpm=float(bpm) if bpm is not None and not infill else None,
        style=style,
        random_seed=int(ss.random_seed),
        variations=1 if infill else variations,
        form=None if form == FREE_FORM_OPTION or infill else form,
        **infill,
        **steering,
    )
    return entry, request


def variations_control(unit: str, length: float, disabled: bool = False) -> int:
    """The number of variations, at most as many as the per-request cap allows at this length."""
    ss, sb = st.session_state, st.sidebar
    cap = MAX_REQUEST_SECONDS if unit == "seconds" else MAX_REQUEST_STATES
    allowed = int(max(1, min(MAX_VARIATIONS, cap // max(length, 1e-9))))
    # set before the widget exists, so a longer length lowers the choice instead of failing it
    ss.variations = min(int(ss.get("variations", 1)), allowed)
    n = sb.number_input("Variations", min_value=1, max_value=allowed, step=1, key="variations",
                        help=HELP["variations"], disabled=disabled)
    if allowed < MAX_VARIATIONS and not disabled:
        sb.caption(f"At most {allowed} variation{'s' if allowed > 1 else ''} of this length "
                   f"({cap:g}{' s' if unit == 'seconds' else ' states'} per request in all).")
    return int(n)


def infill_controls(entry: ModelEntry, primer: tuple[bytes, str] | None) -> dict:
    """The span of the uploaded piece to compose anew, and the candidates to choose it from."""
    sb = st.sidebar
    unit = sb.radio("Span in", ["seconds", "bars"], key="infill_unit", horizontal=True, help=HELP["infill_unit"])
    if unit == "seconds":
        start = sb.number_input("Span start (s)", min_value=0.0, value=4.0, step=0.5, key="infill_start_s",
                                help=HELP["infill_start"])
        end = sb.number_input("Span end (s)", min_value=0.0, value=8.0, step=0.5, key="infill_end_s",
                              help=HELP["infill_end"])
    else:
        start = sb.number_input("Span start (bar)", min_value=1, value=3, step=1, key="infill_start_b",
                                help=HELP["infill_start"])
        end = sb.number_input("Span end (bar)", min_value=1, value=5, step=1, key="infill_end_b",
                              help=HELP["infill_end"])
    candidates = sb.number_input("Candidates", min_value=1, max_value=MAX_CANDIDATES, value=DEFAULT_CANDIDATES,
                                 step=1, key="infill_candidates", help=HELP["infill_candidates"])
    if primer is not None:
        try:
            piece = infill_source(primer[0], primer[1], entry)
            sb.caption(f"The piece ends at {piece.describe_end('seconds')} ({piece.describe_end('bars')}).")
        except ChopinBotError:  # the primer's own message is already shown above
            pass
    return dict(infill=(float(start), float(end)), infill_unit=unit, infill_candidates=int(candidates))


def steering_controls(entry: ModelEntry) -> dict:
    """The composer's controls (a model with controls; disabled, with the reason, for any other):
    the request's density, register, confine_register, loudness and hold_key."""
    sb = st.sidebar
    sb.subheader("Steering")
    has_controls = bool(getattr(entry.model.config, "controls", False))
    off = not has_controls
    if off:
        sb.caption(NO_CONTROLS)
    density = sb.number_input("Density (notes per second)", min_value=DENSITY_RANGE[0], max_value=DENSITY_RANGE[1],
                              value=None, step=0.5, placeholder="the model's choice", key="density",
                              help=HELP["density"], disabled=off)
    register = None
    confine = GENERATE_DEFAULTS.confine_register
    if sb.checkbox("Keep to a register", key="steer_register", help=HELP["steer_register"], disabled=off) and \
            has_controls:
        low, high = sb.select_slider("Register", options=list(range(LOWEST_PITCH, HIGHEST_PITCH + 1)),
                                     value=DEFAULT_REGISTER, format_func=pitch_name, key="register",
                                     help=HELP["register"])
        confine = sb.checkbox("Never strike a key outside it", value=GENERATE_DEFAULTS.confine_register,
                              key="confine_register", help=HELP["confine_register"])
        if high - low < MIN_REGISTER_SPAN:
            sb.warning(f"A register needs at least {MIN_REGISTER_SPAN} semitones; widen it.")
        register = (int(low), int(high))
    loudness = sb.selectbox("Loudness", [MODEL_LOUDNESS_OPTION, *LOUDNESS_LEVELS], key="loudness",
                            help=HELP["loudness"], disabled=off,
                            format_func=lambda m: m if m not in LOUDNESS_LEVELS else f"{m} (velocity "
                                                                                       f"{LOUDNESS_LEVELS[m]})")
    hold_key = sb.checkbox("Stay in the key", value=GENERATE_DEFAULTS.hold_key, key="hold_key",
                           help=HELP["hold_key"], disabled=off)
    if off:  # what a disabled control still holds from another model is not asked
        return {}
    return dict(density=float(density) if density is not None else None, register=register,
                confine_register=bool(confine), loudness=None if loudness == MODEL_LOUDNESS_OPTION else loudness,
                hold_key=bool(hold_key))


def _copy_seed_index() -> None:
    st.session_state.seed_window = int(st.session_state.seed_index)


def new_random_seed(entry: ModelEntry, seeds_from=None) -> None:
    key = st.session_state.get("key")
    st.session_state.seed_window = pick_random_seed(entry, key=None if key == SEED_KEY_OPTION else key,
                                                    seeds_from=seeds_from)


def before_generate() -> None:
    if st.session_state.get("fresh_seed"):
        st.session_state.random_seed = int(np.random.default_rng().integers(0, 1_000_000))


def generate(entry: ModelEntry, fields: dict, wants_primer: bool) -> None:
    ss = st.session_state
    log = session_log(ss.session_id)
    ss.message = None
    if wants_primer and fields["primer"] is None:
        ss.message = ("warning", "Upload a usable MIDI file or score first, or start from a held-out piece.")
        return
    request = ComposeRequest(**fields)
    pool = get_pool()
    log.info("compose: %s", describe_request(request))
    try:
        with st.spinner("Composing…"):
            place = st.empty()  # the queue position while it waits (app.pool.queue_message)
            result = pool.compose(request, entry, ss.session_id, on_position=lambda n, s: place.info(
                queue_message(n, s)) if n else place.empty())
    except RequestRefused as e:
        log.info("refused: %s", e)
        ss.message = ("warning", str(e))
        return
    except ChopinBotError as e:
        log.info("error: %s", e)
        ss.message = ("error", str(e))
        return
    except Exception:  # never a traceback on the page
        log.exception("unexpected error")
        ss.message = ("error", f"Something went wrong on the server (it has been logged under session "
                               f"{ss.session_id}). Please try again.")
        return
    t = result.timings
    for piece in result.pieces:
        log.info("done: piece %s, %s, %.0f bpm, %d states in %.2f s (queued %.2f s, generate %.2f s [cpu %.2f s], "
                 "audio %.2f s, picture %.2f s [cpu %.2f s]; %d variation(s))", piece.fingerprint, result.key_name,
                 result.bpm, len(piece.new_states), t["total"], t.get("queued", 0.0), t["generate"],
                 t["generate_cpu"], t["audio"], t["picture"], t["picture_cpu"], len(result.pieces))
    ss.result = result


def show_result(result: ComposeResult) -> None:
    """The pieces side by side (one column each), then their statistics beside real music of their style."""
    n = len(result.pieces)
    lengths = [piece.new_seconds for piece in result.pieces]
    style = f" in {result.style.capitalize()}'s style" if result.style else ""  # style names are lower case
    if result.is_infill:
        start, end = result.pieces[0].generation.span_seconds
        st.subheader(f"{result.key_name}, the piece's own tempo — {start:.1f}–{end:.1f} s composed anew{style}")
    elif n == 1:
        st.subheader(f"{result.key_name}, {result.bpm:.0f} bpm — {lengths[0]:.1f} s of new music{style}")
    else:
        span = f"{min(lengths):.1f}" if f"{min(lengths):.1f}" == f"{max(lengths):.1f}" else \
            f"{min(lengths):.1f}–{max(lengths):.1f}"
        st.subheader(f"{result.key_name}, {result.bpm:.0f} bpm — {n} variations of {span} s of new music{style}")
    about = (f"random seed {result.request.random_seed} · model {result.model_label}"
             f"{f' · style {result.style}' if result.style else ''} · seed: "
             f"{result.seed_source} · composed in {result.timings['total']:.2f} s")
    if n > 1:
        st.caption(f"{about}. Listen to each, then download the one you like.")
        st.download_button("MIDI: seed", result.seed_midi, result.file_name("seed"), "audio/midi", key="dl_seed",
                           on_click="ignore")
    columns = st.columns(n) if n > 1 else [st.container()]
    for i, column in enumerate(columns):
        with column:
            show_piece(result, i, about if n == 1 else None)
    what = "the new span" if result.is_infill else "this piece (seed included)" if n == 1 else \
        "each variation (seed included)"
    st.markdown(f"**Musical statistics** of {what} beside {result.reference}: {result.n_real} excerpts of about "
                f"the same length from {result.reference_source}.")
    st.dataframe(result.stats_table(), hide_index=True)


def show_piece(result: ComposeResult, i: int, about: str | None) -> None:
    """One piece: its player, measured figures, downloads, piano roll, summary and guards
    (``about``: the request's caption, shown with a single piece)."""
    piece, n = result.pieces[i], len(result.pieces)
    if n > 1:
        st.markdown(f"#### Variation {i + 1}")
    if piece.wav is not None:
        st.audio(piece.wav, format="audio/wav")
        if result.is_infill:
            st.caption(f"The player plays the new span with {PICTURE_MARGIN_BEATS:g} beats of the piece either "
                       "side; the download below holds the whole piece.")
    else:
        st.info(f"No audio player: {piece.audio_note} The MIDI downloads below work without it.")
    st.markdown("**Measured** (the new music):\n" + "\n".join(f"- {line}" for line in
                                                              figures_lines(piece.figures, result.request,
                                                                            len(piece.new_states))))
    if result.is_infill:
        buttons = [("MIDI: the whole piece, span replaced", piece.midi["all"], result.file_name("infilled"),
                    "audio/midi", "dl_all_0", "primary"),
                   ("MIDI: the excerpt played", piece.midi["excerpt"], result.file_name("infill-excerpt"),
                    "audio/midi", "dl_excerpt_0", "secondary")]
    else:
        buttons = [("MIDI: generated", piece.midi["generated"], result.file_name("generated", variation=i),
                    "audio/midi", f"dl_generated_{i}", "secondary"),
                   ("MIDI: seed + generated", piece.midi["all"], result.file_name("all", variation=i), "audio/midi",
                    f"dl_all_{i}", "primary")]
    if piece.wav is not None:
        buttons.append(("Audio (WAV)", piece.wav, result.file_name("infill-excerpt" if result.is_infill else "all",
                                                                   "wav", variation=i), "audio/wav", f"dl_wav_{i}",
                        "secondary"))
    if n == 1 and not result.is_infill:  # one row, the seed's MIDI first
        buttons.insert(0, ("MIDI: seed", result.seed_midi, result.file_name("seed"), "audio/midi", "dl_seed",
                           "secondary"))
        places = st.columns(4)
    elif n == 1:
        places = st.columns(len(buttons))
    else:
        places = [st.container() for _ in buttons]
    for place, (label, data, name, mime, key, kind) in zip(places, buttons, strict=False):
        place.download_button(label, data, name, mime, key=key, type=kind, on_click="ignore")
    st.image(piece.png, caption=f"Piano roll: the new span (blue) with {PICTURE_MARGIN_BEATS:g} beats of the piece "
                                "either side (grey)." if result.is_infill else
             "Piano roll: the seed (grey), then ChopinBot's continuation (blue).")
    show_score(result, i)
    st.caption(f"piece {piece.fingerprint}" + (f" · {about}" if about else ""))
    st.markdown(f"**Summary.** {piece.summary}")
    if piece.guards:
        st.warning("**What the generation guards did:**\n" + "\n".join(f"- {g}" for g in piece.guards))
    else:
        st.success("Generation guards: none fired (the piece never fell silent, got stuck or looped).")


def show_score(result: ComposeResult, i: int) -> None:
    """The engraved first page and the score downloads (engraved after the player is on the page)."""
    piece = result.pieces[i]
    files = score_files(piece.generation, piece.fingerprint, run=in_background)
    if isinstance(files, str):
        st.info(files)
        return
    part = "infilled" if result.is_infill else "all"
    st.image(files.first_page_svg, caption=f"The score's first page (of {files.pages}); the PDF has them all.")
    for place, (label, data, ext, mime) in zip(st.columns(2), (
            ("Score: MusicXML", files.musicxml, "musicxml", "application/vnd.recordare.musicxml+xml"),
            ("Score: PDF", files.pdf, "pdf", "application/pdf"))):
        place.download_button(label, data, result.file_name(part, ext, variation=i), mime, key=f"dl_{ext}_{i}",
                              on_click="ignore")


def show_guide(entry: ModelEntry) -> None:
    with st.expander("Threshold guide: how the decision threshold trades precision for recall", expanded=False):
        with st.spinner("Scoring the model on the validation pieces (once per model)…"):
            png = threshold_guide_png(entry)
        st.image(png)
        st.markdown(
            f"With **threshold** decoding a key sounds when the model gives it at least that probability. "
            f"On held-out (validation) pieces, a low threshold finds more of the notes Chopin played (recall) "
            f"but adds wrong ones (precision falls); a high one plays only sure notes and may fall silent. "
            f"This model's best F1 was at **{entry.threshold:.2f}**, the slider's default. "
            f"**Sampling** needs no threshold: each key is drawn from its probability.")


def show_help() -> None:
    with st.expander("What the controls do"):
        st.markdown("\n".join(f"- **{name.replace('_', ' ')}**: {text}" for name, text in HELP.items()))


def main() -> None:
    st.set_page_config(page_title="ChopinBot", page_icon="🎹", layout="wide")
    configure_logging()
    if os.environ.get(SERVE_ENV) == "1":
        tune_for_serving()
    init_session()
    st.title("ChopinBot")
    st.caption("A small neural network continues a few bars of a held-out piece, or of your own MIDI file or "
               "score, in the style of the composer you choose (Chopin's, unless the model knows others).")
    try:
        models = list_models()
    except ChopinBotError as e:
        st.error(str(e))
        st.stop()
    if not models:
        st.error("No model is available. Train one with `chopinbot train`, or start the app with "
                 "`chopinbot app --model RUN_FOLDER`.")
        st.stop()
    try:
        entry, fields = sidebar_controls(models)
    except ChopinBotError as e:
        st.error(str(e))
        st.stop()
    wants_primer = st.session_state.get("seed_source") == PRIMER_OPTION
    if st.button("Generate", key="generate", type="primary", on_click=before_generate):
        generate(entry, fields, wants_primer)
    message = st.session_state.get("message")
    if message:
        getattr(st, message[0])(message[1])
    if st.session_state.get("result") is not None:
        show_result(st.session_state.result)
    else:
        st.info("Choose a seed and the settings on the left, then press **Generate**.")
    show_guide(entry)
    show_help()


main()
