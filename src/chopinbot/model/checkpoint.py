"""Plain checkpoints: ``model.safetensors`` + ``config.json``, never pickles.

A checkpoint folder is replaced as a whole: it is written under a temporary
name and swapped in by renames, and the config records the sha256 of the
weights, so a reader never sees a half-written or mismatched pair (if a crash
falls between the two renames, the previous folder survives as ``NAME.old``
and is used).

Loading trusts nothing: the config is size-capped JSON whose fields are
checked (:class:`ModelConfig` refuses unknown fields and absurd sizes) and the
tensors must match the architecture's names and shapes exactly.

This module reads and writes the plain formats (``format`` fp32 or fp16, or
none) and holds the checks every format shares; :mod:`chopinbot.model.formats`
builds the compressed and exported formats on it, and its
:func:`~chopinbot.model.formats.load_model` reads any of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from chopinbot import __version__
from chopinbot.constants import BUNDLED_MODELS_DIR, SHIPPED_MODEL_DIR
from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import dir_mode, file_mode, sha256_file
from chopinbot.model.network import ChopinLSTM, ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MAX_CONFIG_BYTES = 1_000_000
MAX_WEIGHTS_BYTES = 2_000_000_000
PLAIN_FORMATS = ("fp32", "fp16")


def write_checkpoint_dir(
    folder: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra_files: dict[str, dict[str, torch.Tensor] | dict[str, Any] | Path] | None = None,
) -> Path:
    """Write ``tensors`` and ``config`` into ``folder``, replacing it atomically.

    ``extra_files`` maps further file names to their content: tensors (a
    ``.safetensors`` name), JSON (any other name) or a :class:`~pathlib.Path`
    whose file is copied in."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        for name, content in (extra_files or {}).items():
            if isinstance(content, Path):
                shutil.copyfile(content, tmp / name)
            elif name.endswith(".safetensors"):
                save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, str(tmp / name))
            else:
                (tmp / name).write_text(json.dumps(content, indent=2))
        cfg = dict(config, weights_sha256=sha256_file(tmp / WEIGHTS), chopinbot=__version__)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))
        swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def swap_in(tmp: Path, folder: Path) -> None:
    """Make the fully written temp folder ``tmp`` the checkpoint ``folder``:
    fsync and open up its files, then swap by renames, keeping ``folder.old``
    while ``folder`` is missing (a crash between the two renames)."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(f, file_mode())
    os.chmod(tmp, dir_mode())  # mkdtemp makes a private folder
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def bundled_models() -> dict[str, Path]:
    """The models shipped inside the package: name -> folder (the default is ``SHIPPED_MODEL``)."""
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    folders = sorted(BUNDLED_MODELS_DIR.iterdir())
    return {d.name: d for d in folders if (d / CONFIG).is_file() and (d / WEIGHTS).is_file()}


def model_name(path: str | os.PathLike | None) -> str:
    """A model's name for titles and summaries: a bundled model's name, or its run folder's
    (``runs/schubert/best`` -> ``schubert``)."""
    folder = resolve_checkpoint(path)
    name = folder.name.removesuffix(".old")
    return folder.parent.name if name in ("best", "last") else name


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """The folder holding a checkpoint: ``path`` itself, its ``best/`` (a run
    folder), the ``.old`` copy left by an interrupted swap, a bundled model's
    name (when no such path exists), or the shipped model (None)."""
    if path is None:
        return SHIPPED_MODEL_DIR
    p = Path(path)
    named = bundled_models()
    if not p.exists() and str(path) in named:
        return named[str(path)]
    for cand in (p, p / "best", p / "last"):
        if (cand / CONFIG).exists() and (cand / WEIGHTS).exists():
            return cand
        old = cand.with_name(cand.name + ".old")
        if (old / CONFIG).exists() and (old / WEIGHTS).exists():
            return old
    if not p.exists():
        raise ModelFileError(f"{p}: no such model folder or bundled model (bundled: {', '.join(named) or 'none'})")
    raise ModelFileError(f"{p}: not a ChopinBot checkpoint (needs {CONFIG} and {WEIGHTS})")


def model_file(folder: Path, name: str) -> Path:
    """``folder/name`` if it is a regular file inside ``folder`` (a symlink may
    point only within it): never a device, a pipe, a folder or a file elsewhere."""
    p = folder / name
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModelFileError(f"{p}: missing or unreadable") from None
    if not real.is_relative_to(folder.resolve()):
        raise ModelFileError(f"{p}: points outside the model folder")
    if not real.is_file():
        raise ModelFileError(f"{p}: not a regular file")
    return p


def read_config(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``: size-capped JSON with a ``model`` section."""
    cpath = model_file(folder, CONFIG)
    with open(cpath, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{cpath}: config larger than {MAX_CONFIG_BYTES:,} bytes")
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ModelFileError(f"{cpath}: not valid JSON ({str(e)[:100]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ModelFileError(f"{cpath}: no 'model' section")
    return cfg


def model_config(folder: Path, cfg: dict[str, Any]) -> ModelConfig:
    """The architecture a checkpoint's config describes (checked field by field)."""
    try:
        return ModelConfig.from_dict(cfg["model"])
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{folder / CONFIG}: invalid model config: {e}") from None


def checked_weights(folder: Path, cfg: dict[str, Any]) -> Path:
    """The checkpoint's weights file: a regular file, not oversized, matching
    the sha256 the config records."""
    wpath = model_file(folder, WEIGHTS)
    if wpath.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelFileError(f"{wpath}: weights file too large")
    if cfg.get("weights_sha256") and cfg["weights_sha256"] != sha256_file(wpath):
        raise ModelFileError(f"{wpath}: weights do not match the config's sha256 (file changed or damaged)")
    return wpath


def read_tensors(folder: Path, cfg: dict[str, Any]) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights file (see :func:`checked_weights`) and its tensors."""
    wpath = checked_weights(folder, cfg)
    try:
        return wpath, load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{wpath}: not a valid safetensors file ({e})") from None


def load_checkpoint(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> ChopinLSTM:
    """Load a plain (fp32/fp16) checkpoint from a checkpoint or run folder
    (default: the shipped model); other formats are refused (see
    :func:`chopinbot.model.formats.load_model`, which reads every format).

    The returned model is in eval mode and carries ``.meta`` (its config.json)."""
    folder = resolve_checkpoint(path)
    cfg = read_config(folder)
    fmt = cfg.get("format", "fp32")
    if fmt not in PLAIN_FORMATS:
        raise ModelFileError(f"{folder / CONFIG}: format {fmt!r} is not a plain checkpoint "
                             f"(chopinbot.model.formats.load_model reads it)")
    mcfg = model_config(folder, cfg)
    wpath, tensors = read_tensors(folder, cfg)
    model = ChopinLSTM(mcfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    got = {k: v.shape for k, v in tensors.items()}
    if set(expected) != set(got):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise ModelFileError(f"{wpath}: tensors do not match the config "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for k, shape in expected.items():
        if got[k] != shape:
            raise ModelFileError(f"{wpath}: tensor {k} has shape {tuple(got[k])}, config implies {tuple(shape)}")
    for k, v in tensors.items():
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise ModelFileError(f"{wpath}: tensor {k} is not float or holds NaN/infinite values")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.meta = cfg
    return model.to(device).eval()


def save_model(folder: str | os.PathLike, model: ChopinLSTM, meta: dict[str, Any] | None = None,
               dtype: torch.dtype | None = None, extra_files: dict | None = None) -> Path:
    """Save ``model`` (optionally cast, e.g. to fp16) with its config and ``meta``."""
    sd = model.state_dict()
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    cfg = dict(meta or {}, model=model.config.to_dict())
    return write_checkpoint_dir(folder, sd, cfg, extra_files)


def ship_model(run_dir: str | os.PathLike, dest: str | os.PathLike = SHIPPED_MODEL_DIR,
               dtype: torch.dtype = torch.float16) -> Path:
    """Make a run's best checkpoint the shipped model: weights cast to
    ``dtype`` (fp16 halves the file; the evaluation checks quality holds),
    plus the run's CSVs and training config so its curves can be redrawn."""
    run = Path(run_dir)
    model = load_checkpoint(run / "best")
    files = {name: run / name for name in ("metrics.csv", "grads.csv", "weights.csv", "train_config.json")
             if (run / name).exists()}
    return save_model(dest, model, {k: v for k, v in model.meta.items() if k not in ("model", "weights_sha256")},
                      dtype=dtype, extra_files=files)
