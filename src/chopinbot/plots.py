"""Pictures: key usage, training curves, the threshold guide.

Every function takes plain data (a manifest, a CSV path, arrays), writes one
PNG atomically and returns its path; the CLI and the app only call them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .constants import LOWEST_PITCH, N_KEYS  # noqa: E402
from .io_utils import atomic_write  # noqa: E402


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def plot_key_usage(manifest: dict, path: str | os.PathLike) -> Path:
    """Onsets per key, before and after transposition to C major / A minor."""
    orig = np.sum([f["key_use_original"] for f in manifest["files"]], axis=0)
    trans = np.sum([f["key_use_transposed"] for f in manifest["files"]], axis=0)
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
