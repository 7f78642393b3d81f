"""Pictures: key usage, training curves, the threshold guide.

Every function takes plain data (a manifest, a CSV path, arrays), writes one
PNG atomically and returns its path; the CLI and the app only call them.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from chopinbot.constants import LOWEST_PITCH, N_KEYS  # noqa: E402
from chopinbot.errors import DatasetError  # noqa: E402
from chopinbot.io_utils import atomic_write  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def figure_png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (for pages and the Python API); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_key_usage(manifest: dict, path: str | os.PathLike) -> Path:
    """Onsets per key, before and after transposition to C major / A minor."""
    orig = np.asarray(manifest["key_use"]["original"])
    trans = np.asarray(manifest["key_use"]["transposed"])
    x = np.arange(N_KEYS) + LOWEST_PITCH
    fig, axes = plt.subplots(2, 1, figsize=(11, 5), sharex=True, sharey=True)
    for ax, data, title in ((axes[0], orig, "as written"), (axes[1], trans, "transposed to C major / A minor")):
        black = np.isin(x % 12, [1, 3, 6, 8, 10])
        ax.bar(x[~black], data[~black], width=0.8, color="#4a6fa5", label="white keys")
        ax.bar(x[black], data[black], width=0.8, color="#222222", label="black keys")
        ax.set_title(f"Key usage (notes struck), {title}")
        ax.set_ylabel("notes")
    axes[0].legend(loc="upper right")
    ticks = [p for p in x if p % 12 == 0]
    axes[1].set_xticks(ticks, [f"C{p // 12 - 1}" for p in ticks])
    axes[1].set_xlabel("piano key")
    return save_figure(fig, path)


def threshold_guide_figure(curve: dict[str, np.ndarray], title: str = "Choosing the decision threshold"):
    """Precision, recall and F1 against the threshold, best F1 marked.

    ``curve`` is :meth:`chopinbot.model.metrics.KeyCounts.curve` (or the same keys
    read back from JSON)."""
    t = np.asarray(curve["threshold"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, curve["precision"], label="precision", color="#4a6fa5")
    ax.plot(t, curve["recall"], label="recall", color="#c17c2f")
    ax.plot(t, curve["f1"], label="F1", color="#2f8f4e", linewidth=2)
    i = int(np.argmax(curve["f1"]))
    ax.scatter([t[i]], [curve["f1"][i]], color="#2f8f4e", zorder=3)
    ax.annotate(f"best F1 {curve['f1'][i]:.3f} at {t[i]:.2f}", (t[i], curve["f1"][i]), textcoords="offset points",
                xytext=(8, 8))
    ax.set_xlabel("threshold: a key sounds when its probability is at least this")
    ax.set_ylabel("score on held-out pieces")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title(title)
    return fig


def plot_threshold_guide(curve: dict[str, np.ndarray], path: str | os.PathLike, **kw) -> Path:
    return save_figure(threshold_guide_figure(curve, **kw), path)


def plot_training(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """The curves of a run folder: loss terms, key metrics, duration, gradients, weights."""
    run = Path(run_dir)
    out = Path(out_dir) if out_dir else run / "plots"
    mpath = run / "metrics.csv"
    if not mpath.exists():
        raise DatasetError(f"{run}: no metrics.csv (is it a run folder?)")
    rows = list(csv.DictReader(mpath.open()))
    ep = [int(r["epoch"]) for r in rows]

    def col(name):
        return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

    written = []
    panels = [
        ("loss.png", "Maestro loss and its terms", [("train_maestro", "train loss"), ("valid_maestro", "valid loss"),
                                                     ("train_bce", "train BCE"), ("valid_bce", "valid BCE"),
                                                     ("train_dur", "train dur term"), ("valid_dur", "valid dur term")]),
        ("keys.png", "Key prediction (valid)", [("valid_f1_best", "F1 (best threshold)"), ("valid_f1", "F1 @ 0.5"),
                                                ("valid_precision_best", "precision"), ("valid_recall_best", "recall"),
                                                ("train_f1_best", "train F1 (best)")]),
        ("duration.png", "Duration", [("train_dur_error", "train duration error"),
                                      ("valid_dur_error", "valid duration error"),
                                      ("valid_dur_class_acc", "valid class accuracy")]),
        ("nll.png", "Key NLL per state (nats)", [("train_key_nll", "train"), ("valid_key_nll", "valid")]),
    ]
    for fname, title, series in panels:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in series:
            if rows and key in rows[0]:
                ax.plot(ep, col(key), label=label, linestyle="--" if key.startswith("train") else "-")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(save_figure(fig, out / fname))
    for fname, title in (("grads.csv", "Gradient norm per layer (mean over the epoch's updates)"),
                         ("weights.csv", "Weights: largest row norm per layer (for max-norm)")):
        p = run / fname
        if not p.exists():
            continue
        stats = list(csv.DictReader(p.open()))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        field = "norm" if fname == "grads.csv" else "max_row_norm"
        for layer in dict.fromkeys(r["layer"] for r in stats):
            pts = [(int(r["epoch"]), float(r[field])) for r in stats if r["layer"] == layer]
            ax.plot(*zip(*pts), label=layer, linewidth=2.5 if layer == "overall" else 1)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        written.append(save_figure(fig, out / fname.replace(".csv", ".png")))
    return written
