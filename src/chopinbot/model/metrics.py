"""Prediction metrics accumulated over a whole epoch or split (not averaged
per batch, which would weight a short last batch like a full one).

Key precision/recall/F1 are computed at every threshold at once from two
histograms of predicted probabilities (for keys that sound and keys that do
not), so the F1-optimal threshold and the threshold guide come for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_BINS = 100  # threshold resolution 0.01


@dataclass
class KeyCounts:
    """Histogram of probabilities of positive and negative key targets."""

    pos: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))

    def update(self, probs: np.ndarray, targets: np.ndarray) -> None:
        bins = np.minimum((probs * N_BINS).astype(np.int64), N_BINS - 1)
        t = targets.astype(bool)
        self.pos += np.bincount(bins[t], minlength=N_BINS)
        self.neg += np.bincount(bins[~t], minlength=N_BINS)

    def curve(self) -> dict[str, np.ndarray]:
        """Precision, recall and F1 for ``threshold = i / N_BINS`` (key on if p >= t)."""
        tp = self.pos[::-1].cumsum()[::-1].astype(np.float64)  # positives with bin >= i
        fp = self.neg[::-1].cumsum()[::-1].astype(np.float64)
        fn = self.pos.sum() - tp
        precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
        recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                       where=(precision + recall) > 0)
        return {"threshold": np.arange(N_BINS) / N_BINS, "precision": precision, "recall": recall, "f1": f1}

    def at(self, threshold: float) -> tuple[float, float, float]:
        c = self.curve()
        i = int(np.clip(round(threshold * N_BINS), 0, N_BINS - 1))
        return float(c["precision"][i]), float(c["recall"][i]), float(c["f1"][i])

    def best_threshold(self) -> float:
        c = self.curve()
        return float(c["threshold"][int(np.argmax(c["f1"]))])


def prf_from_sets(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of boolean predictions over all keys and states."""
    tp = float((pred & true).sum())
    fp = float((pred & ~true).sum())
    fn = float((~pred & true).sum())
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0 if not true.any() else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


@dataclass
class EpochMetrics:
    """Accumulates everything reported per epoch for one split."""

    keys: KeyCounts = field(default_factory=KeyCounts)
    n: float = 0.0  # targets (states) seen
    sums: dict = field(default_factory=dict)  # loss terms weighted by states
    dur_err_sum: float = 0.0  # sum of 2|dt-dp|/(dt+dp)
    class_correct: float = 0.0
    has_classes: bool = False

    def update(self, key_probs, key_true, d_true, d_pred, losses: dict, n_states: float, class_pred=None,
               class_true=None):
        """Arrays are flattened to the valid (masked) positions by the caller."""
        self.keys.update(key_probs, key_true)
        self.n += n_states
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n_states
        self.dur_err_sum += float((2 * np.abs(d_true - d_pred) / (d_true + d_pred + 1e-6)).sum())
        if class_pred is not None:
            self.has_classes = True
            self.class_correct += float((class_pred == class_true).sum())

    def summary(self, threshold: float | None = None) -> dict[str, float]:
        n = max(self.n, 1.0)
        out = {k: v / n for k, v in self.sums.items()}
        p, r, f = self.keys.at(0.5)
        out.update(precision=p, recall=r, f1=f)
        t = self.keys.best_threshold() if threshold is None else threshold
        p, r, f = self.keys.at(t)
        out.update(best_threshold=t, precision_best=p, recall_best=r, f1_best=f)
        out["dur_error"] = self.dur_err_sum / n
        if self.has_classes:
            out["dur_class_acc"] = self.class_correct / n
        return out
