"""The models the web app offers: listing, choosing by label, loading.

Models come only from a listed set (:func:`list_models`): the shipped model,
the model the operator named at start-up (``$CHOPINBOT_MODEL``), and run
folders (holding ``best/``) or checkpoint folders found under the models folder
(``$CHOPINBOT_MODELS_DIR``, default ``runs/``).  A visitor picks a *label*;
:func:`resolve_model_label` refuses anything else, so no path typed into the
app is ever opened.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chopinbot.app.settings import DEFAULT_MODELS_DIR, MODEL_ENV, MODELS_DIR_ENV
from chopinbot.compose.seeds import model_dataset
from chopinbot.constants import SHIPPED_MODEL_DIR
from chopinbot.dataset.store import PrepareSettings
from chopinbot.errors import ChopinBotError, ConfigError, ModelFileError
from chopinbot.model.checkpoint import CONFIG, WEIGHTS, bundled_models, model_name, read_config
from chopinbot.model.formats import load_model

log = logging.getLogger(__name__)

SHIPPED_LABEL = "shipped model"
MODEL_CACHE_SIZE = 4  # loaded models kept in memory


def _is_checkpoint(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def _model_folder(folder: Path) -> Path | None:
    """The checkpoint a listed folder stands for: a run folder's ``best/``, or the folder itself."""
    for cand in (folder / "best", folder):
        if _is_checkpoint(cand):
            return cand
    return None


def _file_times(folder: Path) -> tuple[int, ...]:
    """The modification times of the checkpoint's files (a cache key: a rewritten model is loaded again)."""
    return tuple((folder / f).stat().st_mtime_ns for f in (CONFIG, WEIGHTS))


_loadable_cache: dict[tuple, bool] = {}
_loadable_lock = threading.Lock()


def _loadable(folder: Path) -> bool:
    """Whether :func:`~chopinbot.model.formats.load_model` accepts the checkpoint
    (an export whose runtime is missing keeps a config.json and safetensors the
    loader refuses).  Tried once per folder and file times."""
    try:
        stamp = _file_times(folder)
    except OSError:
        return False
    key = (str(folder.resolve()), stamp)
    with _loadable_lock:
        if key in _loadable_cache:
            return _loadable_cache[key]
    try:
        load_model(folder)
        ok = True
    except ChopinBotError as e:
        log.info("not offering %s: %s", folder, e)
        ok = False
    with _loadable_lock:
        _loadable_cache[key] = ok
    return ok


def models_dir_from_env() -> Path:
    """The folder run directories are listed from (``$CHOPINBOT_MODELS_DIR``, default ``runs/``)."""
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)


def list_models(models_dir: str | os.PathLike | None = None, configured: str | os.PathLike | None = None,
                max_depth: int = 2, check: bool = True) -> dict[str, Path]:
    """Every model a visitor may pick: label -> checkpoint folder.

    In order: ``configured`` (the operator's ``--model``; default
    ``$CHOPINBOT_MODEL``), the shipped model, the other bundled models, then run folders (with a
    ``best/`` checkpoint) and checkpoint folders found under ``models_dir``
    (default :func:`models_dir_from_env`) at most ``max_depth`` levels down,
    labelled by their path relative to ``models_dir``.  Hidden folders,
    ``best``/``last``/``*.old`` folders themselves, symbolic links that lead
    outside ``models_dir`` and (with ``check``) checkpoints the loader refuses
    (e.g. ONNX exports without onnxruntime) are skipped.  Only this set can ever be loaded.
    """
    out: dict[str, Path] = {}
    configured = configured if configured is not None else os.environ.get(MODEL_ENV) or None
    if configured:
        folder = _model_folder(Path(configured))
        if folder is None:
            raise ModelFileError(f"{configured}: not a ChopinBot checkpoint or run folder "
                                 f"(needs {CONFIG} and {WEIGHTS}, or best/ holding them)")
        same_as_shipped = folder.resolve() == SHIPPED_MODEL_DIR.resolve()
        out[SHIPPED_LABEL if same_as_shipped else _configured_label(Path(configured))] = folder
    if _is_checkpoint(SHIPPED_MODEL_DIR):
        out.setdefault(SHIPPED_LABEL, SHIPPED_MODEL_DIR)
    for name, folder in bundled_models().items():  # the earlier shipped models, by name
        if folder.resolve() != SHIPPED_MODEL_DIR.resolve():
            out.setdefault(f"{name} (bundled)", folder)
    root = Path(models_dir) if models_dir is not None else models_dir_from_env()
    if not root.is_dir():
        return out
    root_real = root.resolve()
    seen = {p.resolve() for p in out.values()}
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for parent in frontier:
            try:
                children = sorted(parent.iterdir())
            except OSError:
                continue
            for child in children:
                name = child.name
                if name.startswith(".") or name in ("best", "last") or name.endswith(".old") or not child.is_dir():
                    continue
                real = child.resolve()
                if not real.is_relative_to(root_real):
                    continue  # a link out of the models folder
                folder = _model_folder(child)
                if folder is not None:
                    if folder.resolve() not in seen and (not check or _loadable(folder)):
                        seen.add(folder.resolve())
                        out[child.relative_to(root).as_posix()] = folder
                else:
                    nxt.append(child)
        frontier = nxt
    return out


def _configured_label(path: Path) -> str:
    name = path.name if path.name not in ("best", "last") else path.parent.name
    return f"{name} (--model)"


def resolve_model_label(label: str, models: dict[str, Path]) -> Path:
    """The checkpoint folder of a listed label; a label not in the list is refused."""
    if label not in models:
        raise ConfigError(f"unknown model {label!r}: choose one of {', '.join(models) or '(none available)'}")
    return models[label]


@dataclass
class ModelEntry:
    """A loaded model and what the app needs to know about it."""

    label: str
    path: Path  # checkpoint folder
    model: Any  # chopinbot.model.network.ChopinLSTM
    settings: PrepareSettings  # the state settings the model was trained with
    threshold: float  # the decision threshold that was best on the valid pieces
    meta: dict
    key: str  # identity for caches: weights hash + state settings
    name: str = ""  # the model's own name (a bundled model's, or its run folder's) for titles
    dataset: Path | None = None  # the dataset it was trained on, when it is here (its held-out pieces are seeds)

    @property
    def default_style(self) -> str | None:
        """The style it composes in unless asked (None: a model without a style input)."""
        c = self.model.config
        return c.default_style if getattr(c, "style_input", False) and c.default_style else None

    @property
    def description(self) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        f1 = self.meta.get("metrics", {}).get("valid_f1_best")
        f1_text = f", valid key F1 {f1:.3f}" if isinstance(f1, (int, float)) else ""
        epoch = self.meta.get("epoch", "?")
        return f"{self.model.config.shape}, {n_params:,} parameters, epoch {epoch}{f1_text}"


_model_cache: dict[tuple, ModelEntry] = {}
_model_lock = threading.Lock()


def load_entry(path: str | os.PathLike, label: str) -> ModelEntry:
    """Load (once; cached while the files are unchanged) the model in checkpoint folder ``path``."""
    folder = Path(path)
    try:
        stamp = _file_times(folder)
    except OSError as e:
        raise ModelFileError(f"{folder}: cannot read the model ({e.strerror})") from None
    key = (str(folder.resolve()), stamp, label)
    with _model_lock:
        if key in _model_cache:
            return _model_cache[key]
        model = load_model(folder)
        meta = read_config(folder)
        settings = PrepareSettings(**meta["dataset_settings"]) if "dataset_settings" in meta else PrepareSettings()
        thr = meta.get("valid_threshold", 0.5)
        threshold = float(thr) if isinstance(thr, (int, float)) and 0 <= thr <= 1 else 0.5
        # caches of per-model results (the threshold guide) are keyed by the
        # weights and settings, so copies of one model share them
        ident = meta.get("weights_sha256") or f"{key[0]}:{stamp}"
        entry = ModelEntry(label, folder, model, settings, threshold, meta, f"{ident}:{settings}", model_name(folder),
                           model_dataset(meta))
        if len(_model_cache) >= MODEL_CACHE_SIZE:
            _model_cache.pop(next(iter(_model_cache)))
        _model_cache[key] = entry
        return entry
