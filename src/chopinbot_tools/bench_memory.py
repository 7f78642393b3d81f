"""Memory and scale benchmarks: peak memory of prepare, a training epoch and
the dataset in child processes, and ``prepare`` on synthetic corpora many
times the bundled one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import symusic

from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.store import Dataset
from chopinbot_tools.bench_common import (
    FIELD_NOTES,
    MEASURED,
    ORIGINAL_FEATURES,
    ORIGINAL_TRAIN_PEAK_RSS_MB,
    ORIGINAL_WINDOW,
    BenchContext,
    make_row,
    run_child,
)

# --- memory ----------------------------------------------------------------------------------


def dataset_memory(dataset_dir: str | os.PathLike) -> dict:
    """Bytes our training data needs in memory vs the original's float64 windows
    (every 16-state window of each piece as 16 x 108 float64)."""
    from chopinbot.dataset.batches import SplitData  # torch (module docstring)

    ds = Dataset(dataset_dir)
    rows = int(len(ds.records))
    records = int(ds.records.nbytes)
    vocab = DurationVocab((1.0,))
    derived = 0
    for split in ("train", "valid"):  # what a training run builds beside the memory-mapped records
        derived += int(SplitData(ds, split, vocab).end_pos.nbytes)
    windows = sum(max(0, int(f["states"]) - ORIGINAL_WINDOW) for f in ds.manifest["files"])
    window_bytes = windows * ORIGINAL_WINDOW * ORIGINAL_FEATURES * 8
    return {"states": rows, "record_bytes": records, "bytes_per_state": records / max(rows, 1),
            "derived_bytes": derived, "ours_bytes": records + derived, "windows": windows,
            "window_bytes": window_bytes}


def bench_memory(ctx: BenchContext) -> list[dict]:
    """Peak RSS of prepare and of one training epoch (child processes); the
    dataset's size in memory vs the original's float64 windows."""
    data = ctx.dataset_dir()
    floor = run_child("floor", {})
    floor_p = run_child("floor_prepare", {})
    prep = run_child("prepare", {"inputs": [str(ctx.corpus_dir)], "out": str(ctx.work / "mem_prepare"), "jobs": 1})
    shutil.rmtree(ctx.work / "mem_prepare", ignore_errors=True)
    model = {"hidden": 64, "layers": 1} if ctx.quick else {}
    ep = run_child("train_epoch", {"data": str(data), "out": str(ctx.work / "mem_train"), "model": model})
    shutil.rmtree(ctx.work / "mem_train", ignore_errors=True)
    dm = dataset_memory(data)
    ctx.log(f"  peak RSS: prepare {prep['peak_rss_mb']:.0f} MiB, one epoch {ep['peak_rss_mb']:.0f} MiB; dataset "
            f"{dm['ours_bytes'] / 2**20:.2f} MiB vs windows {dm['window_bytes'] / 2**20:.0f} MiB")
    mb = 1024 * 1024
    return [
        make_row("memory", "peak_rss_prepare", prep["peak_rss_mb"], "MiB", better="lower",
                 notes=(f"peak RSS (VmHWM) of a child process preparing {prep['files']} files (1 process) in "
                        f"{prep['seconds']:.2f} s; of which {floor_p['peak_rss_mb']:.0f} MiB is Python + the "
                        "prepare imports"),
                 details={"child": prep, "import_floor_mb": floor_p["peak_rss_mb"]}),
        make_row("memory", "peak_rss_train_epoch", ep["peak_rss_mb"], "MiB", better="lower",
                 baseline="the original Keras 2x512 training (TensorFlow, window 16, batch 512)",
                 baseline_figure=ORIGINAL_TRAIN_PEAK_RSS_MB, baseline_source=FIELD_NOTES,
                 notes=(f"peak RSS (VmHWM) of a child process: `train` for one epoch of LSTM "
                        f"{ep['layers']}x{ep['hidden']}"
                        f"{' (quick: a small model)' if ctx.quick else ' (the default model)'}, validation and "
                        f"checkpoints included, {ep['seconds']:.1f} s; of which {floor['peak_rss_mb']:.0f} MiB is "
                        "Python + torch + the package imports"),
                 details={"child": ep, "import_floor_mb": floor["peak_rss_mb"]}),
        make_row("memory", "dataset_in_memory", dm["ours_bytes"] / mb, "MiB", better="lower",
                 baseline=(f"the original's float64 windows: {dm['windows']:,} windows x {ORIGINAL_WINDOW} x "
                           f"{ORIGINAL_FEATURES} x 8 bytes"),
                 baseline_figure=dm["window_bytes"] / mb, baseline_source="computed for this corpus",
                 target={"on": "ratio", "min": 100, "text": "<= 1/100 of the float64 windows"},
                 notes=(f"{dm['states']:,} states x {dm['bytes_per_state']:.0f} B (memory-mapped, bit-packed) "
                        f"+ {dm['derived_bytes'] / mb:.2f} MiB of derived end positions (train and valid SplitData); "
                        "batches are gathered from the map on the fly, no window is ever materialised"),
                 details=dm),
    ]


# --- scale ----------------------------------------------------------------------------------

_TEMPO_FACTORS = (1.0, 0.8, 1.25, 0.9, 1.1, 0.85, 1.15, 0.95, 1.05)
_SHIFTS = (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6)


def build_synthetic_corpus(folder: str | os.PathLike, n: int, sources: list[Path]) -> list[Path]:
    """``n`` MIDI files made from ``sources``: each transposed by -5..+6 semitones
    (key signatures moved with it) and time-stretched by a tempo factor of
    0.8..1.25, every combination distinct up to len(sources) x 108 files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores = [(p.stem, symusic.Score(str(p))) for p in sources]
    out = []
    for v in range(n):
        stem, score = scores[v % len(scores)]
        k = _SHIFTS[(v // len(scores)) % len(_SHIFTS)]
        f = _TEMPO_FACTORS[(v // (len(scores) * len(_SHIFTS))) % len(_TEMPO_FACTORS)]
        s = score.shift_pitch(k)  # a new score
        for t in s.tempos:
            t.qpm = t.qpm * f
        for ks in s.key_signatures:
            ks.key = (ks.key + 7 * k + 5) % 12 - 5  # the signature of the transposed key
        path = folder / f"syn{v:05d}_{stem}_t{k:+d}_x{f:g}.mid"
        s.dump_midi(str(path))
        out.append(path)
    return out


def bench_scale(ctx: BenchContext) -> list[dict]:
    """A synthetic corpus (the bundled pieces transposed and time-stretched),
    prepared with ``jobs`` workers at two sizes: files/s and peak memory."""
    sizes = (100, 300) if ctx.quick else (1000, 5000)
    t0 = time.perf_counter()
    files = build_synthetic_corpus(ctx.work / "synthetic", max(sizes), ctx.corpus_files())
    build_s = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in files) / 1e6
    ctx.log(f"  built {len(files)} synthetic files ({mb:.0f} MB) in {build_s:.1f} s")
    res = {}
    for n in sizes:
        lst = ctx.work / f"files_{n}.json"
        lst.write_text(json.dumps([str(p) for p in files[:n]]))
        r = run_child("prepare", {"files_list": str(lst), "out": str(ctx.work / f"scale_{n}"), "jobs": ctx.jobs})
        shutil.rmtree(ctx.work / f"scale_{n}", ignore_errors=True)
        r["files_per_s"] = n / r["seconds"]
        r["peak_bound_mb"] = round(r["peak_rss_mb"] + ctx.jobs * r["workers_peak_rss_mb"], 1)
        # the figure: the sampled simultaneous peak of the whole job (PSS), else the per-process bound
        r["peak_mb"] = r.get("tree_peak_mb") or r["peak_bound_mb"]
        res[n] = r
        ctx.log(f"  prepare {n} files, jobs {ctx.jobs}: {r['files_per_s']:.0f} files/s, peak {r['peak_mb']:.0f} MiB "
                f"(main {r['peak_rss_mb']:.0f} + {ctx.jobs} x worker {r['workers_peak_rss_mb']:.0f} MiB RSS)")
    small, big = sizes
    rows = []
    for n in sizes:
        r = res[n]
        rows.append(make_row(
            "scale", f"scale_prepare_{n}_files", r["files_per_s"], "files/s",
            target={"on": "figure", "min": 100, "text": ">= 100 files/s"} if n == big else None,
            notes=(f"synthetic corpus: {n} files ({r['rows']:,} states), prepare --jobs {ctx.jobs} in a child "
                   f"process, {r['seconds']:.1f} s (imports excluded); corpus built in {build_s:.1f} s (not counted)"),
            details=r,
        ))
    measure = res[big].get("tree_measure") or "main process RSS + jobs x largest worker RSS (upper bound)"
    growth_kib = (res[big]["peak_mb"] - res[small]["peak_mb"]) * 1024 / (big - small)
    states_kib = res[big]["rows"] * 31 / 1024 / big  # 31 bytes a state (dataset.STATE_DTYPE)
    rows.append(make_row(
        "scale", f"scale_peak_memory_{big}_files", res[big]["peak_mb"], "MiB", better="lower",
        baseline=f"the same at {small} files", baseline_figure=res[small]["peak_mb"], baseline_source=MEASURED,
        target={"on": "ratio", "min": 0.8, "text": f"flat: at {big} files <= 1.25x the peak at {small}"},
        notes=(f"peak memory of the whole prepare job: {measure}; it grows {growth_kib:.1f} KiB per file while "
               f"{states_kib:.0f} KiB of states per file are streamed to disk (manifest entries too); summed PSS "
               f"also rises as the forked workers' copy-on-write pages turn private over a longer run; "
               f"per-process peaks (RSS, shared pages counted "
               f"in each): main {res[small]['peak_rss_mb']:.0f} -> {res[big]['peak_rss_mb']:.0f} MiB, largest "
               f"worker {res[small]['workers_peak_rss_mb']:.0f} -> {res[big]['workers_peak_rss_mb']:.0f} MiB"),
        details={str(n): {k: res[n].get(k) for k in ("peak_mb", "tree_peak_mb", "peak_rss_mb", "workers_peak_rss_mb",
                                                        "peak_bound_mb", "tree_samples")} for n in sizes}
                | {"growth_kib_per_file": round(growth_kib, 2), "states_kib_per_file": round(states_kib, 1)},
    ))
    shutil.rmtree(ctx.work / "synthetic", ignore_errors=True)
    return rows
