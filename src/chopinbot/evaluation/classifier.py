"""The classifier two-sample test: can a random forest tell two sets of excerpts apart?

Cross-validated so that no piece lies on both sides of a fold; accuracy near
0.5 means the sets look alike, near 1.0 that they are easy to tell apart
(see :mod:`chopinbot.evaluation.realism`, which runs it for the report, and
:mod:`chopinbot.evaluation.composed`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from chopinbot.evaluation.excerpts import FEATURE_NAMES


@dataclass
class ClassifierSettings:
    """How the classifier test runs (the defaults take seconds for a few hundred excerpts)."""

    repeats: int = 5  # random seeds: each draws its own balanced subsample, folds and forest
    folds: int = 5  # grouped by piece; fewer when there are fewer pieces
    trees: int = 200
    min_samples_leaf: int = 2
    seed: int = 0
    jobs: int = 1  # the forest's processes (1: the evaluation shares the machine)


def _balanced(y: np.ndarray, rng: np.random.Generator, per_class: int | None) -> np.ndarray:
    """Indices of a random subsample with as many of each class as the rarer class has (at most ``per_class``)."""
    k = min(int((y == 0).sum()), int((y == 1).sum()), per_class or len(y))
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in (0, 1)]))


def classifier_test(X: np.ndarray, y: np.ndarray, groups: Sequence[str], settings: ClassifierSettings | None = None,
                    relabel: Callable[[np.random.Generator], np.ndarray] | None = None,
                    feature_names: Sequence[str] = FEATURE_NAMES, per_class: int | None = None) -> dict:
    """Can a random forest tell class 1 from class 0?  Cross-validated by group.

    Each repeat draws a balanced subsample (both classes cut to the rarer
    one's size, or to ``per_class``), splits it into folds with no group on
    both sides (``StratifiedGroupKFold``), fits a forest per fold and predicts
    the held-out fold.  Accuracy (threshold 0.5) and ROC AUC are computed on
    all out-of-fold predictions of a repeat; the result holds their mean and
    standard deviation over the repeats, and the features by mean impurity
    importance.  ``relabel(rng)`` draws new labels per repeat (two random
    halves of the pieces, for the real-vs-real calibration).  A class in fewer
    than two groups gives ``{"skipped": reason, "n_per_class": ...}``.
    """
    s = settings or ClassifierSettings()
    X = np.asarray(X, np.float64)
    groups = np.asarray(groups)
    rng = np.random.default_rng(s.seed)
    accs, aucs, imps = [], [], []
    n_class = n_groups = 0
    for _ in range(s.repeats):
        labels = np.asarray(relabel(rng) if relabel is not None else y).astype(np.int64)
        idx = _balanced(labels, rng, per_class)
        yi, gi, Xi = labels[idx], groups[idx], X[idx]
        n_class, n_groups = idx.size // 2, np.unique(gi).size
        if any(np.unique(gi[yi == c]).size < 2 for c in (0, 1)):
            return {"skipped": "fewer than two pieces in a class", "n_per_class": n_class}
        folds = StratifiedGroupKFold(min(s.folds, n_groups), shuffle=True, random_state=int(rng.integers(2**31)))
        proba = np.zeros(idx.size)
        for train, test in folds.split(Xi, yi, gi):
            forest = RandomForestClassifier(s.trees, min_samples_leaf=s.min_samples_leaf, n_jobs=s.jobs,
                                            random_state=int(rng.integers(2**31)))
            forest.fit(Xi[train], yi[train])
            classes = list(forest.classes_)
            proba[test] = forest.predict_proba(Xi[test])[:, classes.index(1)] if 1 in classes else 0.0
            imps.append(forest.feature_importances_)
        accs.append(float(((proba > 0.5) == yi).mean()))
        aucs.append(float(roc_auc_score(yi, proba)))
    imp = np.mean(imps, axis=0)
    top = np.argsort(-imp)[:10]
    return {"accuracy_mean": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)),
            "auc_mean": float(np.mean(aucs)), "auc_sd": float(np.std(aucs)), "n_per_class": int(n_class),
            "n_pieces": int(n_groups), "repeats": s.repeats,
            "top_features": [[feature_names[i], float(imp[i])] for i in top]}


def two_sets_test(X1: np.ndarray, groups1: Sequence[str], X0: np.ndarray, groups0: Sequence[str],
                  settings: ClassifierSettings | None = None, columns: Sequence[str] = FEATURE_NAMES, **kw) -> dict:
    """:func:`classifier_test` of set 1 (e.g. generated) against set 0 (real Chopin), on ``columns``."""
    cols = [FEATURE_NAMES.index(c) for c in columns]
    X = np.concatenate([X1, X0])[:, cols]
    y = np.concatenate([np.ones(len(X1)), np.zeros(len(X0))])
    return classifier_test(X, y, list(groups1) + list(groups0), settings, feature_names=list(columns), **kw)


def halves_test(X: np.ndarray, groups: Sequence[str], settings: ClassifierSettings | None = None, **kw) -> dict:
    """Real vs real: each repeat splits the pieces at random into two halves and tests one against the other."""
    groups = np.asarray(groups)
    names = np.unique(groups)

    def relabel(rng: np.random.Generator) -> np.ndarray:
        half = rng.permutation(names)[: names.size // 2]
        return np.isin(groups, half).astype(np.int64)

    return classifier_test(X, np.zeros(len(X)), groups, settings, relabel=relabel, **kw)
