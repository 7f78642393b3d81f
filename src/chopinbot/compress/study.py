"""The compression study: quality, size and speed of every format, in one table.

``chopinbot prune`` runs :func:`prune_study`: the reference formats (fp32,
fp16, int8, ONNX, TorchScript) and each pruned sparsity are saved, loaded back
with :func:`chopinbot.model.formats.load_model` (what is measured is what was
saved) and measured: test quality as ``chopinbot evaluate`` reports it, size
on disk, batch-1 generation speed.  :func:`write_table` writes the table and
:func:`plot_quality_vs_size` its plot.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.compress.export import export_model, float_model
from chopinbot.compress.prune import FinetuneSettings, prune_schedule
from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.store import Dataset, PrepareSettings
from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot.model.checkpoint import read_config
from chopinbot.model.formats import fp32_bytes, load_model, save_compressed, weights_bytes
from chopinbot.model.network import ChopinLSTM
from chopinbot.model.predict import evaluate_split

# --------------------------------------------------------------------------- quality and speed


def quality(model, dataset: Dataset) -> dict[str, float]:
    """Test metrics as ``chopinbot evaluate`` reports them: the key decision
    threshold chosen on the valid pieces, then applied to the test pieces."""
    meta = getattr(model, "meta", {})
    harshness = float(meta.get("harshness", 0.05))
    vocab = model.config.vocab
    valid = evaluate_split(model, SplitData(dataset, "valid", vocab), harshness)
    thr = valid.keys.best_threshold()
    test = evaluate_split(model, SplitData(dataset, "test", vocab), harshness).summary(threshold=thr)
    return {"f1": test["f1_best"], "threshold": thr, "key_nll": test["key_nll"], "dur_error": test["dur_error"],
            "maestro": test["maestro"]}


class _mkldnn:
    def __init__(self, enabled: bool | None) -> None:
        self.enabled, self.prev = enabled, torch.backends.mkldnn.enabled

    def __enter__(self):
        if self.enabled is not None:
            torch.backends.mkldnn.enabled = self.enabled

    def __exit__(self, *exc):
        torch.backends.mkldnn.enabled = self.prev


def _generation_seed(model):
    settings = getattr(model, "meta", {}).get("dataset_settings")
    return seed_from_test(0, 16, PrepareSettings(**settings) if settings else PrepareSettings())


def _time_generate(model, seed, steps: int, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one generation."""
    cfg = GenerateConfig(steps=steps, random_seed=0, retry=False)
    w0, c0 = time.perf_counter(), time.process_time()
    generate(model, seed, cfg, batch=batch)
    return time.perf_counter() - w0, time.process_time() - c0


@torch.inference_mode()
def _time_forward(model, batch: int, steps: int) -> tuple[float, float]:
    x = torch.zeros(batch, 1, model.config.input_dim)
    x[..., :5] = 1.0
    out, st = model(x)
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        out, st = model(x, st)
    return time.perf_counter() - w0, time.process_time() - c0


def _warm_up(model, seed, batch: int) -> None:
    _time_generate(model, seed, 8, batch)
    _time_forward(model, batch, 10)


def _rates(gen: list[tuple[float, float]], fwd: list[tuple[float, float]], steps: int, batch: int) -> dict[str, Any]:
    """Best of the repeats (the run least disturbed by other processes)."""
    return {"states_per_s": steps * batch / min(g[0] for g in gen),
            "states_per_cpu_s": steps * batch / max(min(g[1] for g in gen), 1e-9),
            "forward_steps_per_s": steps / min(f[0] for f in fwd),
            "forward_steps_per_cpu_s": steps / max(min(f[1] for f in fwd), 1e-9),
            "steps": steps, "batch": batch, "repeats": len(gen)}


def measure_generation_speed(model, steps: int = 256, batch: int = 1, repeats: int = 3, mkldnn: bool | None = None,
                             seed=None, threads: int | None = None) -> dict[str, float]:
    """Generation speed at ``batch``: states per second of
    :func:`chopinbot.compose.generate.generate` (``steps`` states after a 16-state
    test seed, sampling, no retries; the best of ``repeats`` runs), by the
    wall clock and per CPU-second of this process (steadier on a shared
    machine), and the same for the network's forward pass alone (one state
    per call).  ``mkldnn``: force oneDNN on/off for the forward pass alone
    (None = leave as is); ``generate`` switches it off itself."""
    seed = seed if seed is not None else _generation_seed(model)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with _mkldnn(mkldnn):
            _warm_up(model, seed, batch)
            gen = [_time_generate(model, seed, steps, batch) for _ in range(repeats)]
            fwd = [_time_forward(model, batch, steps) for _ in range(repeats)]
    finally:
        torch.set_num_threads(old_threads)
    return _rates(gen, fwd, steps, batch)


# --------------------------------------------------------------------------- the measured table


TABLE_COLUMNS = [
    ("label", "model"), ("format", "format"), ("sparsity", "sparsity"), ("test_f1", "test key F1"),
    ("key_nll", "key NLL"), ("dur_error", "duration error"), ("bytes", "weights bytes"), ("ratio", "× smaller"),
    ("states_per_s", "generation states/s"), ("states_per_cpu_s", "states/CPU-s"),
    ("forward_steps_per_cpu_s", "forward steps/CPU-s"), ("speedup", "generation speed vs fp32"),
]


def paired_speed(model, reference, steps: int = 256, repeats: int = 3, threads: int | None = 1) -> dict[str, Any]:
    """Batch-1 speed of ``model`` and of ``reference`` measured alternately
    (best of ``repeats`` each), so that their ratio ``speedup`` is fair on a
    machine whose load changes from minute to minute."""
    seed = _generation_seed(reference)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with _mkldnn(False):  # as generate() runs; applies to the forward-pass timing
            _warm_up(model, seed, 1)
            _warm_up(reference, seed, 1)
            g = {"m": [], "r": []}
            f = {"m": [], "r": []}
            for _ in range(repeats):
                for k, m in (("m", model), ("r", reference)):
                    g[k].append(_time_generate(m, seed, steps, 1))
                    f[k].append(_time_forward(m, 1, steps))
    finally:
        torch.set_num_threads(old_threads)
    mine, ref = _rates(g["m"], f["m"], steps, 1), _rates(g["r"], f["r"], steps, 1)
    return dict(mine, speedup=mine["states_per_cpu_s"] / ref["states_per_cpu_s"],
                forward_speedup=mine["forward_steps_per_cpu_s"] / ref["forward_steps_per_cpu_s"])


def measure_row(label: str, folder: Path, dataset: Dataset, fp32_size: int, speed_steps: int, threads: int | None,
                runtime: str | None = None, reference=None, **extra) -> dict[str, Any]:
    """Load ``folder`` back (what is measured is what was saved) and measure
    it: test quality, size on disk, generation speed at batch 1 (alternating
    with ``reference``, the fp32 model, when given)."""
    model = load_model(folder, runtime=runtime)
    q = quality(model, dataset)
    size = weights_bytes(folder)
    if not speed_steps:
        speed = {}
    elif reference is not None:
        speed = paired_speed(model, reference, speed_steps, threads=threads)
    else:
        speed = measure_generation_speed(model, steps=speed_steps, threads=threads, mkldnn=False)
    cfg = read_config(folder)
    fmt = cfg.get("format", "fp32")
    if fmt in ("sparse", "int8"):
        fmt += f" ({cfg['storage']['values']} values, {runtime or cfg.get('runtime', 'float')} runtime)"
    return {"label": label, "format": fmt, "sparsity": float(cfg.get("sparsity", 0.0)), "test_f1": q["f1"],
            "threshold": q["threshold"], "key_nll": q["key_nll"], "dur_error": q["dur_error"], "bytes": size,
            "ratio": fp32_size / max(size, 1),
            **{k: speed.get(k, float("nan")) for k in ("states_per_s", "states_per_cpu_s", "forward_steps_per_s",
                                                       "forward_steps_per_cpu_s", "speedup", "forward_speedup")},
            "folder": str(folder), **extra}


def prune_study(model: ChopinLSTM, dataset: Dataset, targets: list[float], out: str | os.PathLike,
                settings: FinetuneSettings | None = None, values: tuple[str, ...] = ("fp16", "int8"),
                reference: bool = True, speed_steps: int = 256, threads: int | None = 1, control: bool = False,
                log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """``chopinbot prune``: the reference formats (fp32, fp16, int8, ONNX,
    TorchScript) and each sparsity of ``targets`` (pruned with fine-tuning,
    saved in each of ``values``), every one saved under ``out``, loaded back
    and measured.  With ``control``, also the unpruned model fine-tuned for
    as many epochs as the whole schedule (the pruned models have had that
    much extra training; the control separates its effect from pruning's).
    Returns the table's rows; see :func:`write_table`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    src = float_model(model)
    src.meta = dict(getattr(model, "meta", {}))
    fp32_size = fp32_bytes(src)
    rows: list[dict[str, Any]] = []
    if reference:
        fmts = ["fp32", "fp16", "int8", "onnx", "torchscript"]
        if src.config.joint_keys:  # its keys are drawn one conditional at a time: no one-step graph to export
            fmts = fmts[:3]
            log("a joint_keys model: no ONNX or TorchScript rows (they export the one-step network only)")
        try:  # an optional dependency: without it, no ONNX row
            import onnxruntime  # noqa: F401
        except ImportError:
            if "onnx" in fmts:
                fmts.remove("onnx")
                log("onnxruntime is not installed: no ONNX row (pip install 'chopinbot[export]')")
        for fmt in fmts:
            info = export_model(src, fmt, out / fmt, sparse=False)
            rows.append(measure_row(fmt if fmt != "fp32" else "fp32 (source)", Path(info["folder"]), dataset,
                                    fp32_size, speed_steps, threads, reference=src,
                                    max_abs_diff=info["max_abs_diff"]))
            log(_row_line(rows[-1]))
    for step in prune_schedule(src, targets, dataset, settings):
        log(f"sparsity {step.target:.2f} reached ({step.sparsity:.3f} measured) in {step.seconds:.0f} s, kept "
            f"fine-tuning epoch {step.chosen_epoch}")
        for v in values:
            folder = save_compressed(out / f"sparsity-{step.target:.2f}-{v}", step.model, values=v, sparse=True)
            rows.append(measure_row(f"pruned {step.target:.0%}, {v}", folder, dataset, fp32_size, speed_steps,
                                    threads, reference=src, target=step.target, chosen_epoch=step.chosen_epoch,
                                    finetune=step.epochs))
            log(_row_line(rows[-1]))
    s = settings or FinetuneSettings()
    if control and s.epochs:
        cs = replace(s, epochs=s.epochs * len(targets), schedule="oneshot")
        step = next(prune_schedule(src, [0.0], dataset, cs))
        log(f"control: {cs.epochs} fine-tuning epochs at sparsity 0 in {step.seconds:.0f} s, kept epoch "
            f"{step.chosen_epoch}")
        folder = save_compressed(out / "control-fp32", step.model, values="fp32", sparse=False)
        rows.append(measure_row("fp32 fine-tuned (control)", folder, dataset, fp32_size, speed_steps, threads,
                                reference=src, chosen_epoch=step.chosen_epoch, finetune=step.epochs))
        log(_row_line(rows[-1]))
    return rows


def speed_comparison(folders: dict[str, Path], speed_steps: int = 256, threads: int | None = 1,
                     repeats: int = 7) -> list[dict[str, Any]]:
    """Batch-1 speed of each folder's model: generation (``generate``, which
    runs with oneDNN off) and the forward pass alone with oneDNN (mkldnn) on
    and off.  Models and settings are interleaved run by run and the best of
    ``repeats`` is kept, so that load from other processes on a shared CPU
    hits all alike."""
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        models = {k: load_model(f) for k, f in folders.items()}
        seed = _generation_seed(next(iter(models.values())))
        gen: dict[str, list] = {k: [] for k in models}
        fwd: dict[tuple[str, bool], list] = {(k, mk): [] for k in models for mk in (True, False)}
        for m in models.values():
            _warm_up(m, seed, 1)
        for _ in range(repeats):
            for name, m in models.items():
                gen[name].append(_time_generate(m, seed, speed_steps, 1))
                for mk in (True, False):
                    with _mkldnn(mk):
                        fwd[(name, mk)].append(_time_forward(m, 1, speed_steps))
    finally:
        torch.set_num_threads(old_threads)
    out = []
    for name in models:
        on = _rates(gen[name], fwd[(name, True)], speed_steps, 1)
        off = _rates(gen[name], fwd[(name, False)], speed_steps, 1)
        out.append({"model": name, "states_per_s": on["states_per_s"], "states_per_cpu_s": on["states_per_cpu_s"],
                    "forward_mkldnn_on_per_cpu_s": on["forward_steps_per_cpu_s"],
                    "forward_mkldnn_off_per_cpu_s": off["forward_steps_per_cpu_s"],
                    "forward_mkldnn_on_per_s": on["forward_steps_per_s"],
                    "forward_mkldnn_off_per_s": off["forward_steps_per_s"], "steps": speed_steps, "repeats": repeats})
    return out


def findings(rows: list[dict[str, Any]], speed: list[dict[str, Any]] | None = None,
             min_ratio: float = 4.0, max_f1_drop: float = 0.01) -> list[str]:
    """The issue's two questions answered from the measurements."""
    out = []
    base = next((r for r in rows if r["label"].startswith("fp32")), None)
    if base is None:
        return out
    ok = [r for r in rows if r["ratio"] >= min_ratio and r["test_f1"] >= base["test_f1"] - max_f1_drop]
    if ok:
        best = max(ok, key=lambda r: r["ratio"])
        out.append(f"smallest model within {max_f1_drop} test key F1 of fp32 and at least {min_ratio:g}x smaller: "
                   f"{best['label']} ({best['format']}), {best['bytes']:,} bytes = {best['ratio']:.2f}x smaller, "
                   f"F1 {best['test_f1']:.4f} vs {base['test_f1']:.4f} ({best['test_f1'] - base['test_f1']:+.4f})")
    else:
        out.append(f"no model is both {min_ratio:g}x smaller and within {max_f1_drop} F1 of fp32")
    by = {r["model"]: r for r in speed or []}
    a, b = by.get("fp32"), by.get("int8")
    if a and b:
        out.append(f"int8 vs fp32 generation at batch 1 (generate() runs with oneDNN off): "
                   f"{b['states_per_cpu_s']:.0f} vs {a['states_per_cpu_s']:.0f} states per CPU-second = "
                   f"{b['states_per_cpu_s'] / a['states_per_cpu_s']:.2f}x (wall clock "
                   f"{b['states_per_s'] / a['states_per_s']:.2f}x); the forward pass alone "
                   f"{b['forward_mkldnn_off_per_cpu_s'] / a['forward_mkldnn_off_per_cpu_s']:.2f}x with oneDNN off, "
                   f"{b['forward_mkldnn_on_per_cpu_s'] / a['forward_mkldnn_on_per_cpu_s']:.2f}x with it on")
        for r in (a, b):
            total, net = 1e3 / r["states_per_cpu_s"], 1e3 / r["forward_mkldnn_off_per_cpu_s"]
            out.append(f"{r['model']}: {total:.2f} CPU-ms per generated state, of which the network "
                       f"{net:.2f} ms and decoding/feature building {total - net:.2f} ms (not compressed)")
    return out


def _row_line(r: dict[str, Any]) -> str:
    return (f"{r['label']:<24} F1 {r['test_f1']:.4f}  NLL {r['key_nll']:.3f}  dur {r['dur_error']:.4f}  "
            f"{r['bytes'] / 1e6:.3f} MB ({r['ratio']:.2f}x)  {r['states_per_cpu_s']:.0f} states/CPU-s "
            f"({r.get('speedup', float('nan')):.2f}x fp32's)")


def _fmt(key: str, v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return {"sparsity": f"{v:.3f}", "test_f1": f"{v:.4f}", "key_nll": f"{v:.3f}", "dur_error": f"{v:.4f}",
                "ratio": f"{v:.2f}", "speedup": f"{v:.2f}×"}.get(
            key, f"{v:.0f}" if key.endswith(("_per_s", "_per_cpu_s")) else f"{v:.4g}")
    if key == "bytes":
        return f"{v:,}"
    return str(v)


def write_table(rows: list[dict[str, Any]], out: str | os.PathLike, title: str = "Compression trade-off",
                notes: list[str] | None = None, speed: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """``table.md``, ``table.csv``, ``results.json`` and ``quality_vs_size.png`` in ``out``."""
    out = Path(out)
    base = next((r for r in rows if r["label"].startswith("fp32")), None)
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(h for _, h in TABLE_COLUMNS) + " | ΔF1 vs fp32 |")
    lines.append("|" + "---|" * (len(TABLE_COLUMNS) + 1))
    for r in rows:
        delta = f"{r['test_f1'] - base['test_f1']:+.4f}" if base else "–"
        lines.append("| " + " | ".join(_fmt(k, r.get(k, "")) for k, _ in TABLE_COLUMNS) + f" | {delta} |")
    lines += [""] + [f"* {n}" for n in (notes or [])]
    if speed:
        lines += ["", "## Batch-1 speed", "",
                  "| model | generation states/s | states/CPU-s | forward steps/CPU-s, oneDNN on | "
                  "forward steps/CPU-s, oneDNN off |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['states_per_s']:.0f} | {r['states_per_cpu_s']:.0f} | "
                  f"{r['forward_mkldnn_on_per_cpu_s']:.0f} | {r['forward_mkldnn_off_per_cpu_s']:.0f} |"
                  for r in speed]
        lines += ["", f"Best of {speed[0]['repeats']} interleaved runs of {speed[0]['steps']} states each."]
    paths = {"md": atomic_write_text(out / "table.md", "\n".join(lines) + "\n")}
    buf = io.StringIO()
    keys = [k for k, _ in TABLE_COLUMNS] + sorted({k for r in rows for k in r} - {k for k, _ in TABLE_COLUMNS}
                                                  - {"finetune"})
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    paths["csv"] = atomic_write_text(out / "table.csv", buf.getvalue())
    paths["json"] = atomic_write_json(out / "results.json", {"rows": rows, "speed": speed or [],
                                                             "notes": notes or []})
    paths["png"] = plot_quality_vs_size(rows, out / "quality_vs_size.png")
    return paths


def plot_quality_vs_size(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Test key F1 and key NLL against the weights' size on disk."""
    from chopinbot.render.plots import plt, save_figure  # here: matplotlib loads only when a plot is drawn

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    base = next((r for r in rows if r["label"].startswith("fp32")), None)
    lo, hi = min(r["bytes"] for r in rows) / 1e6, max(r["bytes"] for r in rows) / 1e6
    groups = [("reference formats", lambda r: "target" not in r, "o", "#222222"),
              ("pruned, fp16 values", lambda r: "target" in r and "fp16" in r["format"], "s", "#4a6fa5"),
              ("pruned, int8 values", lambda r: "target" in r and "int8" in r["format"], "^", "#c17c2f"),
              ("pruned, fp32 values", lambda r: "target" in r and "fp32" in r["format"], "D", "#2f8f4e")]
    for ax, key, name in ((axes[0], "test_f1", "test key F1 (valid-chosen threshold)"),
                          (axes[1], "key_nll", "test key NLL (nats/state, lower is better)")):
        for label, pick, marker, color in groups:
            sel = sorted((r for r in rows if pick(r)), key=lambda r: r["bytes"])
            if not sel:
                continue
            ax.plot([r["bytes"] / 1e6 for r in sel], [r[key] for r in sel], marker=marker, color=color, label=label,
                    linestyle="-" if "target" in sel[0] else "none")
            for r in sel:
                if r["label"] in ("onnx", "torchscript"):
                    continue  # the fp32 model's size and quality: its label would only overprint fp32's
                tag = f"{r['target']:.0%}" if "target" in r else "control" if "control" in r["label"] else \
                    r["label"].split(" ")[0]
                ax.annotate(tag, (r["bytes"] / 1e6, r[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if base is not None and key == "test_f1":
            ax.axhline(base[key] - 0.01, color="#999999", linestyle="--", linewidth=1, label="fp32 F1 − 0.01")
        if base is not None:
            ax.axvline(base["bytes"] / 4e6, color="#bbbbbb", linestyle=":", linewidth=1, label="1/4 of fp32 size")
        ax.set_xscale("log")
        ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 5, 10, 20) if lo / 1.5 <= t <= hi * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("weights on disk (MB, log scale)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("ChopinBot: quality against size")
    return save_figure(fig, path)
