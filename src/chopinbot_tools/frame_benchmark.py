"""The whole frame-level benchmark: train, select on valid, score once on test, and report
beside the published figures; re-score a finished run or a committed model."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import atomic_write, atomic_write_json, atomic_write_text
from chopinbot.model.checkpoint import CONFIG, WEIGHTS
from chopinbot_tools.frame_models import FrameModelConfig, build_model, count_parameters
from chopinbot_tools.frame_training import TrainSettings, train
from chopinbot_tools.pianomidi import (
    ACC_THRESHOLDS,
    BENCHMARK_FILES,
    EvalResult,
    baseline_scores,
    evaluate,
    key_log_odds,
    load_checkpoint,
    load_piano_midi,
    split_summary,
)
from chopinbot_tools.published import PUBLISHED, SOURCES, TITLES


def run_benchmark(run_dir: str | os.PathLike, model_cfg, settings: TrainSettings, data_path=None,
                  limit: int | None = None, command: str = "", log: Callable[[str], None] = print,
                  benchmark: str = "piano-midi", resume: bool = False) -> dict:
    """Train on traindata, select on validdata, report valid and test NLL / accuracy with the
    published table and our baselines. Writes model.safetensors, config.json, history.csv,
    report.json and report.md into ``run_dir``; returns the report dict. With ``resume`` an
    interrupted run in ``run_dir`` continues (:mod:`chopinbot_tools.frame_training`)."""
    settings.validate()
    model_cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = load_piano_midi(data_path, limit, benchmark)
    torch.manual_seed(settings.seed)
    model = build_model(model_cfg)
    model.init_output_bias(torch.tensor(key_log_odds(data["train"]), dtype=torch.float32))
    n_params = count_parameters(model)
    log(f"{model_cfg.model_type}: {n_params:,} parameters; {split_summary(data)}; "
        f"{torch.get_num_threads()} thread(s)")
    res = train(model, data, settings, run_dir, model_cfg.to_dict(), resume=resume)
    _write_history(run_dir / "history.csv", res.history)
    model, _ = load_checkpoint(run_dir)
    report = {
        "benchmark": benchmark, "title": TITLES[benchmark],
        "data": str(data_path or BENCHMARK_FILES[benchmark].name), "pieces_limit": limit, "splits": split_summary(data),
        "model": {"type": model_cfg.model_type, "config": model_cfg.to_dict(), "parameters": n_params},
        "training": {**{k: v for k, v in vars(settings).items() if k != "progress"},
                     "threads_used": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "steps": res.steps, "epochs": round(res.epochs, 2), "best_step": res.best_step,
                     "wall_seconds": round(res.train_seconds, 2), "cpu_seconds": round(res.cpu_seconds, 2),
                     "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "stopped": res.stopped,
                     "resumed_at_steps": res.resumed_at},
        "command": command,
    }
    return _finish_report(run_dir, model, data, report, settings.eval_window)


def reevaluate(run_dir: str | os.PathLike, data_path=None, threads: int | None = None, window: int = 512) -> dict:
    """Evaluate a finished run's saved (best) model again and rewrite its report, keeping the
    training record. The data slice is the one the run used."""
    run_dir = Path(run_dir)
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{run_dir}: no report.json (re-evaluation needs a finished run)") from None
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(run_dir)
    data = load_piano_midi(data_path, report.get("pieces_limit"), report.get("benchmark", "piano-midi"))
    return _finish_report(run_dir, model, data, report, window)


def _finish_report(run_dir: Path, model, data: dict, report: dict, window: int) -> dict:
    """Valid and test scores of ``model``, the baselines and the published table -> report.json / report.md."""
    t0 = time.perf_counter()
    valid = evaluate(model, data["valid"], window, thresholds=ACC_THRESHOLDS)
    tau = valid.best_threshold()
    test = evaluate(model, data["test"], window, thresholds=tuple(sorted({0.5, tau})))
    scores = {name: {**r.to_dict(), "threshold": tau, "acc_at_threshold": r.counts[tau].accuracy}
              for name, r in (("valid", valid), ("test", test))}
    report.update({
        "definitions": {
            "nll": "per frame: sum over the 88 keys of the Bernoulli NLL (nats) of the true state given all earlier "
                   "frames of the piece (empty frame before the first); total over all pieces / total frames",
            "accuracy": "sum over frames of TP / sum over frames of (TP + FP + FN); predicted frame: keys low to "
                        "high, each sounding if its probability given the earlier frames and the keys already "
                        "chosen exceeds 0.5 (its more probable state); 'acc. at tau' uses the threshold tau that "
                        "maximises valid accuracy",
        },
        "final_eval_seconds": round(time.perf_counter() - t0, 1),
        "results": scores,
        "baselines": baseline_scores(data),
        "published": PUBLISHED[report.get("benchmark", "piano-midi")],
        "sources": SOURCES,
    })
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", format_report(report))
    return report


def _write_history(path: Path, rows: list[dict]) -> None:
    cols = ["step", "epoch", "seconds", "cpu_seconds", "train_nll", "valid_nll", "lr"]
    lines = [",".join(cols)] + [",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                                for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _used_settings(cfg: dict) -> dict:
    try:
        return FrameModelConfig.from_dict(cfg).used_settings()
    except Exception:  # an unknown or older config: show it whole
        return cfg


def _f(v, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def format_report(rep: dict) -> str:
    m, t, r = rep["model"], rep["training"], rep["results"]
    lines = [
        f"# {rep.get('title', TITLES['piano-midi'])}",
        "",
        "Split: " + ", ".join(f"{s} {v['pieces']} pieces / {v['frames']:,} frames" for s, v in rep["splits"].items())
        + (f" (first {rep['pieces_limit']} pieces of each split only)" if rep.get("pieces_limit") else "") + ".",
        "",
        f"- NLL: {rep['definitions']['nll']}.",
        f"- Frame accuracy: {rep['definitions']['accuracy']}.",
        "",
        "| model | valid NLL | test NLL | valid acc. | test acc. | test acc. at τ | params | train time | source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.append(f"| **ours: {m['type']}** | {_f(r['valid']['nll'])} | **{_f(r['test']['nll'])}** | "
                 f"{_f(r['valid']['acc'], True)} | {_f(r['test']['acc'], True)} | "
                 f"{_f(r['test']['acc_at_threshold'], True)} (τ = {r['test']['threshold']:g}) | {m['parameters']:,} | "
                 f"{t['wall_seconds'] / 60:.1f} min wall"
                 + (f" / {t['cpu_seconds'] / 60:.1f} CPU-min" if "cpu_seconds" in t else "")
                 + f", {t['threads_used']} thread(s) | this run |")
    for b in rep["baselines"]:
        lines.append(f"| {b['model']} | {_f(b['valid']['nll'])} | {_f(b['test']['nll'])} | "
                     f"{_f(b['valid']['acc'], True)} | {_f(b['test']['acc'], True)} | — | — | — | this run |")
    for p in rep["published"]:
        acc = "—" if p["acc"] is None else f"{p['acc']:.1f} %"
        nll = "—" if p["nll"] is None else f"{p['nll']:.2f}" + ("" if p.get("kind", "exact") == "exact"
                                                               else f" ({p['kind']})")
        lines.append(f"| {p['model']} | — | {nll} | — | {acc} | — | — | — | {p['source']} |")
    lines += [
        "",
        "Baseline notes: " + "; ".join(f"{b['model']}: {b['note']}" for b in rep["baselines"]) + ".",
        "",
        "Published figures marked (bound) are upper bounds on the NLL and (estimate) sampled estimates; the "
        "rest are exact. Ours leaving out each piece's first frame (the definition of Bai et al. 2018's code): "
        f"valid {_f(r['valid'].get('nll_after_first'))}, test {_f(r['test'].get('nll_after_first'))}.",
        "",
        f"Training: {t['steps']} steps ({t['epochs']} epochs), best at step {t['best_step']}, stopped by "
        f"{t['stopped']}; {t['wall_seconds']:.0f} s wall"
        + (f", {t['cpu_seconds']:.0f} s CPU" if "cpu_seconds" in t else "")
        + f" on {t['threads_used']} thread(s) of a {t['cpu_count']}-core CPU (torch {t['torch']})"
        + (f", load average {t['load_average_at_end'][1]:g} at the end" if "load_average_at_end" in t else "")
        + f"; final evaluation {rep['final_eval_seconds']:.0f} s wall.",
        f"Settings: batch {t['batch_size']}, chunk {t['chunk']}, lr {t['lr']:g} (warm-up {t['warmup_steps']}, "
        f"cosine to ×{t['min_lr_frac']:g}), weight decay {t['weight_decay']:g}, clip {t['clip']:g}, "
        f"transpose ±{t['transpose']}, seed {t['seed']}.",
        f"Model: `{json.dumps(_used_settings(m['config']))}`.",
        "",
        "Sources: " + "; ".join(f"{k}: {v}" for k, v in rep["sources"].items()
                                if any(p["source"] == k for p in rep["published"])) + ".",
    ]
    if rep.get("command"):
        lines += ["", f"Command: `{rep['command']}`"]
    return "\n".join(lines) + "\n"


def score_model(model_dir: str | os.PathLike, benchmark: str = "piano-midi", data_path=None,
                splits: tuple[str, ...] = ("valid", "test"), threads: int | None = None,
                window: int = 512, limit: int | None = None) -> dict[str, float]:
    """Exact NLL per frame of a saved model (a run folder or a committed model folder) on ``splits``
    (the first ``limit`` pieces of each, if given); writes nothing."""
    return {s: r.nll for s, r in score_model_results(model_dir, benchmark, data_path, splits, threads, window,
                                                      limit).items()}


def score_model_results(model_dir: str | os.PathLike, benchmark: str = "piano-midi", data_path=None,
                        splits: tuple[str, ...] = ("valid", "test"), threads: int | None = None,
                        window: int = 512, limit: int | None = None) -> dict[str, EvalResult]:
    """:func:`score_model`'s evaluations whole (the per-piece mean beside the per-frame NLL)."""
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(model_dir)
    data = load_piano_midi(data_path, limit, benchmark)
    return {s: evaluate(model, data[s], window, accuracy=False) for s in splits}


def export_model(run_dir: str | os.PathLike, dest: str | os.PathLike, check_pieces: int = 2,
                 threads: int | None = None) -> dict:
    """Copy a finished run's selected model to ``dest`` (``model.safetensors`` + ``config.json``, each
    written atomically) with its figures: the run's valid and test NLL, how it was trained, and the
    test NLL of its first ``check_pieces`` test pieces, a check quick enough for a test."""
    run_dir, dest = Path(run_dir), Path(dest)
    rep = json.loads((run_dir / "report.json").read_text())
    if rep.get("pieces_limit"):
        raise ConfigError(f"{run_dir}: a run on the first {rep['pieces_limit']} pieces only has no benchmark figures")
    benchmark = rep.get("benchmark", "piano-midi")
    quick = score_model(run_dir, benchmark, splits=("test",), threads=threads, limit=check_pieces)["test"]
    cfg = json.loads((run_dir / CONFIG).read_text())
    atomic_write(dest / WEIGHTS, lambda tmp: shutil.copyfile(run_dir / WEIGHTS, tmp))
    t = rep["training"]
    config = {**cfg, "benchmark": benchmark,
              "scores": {s: {k: rep["results"][s].get(k) for k in ("nll", "nll_after_first", "acc")}
                         for s in ("valid", "test")},
              "check": {"split": "test", "first_pieces": check_pieces, "nll": quick},
              "parameters": rep["model"]["parameters"],
              "training": {k: t.get(k) for k in ("steps", "epochs", "best_step", "cpu_seconds", "wall_seconds",
                                                 "threads_used", "stopped", "resumed_at_steps")},
              "command": rep.get("command", "")}
    atomic_write_json(dest / CONFIG, config)
    return config


def recorded_scores(model_dir: str | os.PathLike) -> dict[str, float]:
    """The whole-split NLLs recorded with an exported model (:func:`export_model`); {} if none."""
    cfg = json.loads((Path(model_dir) / CONFIG).read_text())
    return {s: v["nll"] for s, v in cfg.get("scores", {}).items() if v.get("nll") is not None}
