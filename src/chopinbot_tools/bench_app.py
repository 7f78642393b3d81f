"""The web app's benchmark: the latency of one compose request through the
app's own path (request, pool, audio), cold and warm.
"""

from __future__ import annotations

import time
from typing import Any

from chopinbot.compose.seeds import seed_from_test
from chopinbot_tools.bench_common import (
    FIELD_NOTES,
    ORIGINAL_GENERATE_STEPS_PER_S,
    BenchContext,
    _median,
    _spread,
    _timed,
    make_row,
)

# --- app -----------------------------------------------------------------------------------


def bench_app(ctx: BenchContext) -> list[dict]:
    """Click-to-audio latency for a 30-second piece: the web app's
    ``chopinbot.app.request.compose`` when present, else generate + render_wav_bytes;
    with the app, also for 4 variations of 30 s (one batch, each rendered and drawn)."""
    repeats = 1 if ctx.quick else 3
    path, timings, audio_note = "", {}, None
    try:
        from chopinbot.app.registry import SHIPPED_LABEL, load_entry
        from chopinbot.app.request import ComposeRequest, compose
        from chopinbot.constants import SHIPPED_MODEL_DIR

        entry = load_entry(SHIPPED_MODEL_DIR, SHIPPED_LABEL)
        request = ComposeRequest(seconds=30.0, seed_index=0, random_seed=1)
        box: dict[str, Any] = {}

        def run() -> None:
            box["r"] = compose(request, entry)

        path = "app.request.compose(ComposeRequest(seconds=30, seed_index=0, random_seed=1), shipped model)"
        box["variations"] = (ComposeRequest(seconds=30.0, seed_index=0, random_seed=1, variations=4), entry)
    except (ImportError, AttributeError, TypeError):
        from chopinbot.compose.generate import GenerateConfig, generate
        from chopinbot.model.formats import load_model
        from chopinbot.render.audio import render_wav_bytes

        box = {}

        def run() -> None:
            model = box.get("model") or load_model(None)
            box["model"] = model
            gen = generate(model, seed_from_test(0), GenerateConfig(seconds=30.0, random_seed=1))
            box["r"] = gen
            box["wav"] = render_wav_bytes(gen.midi_bytes())

        path = ("generate(shipped model, seed 0, GenerateConfig(seconds=30)) + audio.render_wav_bytes "
                "(chopinbot.app.request.compose not available)")
    import torch  # not at module level: see the module docstring

    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    tuned, untune = "", None
    try:
        from chopinbot.app.pool import tune_for_serving

        untune = tune_for_serving()  # what `chopinbot app` does at start: 1 thread per generation, MKL-DNN off
        tuned = f"; tuned as the server is (pool.tune_for_serving: {torch.get_num_threads()} thread(s))"
    except ImportError:
        pass
    try:
        t0 = time.perf_counter()
        run()  # the first click after start: model load, caches
        cold = time.perf_counter() - t0
        times = _timed(run, repeats, warmup=0)
        if "variations" in box:  # the app's 4 variations: four 30-s continuations of one seed, one batch
            request4, entry4 = box["variations"]
            times4 = _timed(lambda: box.__setitem__("r4", compose(request4, entry4)), repeats, warmup=1)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
        if untune is not None:
            untune()  # NumPy's BLAS threads back
    r = box["r"]
    if hasattr(r, "timings"):
        timings = {k: round(v, 4) for k, v in r.timings.items()}
        audio_ok = r.pieces[0].wav is not None
        audio_note = r.pieces[0].audio_note
        gen = r.pieces[0].generation
    else:
        audio_ok = bool(box.get("wav"))
        gen = r
    n_states = len(gen.generated)
    fig = _median(times)
    ctx.log(f"  app: {fig:.2f} s per 30-s piece (first click {cold:.2f} s)")
    original = n_states / (sum(ORIGINAL_GENERATE_STEPS_PER_S) / 2)
    rows = [make_row(
        "app", "click_to_audio_30s", fig, "s", better="lower",
        baseline=(f"the original app's generation alone for the same {n_states} states at "
                  f"{sum(ORIGINAL_GENERATE_STEPS_PER_S) / 2:g} steps/s (an estimate: generation only, no rendering)"),
        baseline_figure=original, baseline_source="estimate from " + FIELD_NOTES,
        notes=(f"{path}{tuned}; median of {repeats} after the first click ({cold:.2f} s: model load and caches); "
               f"{n_states} new states, {gen.seconds:.1f} s of music in all; "
               + ("audio rendered with FluidSynth" if audio_ok else f"NO AUDIO: {audio_note or 'FluidSynth missing'}")),
        details={"path": path, "cold_seconds": round(cold, 4), **_spread(times), "timings_last": timings,
                 "audio": audio_ok, "new_states": n_states},
    )]
    if "r4" in box:
        r4 = box["r4"]
        fig4 = _median(times4)
        states4 = [len(p.generation.generated) for p in r4.pieces]
        audio4 = all(p.wav is not None for p in r4.pieces)
        ctx.log(f"  app: {fig4:.2f} s for 4 variations of 30 s")
        rows.append(make_row(
            "app", "click_to_audio_30s_4_variations", fig4, "s", better="lower",
            target={"on": "figure", "max": 4.0, "text": "<= 4 s (issue 18)"},
            notes=(f"app.request.compose(ComposeRequest(seconds=30, seed_index=0, random_seed=1, variations=4), "
                   f"shipped model){tuned}: one batch of 4, each piece rendered and drawn; median of {repeats} after "
                   f"one untimed; {sum(states4)} new states ({', '.join(map(str, states4))}); "
                   + ("audio rendered with FluidSynth" if audio4 else "NO AUDIO: " + str(r4.pieces[0].audio_note))),
            details={**_spread(times4), "timings_last": {k: round(v, 4) for k, v in r4.timings.items()},
                     "audio": audio4, "new_states": states4},
        ))
    return rows
