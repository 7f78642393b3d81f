"""Speed benchmarks: ``prepare`` (files/s, against music21), ``train``
(state-predictions/s of the real epoch, sequence vs the original's windows)
and ``generate`` (states/s, carried state vs re-running a window).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from chopinbot.compose.seeds import seed_from_test
from chopinbot.dataset.prepare import prepare
from chopinbot.dataset.store import Dataset
from chopinbot.music.midi import read_midi
from chopinbot_tools.bench_common import (
    FIELD_NOTES,
    MEASURED,
    ORIGINAL_BATCH,
    ORIGINAL_GENERATE_STEPS_PER_S,
    ORIGINAL_TRAIN_WINDOWS_PER_S,
    ORIGINAL_WINDOW,
    BenchContext,
    _median,
    _spread,
    _timed,
    _version,
    make_row,
)

# --- prepare ------------------------------------------------------------------------------


def _music21_parse_seconds(files: list[Path], quick: bool) -> tuple[float, dict] | None:
    """Seconds for music21's ``converter.parse`` of ``files`` (parse only, no pickle
    cache), or None when music21 is not installed.  Quick: four files spread
    over the size range, scaled to all files by their note count."""
    try:  # music21 is optional (the bench extra)
        import music21  # noqa: F401
        from music21 import converter
    except ImportError:
        return None

    def parse(p: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # music21 warns about every unnamed instrument
            converter.parse(str(p), forceSource=True, storePickle=False)

    by_size = sorted(files, key=lambda p: p.stat().st_size)
    parse(by_size[0])  # warm-up: music21's lazy imports and first-call costs
    step = max(1, len(by_size) // 4)
    subset = by_size[step // 2 :: step][:4] if quick and len(files) > 4 else files
    c0 = time.process_time()
    t0 = time.perf_counter()
    for p in subset:
        parse(p)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    details = {"music21": _version("music21"), "files_parsed": len(subset),
               "call": "music21.converter.parse(path, forceSource=True, storePickle=False)"}
    if len(subset) < len(files):
        notes_all = sum(len(read_midi(p)) for p in files)
        notes_sub = sum(len(read_midi(p)) for p in subset)
        details.update(measured_seconds=round(seconds, 3), extrapolated_by_notes=f"{notes_sub} -> {notes_all}")
        seconds = seconds * notes_all / max(notes_sub, 1)
        cpu = cpu * notes_all / max(notes_sub, 1)
    details["cpu_seconds"] = round(cpu, 3)
    return seconds, details


def bench_prepare(ctx: BenchContext) -> list[dict]:
    """Wall time to prepare the corpus (default: the 48 bundled files), 1 and
    ``jobs`` worker processes, against music21's parse of the same files."""
    files = ctx.corpus_files()
    n = len(files)
    repeats = 1 if ctx.smoke else 2 if ctx.quick else 5
    rows_out: dict[int, tuple[list[float], int, list[float]]] = {}
    for jobs in sorted({1, ctx.jobs}):
        out = ctx.work / f"prepare_j{jobs}"
        holder: dict[str, int] = {}

        def run(jobs=jobs, out=out, holder=holder) -> None:
            rep = prepare([ctx.corpus_dir], out, jobs=jobs, force=True, progress=False)
            holder["rows"] = rep.rows

        cpu: list[float] = []
        times = _timed(run, repeats, cpu=cpu)
        rows_out[jobs] = (times, holder["rows"], cpu)
        shutil.rmtree(out, ignore_errors=True)
        ctx.log(f"  prepare jobs={jobs}: median {_median(times):.3f} s over {repeats} runs")
    base = _music21_parse_seconds(files, ctx.quick) if ctx.music21 else None
    if base is not None:
        ctx.log(f"  music21 parse: {base[0]:.1f} s")
    rows = []
    target = {"on": "ratio", "min": 200, "text": ">= 200x faster than the music21 parse"}
    for jobs, (times, n_rows, cpu) in rows_out.items():
        fig = _median(times)
        notes = (f"{n} files -> {n_rows:,} states: read (symusic), states, keys, transposition, write; "
                 f"median of {len(times)} runs after a warm-up")
        if base is None:
            notes += ("; music21 not measured (" + ("skipped" if not ctx.music21 else
                      "not installed: pip install '.[bench]'") + "); FIELD-NOTES: ~72 s for the 48 files here")
        elif base[1].get("extrapolated_by_notes"):
            notes += "; quick: music21 figure extrapolated from 4 files (spread over the sizes) by note count"
        rows.append(make_row(
            "prepare", f"prepare_{n}_files_jobs{jobs}", fig, "s", better="lower",
            baseline=f"music21 converter.parse of the same {n} files (parse only)" if base else None,
            baseline_figure=base[0] if base else None, baseline_source=MEASURED, target=target, notes=notes,
            details=dict(_spread(times), files=n, states=n_rows, jobs=jobs, files_per_s=round(n / fig, 1),
                         cpu_seconds_main_process=round(_median(cpu), 4),
                         **({"baseline": base[1]} if base else {})),
        ))
    return rows


# --- train ----------------------------------------------------------------------------------


def _train_throughput(split, mcfg, window: int, batch: int, context: int, warmup: int, updates: int) -> dict:
    """State-predictions/s of training's own epoch (:func:`chopinbot.training.epoch.train_epoch`)
    over ``updates`` updates (after ``warmup``): the region :func:`chopinbot.training.train.train`
    times.  No transposition, as this benchmark has always measured."""
    # torch-side imports stay in the functions that need them (module docstring)
    from chopinbot.model.network import ChopinLSTM
    from chopinbot.training.config import TrainConfig
    from chopinbot.training.epoch import make_optimizer, make_scheduler, seed_everything, train_epoch

    cfg = TrainConfig(context=context, window=window, batch=batch, transpose=0, model=mcfg)
    seed_everything(cfg.seed)
    model = ChopinLSTM(mcfg)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, 10_000)
    rng = np.random.default_rng(cfg.seed)
    step_s, batch_s, preds = [], [], []
    while len(step_s) < warmup + updates:  # a small corpus: further epochs until the updates are done
        done = train_epoch(model, opt, sched, cfg, split, rng, max_updates=warmup + updates - len(step_s),
                           grad_stats={}, where="in the training benchmark")
        if not done.updates:
            raise RuntimeError("the training benchmark's data holds no training unit")
        step_s += done.step_seconds
        batch_s += done.batch_seconds
        preds += done.predictions
    step_s, batch_s, preds = step_s[warmup:], batch_s[warmup:], preds[warmup:]
    n = sum(preds)
    return {
        "predictions_per_s": n / sum(step_s),
        "predictions_per_s_with_batching": n / (sum(step_s) + sum(batch_s)),
        "updates": updates, "warmup_updates": warmup, "predictions": n, "step_seconds": round(sum(step_s), 4),
        "batching_seconds": round(sum(batch_s), 4), "batch": batch,
        "states_computed_per_update": batch * (window if window else context),
        "units_per_s": len(preds) * batch / sum(step_s),
    }


def bench_train(ctx: BenchContext) -> list[dict]:
    """Sequence training vs the original's 16-state windows, same model, same run:
    2x512 (the original's size) and the default model."""
    # torch-side imports stay in the functions that need them (module docstring)
    from chopinbot.dataset.batches import SplitData
    from chopinbot.model.network import ChopinLSTM, ModelConfig
    from chopinbot.training.train import TrainConfig, build_model_config

    ds = Dataset(ctx.dataset_dir())
    d = TrainConfig()
    seq_updates, win_updates, warm = (3, 2, 1) if ctx.quick else (30, 10, 3)
    models = [("2x512", dict(layers=2, hidden=512)), (f"{ModelConfig.layers}x{ModelConfig.hidden} (default)", {})]
    rows = []
    for label, shape in models:
        mcfg = build_model_config(TrainConfig(model=ModelConfig(duration_classes=[1.0], **shape)), ds)
        split = SplitData(ds, "train", mcfg.vocab)
        seq = _train_throughput(split, mcfg, 0, d.batch, d.context, warm, seq_updates)
        win = _train_throughput(split, mcfg, ORIGINAL_WINDOW, ORIGINAL_BATCH, d.context, warm, win_updates)
        ctx.log(f"  train {label}: sequence {seq['predictions_per_s']:,.0f}/s, "
                f"window {win['predictions_per_s']:,.0f}/s")
        n_params = ChopinLSTM(mcfg).n_params()
        rows.append(make_row(
            "train", f"train_sequence_vs_window_{label.split()[0]}", seq["predictions_per_s"], "state-predictions/s",
            baseline=f"the original's window mode (--window {ORIGINAL_WINDOW}, batch {ORIGINAL_BATCH}), same model",
            baseline_figure=win["predictions_per_s"], baseline_source=MEASURED,
            target={"on": "ratio", "min": 10, "text": ">= 10x the state-predictions/s of window training"},
            notes=(f"LSTM {label}, {n_params:,} params; sequence mode: batch {d.batch} x context {d.context}; "
                   f"{seq_updates} timed updates (window: {win_updates}) after {warm} warm-up; training step only "
                   f"(batch assembly excluded, as train.py counts it; with it: "
                   f"{seq['predictions_per_s_with_batching']:,.0f} vs "
                   f"{win['predictions_per_s_with_batching']:,.0f}/s); "
                   f"the original Keras model: {ORIGINAL_TRAIN_WINDOWS_PER_S[0]}-{ORIGINAL_TRAIN_WINDOWS_PER_S[1]} "
                   f"windows/s (2x512, {FIELD_NOTES})"),
            details={"model": label, "parameters": n_params, "sequence": seq, "window": win},
        ))
    return rows


# --- generate ------------------------------------------------------------------------------


def bench_generate(ctx: BenchContext) -> list[dict]:
    """States/s at batch 1 and 32, carried LSTM state vs re-running the last 16
    states every step (the original app's way), and the real-time factor."""
    # torch-side imports stay in the functions that need them (module docstring)
    import torch

    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.model.formats import load_model

    model = load_model(None)
    model.eval()
    seed = seed_from_test(0)
    # (batch, re-run window, engine): steps
    steps = {(1, 0, "auto"): 1000, (1, 16, "auto"): 300, (32, 0, "auto"): 300, (32, 16, "auto"): 100,
             (1, 0, "torch"): 300}
    if ctx.quick:
        steps = {k: max(20, v // 10) for k, v in steps.items()}
    if ctx.smoke:
        steps = {k: 8 for k in steps}
    repeats = 1 if ctx.quick else 3
    default_threads = torch.get_num_threads()
    thread_options = [1] if ctx.smoke else sorted({1, default_threads})
    res: dict[tuple[int, int, str], dict] = {}
    for (batch, window, engine), n in steps.items():
        cfg = GenerateConfig(steps=n, random_seed=1, retry=False)
        per_threads = {}
        for threads in thread_options:
            box: dict[str, Any] = {}

            def run(batch=batch, window=window, cfg=cfg, box=box, engine=engine) -> None:
                box["out"] = generate(model, seed, cfg, batch=batch, rerun_window=window, engine=engine)

            torch.set_num_threads(threads)
            try:
                generate(model, seed, GenerateConfig(steps=2 if ctx.smoke else 16, random_seed=0, retry=False),
                         batch=batch, rerun_window=window, engine=engine)  # warm-up
                times = _timed(run, repeats, warmup=0)
            finally:
                torch.set_num_threads(default_threads)
            outs = box["out"] if isinstance(box["out"], list) else [box["out"]]
            music_s = sum(float(o.generated.beats.astype("float64").sum()) * 60.0 / o.bpm for o in outs)
            t = _median(times)
            per_threads[threads] = {"states_per_s": batch * n / t, "steps": n, "batch": batch, "threads": threads,
                                    "seconds": t, "music_seconds": music_s, "realtime_factor": music_s / t,
                                    **_spread(times)}
        best = max(per_threads.values(), key=lambda r: r["states_per_s"])
        res[(batch, window, engine)] = dict(best, by_threads={str(k): round(v["states_per_s"], 1)
                                                              for k, v in per_threads.items()})
        ctx.log(f"  generate batch {batch} {'re-run 16' if window else 'incremental'} (engine {engine}): "
                + ", ".join(f"{v['states_per_s']:,.0f} states/s ({k} thread{'s' if k > 1 else ''})"
                            for k, v in per_threads.items()))
    c = model.config
    about = (f"shipped model (LSTM {c.layers}x{c.hidden}), sampling, seed window 0 ({seed.source}); median of "
             f"{repeats} after a warm-up; each figure the faster of torch threads {thread_options} (details: "
             f"by_threads); the original Keras app: {ORIGINAL_GENERATE_STEPS_PER_S[0]}-"
             f"{ORIGINAL_GENERATE_STEPS_PER_S[1]} steps/s at batch 1 ({FIELD_NOTES})")
    rows = []
    for batch in (1, 32):
        inc, rerun = res[(batch, 0, "auto")], res[(batch, 16, "auto")]
        rows.append(make_row(
            "generate", f"generate_batch{batch}", inc["states_per_s"], "states/s",
            baseline="re-running the last 16 states every step (--rerun-window 16), same model",
            baseline_figure=rerun["states_per_s"], baseline_source=MEASURED,
            target={"on": "figure", "min": 2000, "text": ">= 2,000 states/s at batch 1"} if batch == 1 else None,
            notes=(f"{inc['steps']} steps x batch {batch} at {inc['threads']} thread(s) (re-run: {rerun['steps']} "
                   f"steps at {rerun['threads']}); " + about),
            details={"incremental": inc, "rerun16": rerun},
        ))
    inc, torch_inc = res[(1, 0, "auto")], res[(1, 0, "torch")]
    rows.append(make_row(
        "generate", "generate_engine_batch1", inc["states_per_s"], "states/s",
        baseline="the same incremental generation through the model's own PyTorch forward (--engine torch)",
        baseline_figure=torch_inc["states_per_s"], baseline_source=MEASURED,
        notes=("NumPy step (chopinbot.compose.stepper) vs PyTorch modules, both carrying the LSTM state; "
               "the same music either way; shows how much of the batch-1 speed is call overhead, not arithmetic"),
        details={"numpy": inc, "torch": torch_inc},
    ))
    inc, rerun = res[(1, 0, "auto")], res[(1, 16, "auto")]
    rows.append(make_row(
        "generate", "realtime_factor_batch1", inc["realtime_factor"], "s of music / s",
        baseline="re-running the last 16 states every step, same model", baseline_figure=rerun["realtime_factor"],
        baseline_source=MEASURED,
        notes=(f"seconds of generated music (at the seed's tempo) per second of compute, batch 1; at batch 32 "
               f"{res[(32, 0, 'auto')]['realtime_factor']:,.0f} (all 32 pieces together)"),
        details={"batch1": inc["realtime_factor"], "batch32": res[(32, 0, "auto")]["realtime_factor"]},
    ))
    return rows


# --- the cost of a long piece ----------------------------------------------------------------


def bench_length(ctx: BenchContext) -> list[dict]:
    """States/s of a long piece against a short one, as a user runs them: whole ``chopinbot generate``
    commands (start-up, the model's load and the MIDI written included), batch 1, one thread, no retry
    (a retry composes the piece again: its cost is the guard's, not the length's)."""
    short, long = (1000, 20000) if not ctx.quick else (200, 4000)
    if ctx.smoke:
        short, long = 20, 200
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rates: dict[int, dict] = {}
    for n in (short, long):
        out = ctx.work / f"length-{n}.mid"
        cmd = [sys.executable, "-m", "chopinbot", "generate", "--steps", str(n), "--no-retry", "--random-seed", "1",
               "--seed-index", "0", "--out", str(out), "--force"]
        times = []
        for _ in range(1 if ctx.quick or n == long else 3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        t = _median(times)
        rates[n] = {"states": n, "seconds": t, "states_per_s": n / t, **_spread(times)}
        ctx.log(f"  generate --steps {n:,} (whole command, 1 thread): {t:.1f} s, {n / t:,.0f} states/s")
    return [make_row(
        "length", "generate_long_piece", rates[long]["states_per_s"], "states/s",
        baseline=f"the same command for {short:,} states", baseline_figure=rates[short]["states_per_s"],
        baseline_source=MEASURED,
        target={"on": "ratio", "min": 0.8, "text": f"the rate at {long:,} states >= 80 % of the rate at {short:,}"},
        notes=(f"`chopinbot generate --steps N --no-retry --random-seed 1 --seed-index 0` at OMP_NUM_THREADS=1, "
               f"wall time of the whole command (median of 3 for {short:,}, one run of {long:,})"),
        details={str(k): v for k, v in rates.items()},
    )]
