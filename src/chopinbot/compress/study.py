"""Smaller and faster models: pruning, int8/fp16 storage, ONNX and TorchScript export.

Everything here writes a checkpoint *folder* like :mod:`chopinbot.model.checkpoint`
(``config.json`` + ``model.safetensors``, swapped in atomically, never a
pickle); ``config.json`` gains a ``format`` field:

``fp32`` / ``fp16``
    plain checkpoints (:func:`chopinbot.model.checkpoint.load_model` reads them).
``sparse``
    a pruned model.  Each pruned weight matrix is stored as a bitmask of its
    non-zero entries (``NAME::mask``, 1 bit per entry, packed into uint8, row
    major, MSB first as :func:`numpy.packbits`) and the non-zero values in row
    major order (``NAME::values``: fp32, fp16, or int8 with one fp32 scale per
    row in ``NAME::scale``).  Biases, the pitch embedding and LayerNorm stay
    dense fp32.  The file shrinks with the sparsity: at sparsity *s* a weight
    costs ``(1 - s) * bits + 1`` bits instead of 32.
``int8``
    every LSTM and linear weight matrix as int8 with one fp32 scale per row
    (symmetric, ``scale = max|row| / 127``, so ``q`` is in -127..127); the
    rest dense fp32.
``onnx`` / ``torchscript``
    a one-step network (inputs ``x``, ``h0``, ``c0``; outputs the key, onset
    and duration logits and the new ``h``, ``c``) in ``model.onnx`` /
    ``model.pt``; ``model.safetensors`` is then an empty placeholder (the
    checkpoint layout requires it) and ``config.json`` records the artifact's
    sha256 and the measured difference from PyTorch.

:func:`load_any` rebuilds a model from any of them that behaves like
:class:`~chopinbot.model.network.ChopinLSTM` for :func:`chopinbot.compose.generate.generate`
(same call signature, ``.config``, ``.meta``, ``.expected_duration``,
``.point_duration``, eval mode).  Loading trusts nothing: sizes, dtypes,
shapes, mask lengths and popcounts are checked against the architecture
before anything is allocated from them.

An ``int8`` or ``sparse``-int8 model runs, by default, with PyTorch's
*dynamic* quantization of the LSTM (``quantize_dynamic``, int8 weights,
activations quantized on the fly) on CPU; the stored per-row scales are
chosen so that this re-quantization reproduces the stored integers exactly.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from chopinbot import __version__
from chopinbot.model.checkpoint import (CONFIG, MAX_WEIGHTS_BYTES, WEIGHTS, read_config, resolve_checkpoint, swap_in,
                         write_checkpoint_dir)
from chopinbot.constants import N_KEYS
from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import sha256_file
from chopinbot.model.network import NEIGHBOURS, ChopinLSTM, ModelConfig, Outputs

PLAIN_FORMATS = ("fp32", "fp16")
FORMATS = ("fp32", "fp16", "sparse", "int8", "onnx", "torchscript")
VALUE_DTYPES = ("fp32", "fp16", "int8")
RUNTIMES = ("float", "int8")
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
MAX_ARTIFACT_BYTES = 2_000_000_000
ONNX_OPSET = 17
# next-state probabilities of an exported model may differ from PyTorch's by
# at most this much (float32 re-association; measured ~1e-6)
EXPORT_TOLERANCE = 1e-4
# dynamic quantization of these layers is what makes batch-1 generation
# faster (see docs/compression.md); quantizing the small linear layers too
# costs more in activation quantization than it saves
DEFAULT_INT8_LAYERS = ("lstm",)


# --------------------------------------------------------------------------- helpers


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, parameter name) pairs pruned and quantized: every LSTM
    weight matrix (input-hidden and hidden-hidden, all layers) and every
    linear layer's weight.  Biases, embeddings and norms are left alone."""
    out: list[tuple[nn.Module, str]] = []
    for mod in model.modules():
        if isinstance(mod, nn.LSTM):
            out += [(mod, n) for n in mod._flat_weights_names if n.startswith("weight_")]
        elif isinstance(mod, nn.Linear):
            out.append((mod, "weight"))
    return out


def weight_names(model: nn.Module) -> list[str]:
    """Full state-dict names of the :func:`prunable` weights."""
    ids = {id(m): n for n, m in model.named_modules()}
    return [f"{ids[id(m)]}.{n}" if ids[id(m)] else n for m, n in prunable(model)]


def _effective(mod: nn.Module, name: str) -> torch.Tensor:
    """A parameter as the forward pass sees it (``orig * mask`` while pruning)."""
    if hasattr(mod, name + "_orig"):
        return getattr(mod, name + "_orig") * getattr(mod, name + "_mask")
    return getattr(mod, name)


def dense_state_dict(model: ChopinLSTM) -> dict[str, torch.Tensor]:
    """The plain state dict of a (possibly still pruning-reparametrized) model."""
    names = ChopinLSTM(model.config).state_dict().keys()
    out = {}
    for k in names:
        prefix, _, attr = k.rpartition(".")
        mod = model.get_submodule(prefix) if prefix else model
        out[k] = _effective(mod, attr).detach().clone()
    return out


def sparsity_of(model: ChopinLSTM) -> float:
    """Fraction of zeros among the prunable weights."""
    zeros = total = 0
    for mod, name in prunable(model):
        w = _effective(mod, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def layer_sparsity(model: ChopinLSTM) -> dict[str, float]:
    ids = {id(m): n for n, m in model.named_modules()}
    return {f"{ids[id(m)]}.{n}": float((_effective(m, n) == 0).float().mean()) for m, n in prunable(model)}


def plain_copy(model: ChopinLSTM) -> ChopinLSTM:
    """A fresh float :class:`ChopinLSTM` with ``model``'s effective weights
    (pruning made permanent), in eval mode, carrying ``.meta``."""
    fresh = ChopinLSTM(model.config)
    fresh.load_state_dict(dense_state_dict(model))
    fresh.meta = dict(getattr(model, "meta", {}))
    return fresh.eval()


def fp32_bytes(model: ChopinLSTM) -> int:
    """Size of the model's plain fp32 ``model.safetensors`` (the reference)."""
    from safetensors.torch import save

    return len(save({k: v.float().contiguous() for k, v in dense_state_dict(model).items()}))


def weights_bytes(folder: str | os.PathLike) -> int:
    """Bytes of a checkpoint's weight files (``model.safetensors`` plus an
    exported ``model.onnx`` / ``model.pt``); ``config.json`` not counted."""
    folder = resolve_checkpoint(folder)
    return sum((folder / n).stat().st_size for n in (WEIGHTS, ONNX_FILE, TORCHSCRIPT_FILE) if (folder / n).exists())


def folder_bytes(folder: str | os.PathLike) -> int:
    folder = resolve_checkpoint(folder)
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


# --------------------------------------------------------------------------- pruning


def prune_model(model: ChopinLSTM, sparsity: float) -> ChopinLSTM:
    """Global magnitude pruning (``torch.nn.utils.prune.global_unstructured``
    with L1 importance) of all :func:`prunable` weights until ``sparsity`` of
    them are zero.  Masks accumulate: calling again with a higher sparsity
    prunes further.  The pruning stays a reparametrization (trainable) until
    :func:`make_permanent`."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    params = prunable(model)
    # the fraction already masked (global_unstructured counts unmasked entries, zero-valued or not)
    masked = sum(int((getattr(m, n + "_mask") == 0).sum()) for m, n in params if hasattr(m, n + "_mask"))
    current = masked / max(1, sum(getattr(m, n + "_orig", getattr(m, n)).numel() for m, n in params))
    if sparsity <= current + 1e-9:
        for mod, name in params:  # keep every weight reparametrized, so one optimizer serves all steps
            if not hasattr(mod, name + "_orig"):
                prune.identity(mod, name)
        return model
    # global_unstructured prunes ``amount`` of the entries not yet pruned
    amount = (sparsity - current) / (1.0 - current)
    scores = {(m, n): _effective(m, n).detach().abs() for m, n in params}  # current weights, never stale ones
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=amount)
    return model


def make_permanent(model: ChopinLSTM) -> ChopinLSTM:
    """Fold the pruning masks into the weights (``prune.remove``) in place."""
    for mod, name in prunable(model):
        if hasattr(mod, name + "_orig"):
            prune.remove(mod, name)
    if isinstance(model.lstm, nn.LSTM):
        model.lstm.flatten_parameters()
    return model


def polynomial_sparsity(s0: float, s1: float, t: float) -> float:
    """Zhu & Gupta's schedule: ``s1 + (s0 - s1) * (1 - t)^3`` for t in [0, 1]
    (fast pruning early, while the network can still recover, slow at the end)."""
    t = min(max(t, 0.0), 1.0)
    return s1 + (s0 - s1) * (1.0 - t) ** 3


@dataclass
class FinetuneSettings:
    """How a pruned model is fine-tuned between sparsity steps."""

    epochs: int = 2  # per sparsity step; 0 = one-shot pruning without fine-tuning
    schedule: str = "polynomial"  # "polynomial" (gradual, Zhu & Gupta) or "oneshot"
    ramp: float = 0.5  # polynomial: the sparsity reaches its target after this fraction of the step's updates
    prune_points: int = 8  # polynomial: pruning events per step
    lr: float = 5e-4  # AdamW, constant
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = False

    def validate(self) -> None:
        if self.schedule not in ("polynomial", "oneshot"):
            raise ConfigError("schedule must be polynomial or oneshot")
        if self.epochs < 0:
            raise ConfigError("finetune epochs must be 0 or more")
        if not (0 < self.ramp <= 1) or self.prune_points < 1:
            raise ConfigError("ramp must be in (0, 1] and prune_points at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr must be positive")


@dataclass
class PruneStep:
    """One sparsity target reached: the permanent model and how it got there."""

    target: float
    sparsity: float  # measured over the prunable weights
    model: ChopinLSTM  # plain ChopinLSTM, pruning made permanent, eval mode
    epochs: list[dict[str, float]] = field(default_factory=list)  # valid metrics after each fine-tuning epoch
    chosen_epoch: int = 0  # the fine-tuning epoch kept (best valid Maestro loss at the target; 0 = none)
    seconds: float = 0.0


def parse_sparsities(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sparsity must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0 < v < 1 for v in vals):
        raise ConfigError("each sparsity must be strictly between 0 and 1")
    if vals != sorted(vals) or len(set(vals)) != len(vals):
        raise ConfigError("sparsities must increase (each step prunes further)")
    return vals


def prune_schedule(model: ChopinLSTM, targets: list[float], dataset, settings: FinetuneSettings | None = None,
                   ) -> Iterator[PruneStep]:
    """Prune ``model`` (not modified: a copy is pruned) to each of ``targets``
    in turn, fine-tuning on ``dataset``'s train pieces in between, and yield a
    permanent copy at each target.

    Fine-tuning reuses the training loop's pieces (whole-sequence chunks, the
    Maestro loss, transposition and gradient clipping with the model's own
    training settings; AdamW at ``settings.lr``).  After
    each epoch at the target sparsity the valid Maestro loss is measured and
    the best epoch's weights are kept: the original design's pruned model
    lost F1 over five epochs of fine-tuning at a fixed sparsity, which
    selection on the valid pieces prevents.
    """
    from chopinbot.model.predict import compute_losses, evaluate_split
    from chopinbot.dataset.batches import SplitData

    s = settings or FinetuneSettings()
    s.validate()
    meta = dict(getattr(model, "meta", {}))
    tr = meta.get("train", {})
    harshness = float(meta.get("harshness", tr.get("harshness", 0.05)))
    loss_clip = bool(meta.get("loss_clip", tr.get("loss_clip", True)))
    ce_weight = float(tr.get("dur_ce_weight", 0.1))
    context, batch = int(tr.get("context", 64)), int(tr.get("batch", 16))
    clip_grad = float(tr.get("clip_grad", 1.0))
    transpose = int(tr.get("transpose", 0))  # the training run's augmentation, kept while fine-tuning
    work = plain_copy(model)
    vocab = work.config.vocab
    train_split = SplitData(dataset, "train", vocab)
    valid_split = SplitData(dataset, "valid", vocab)
    if s.epochs and (train_split.n_targets == 0 or valid_split.n_targets == 0):
        raise ConfigError("fine-tuning needs train and valid pieces in the dataset")
    torch.manual_seed(s.seed)
    prune_model(work, 0.0)  # reparametrize every weight now: one optimizer for all steps
    opt = torch.optim.AdamW(work.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    previous = 0.0
    for i, target in enumerate(targets):
        t0 = time.perf_counter()
        history: list[dict[str, float]] = []
        if s.epochs == 0:
            prune_model(work, target)
            chosen = 0
        else:
            rng = np.random.default_rng([s.seed, i])
            n_chunks = len(train_split.chunks(context))
            spe = max(1, math.ceil(n_chunks / batch))
            total = s.epochs * spe
            if s.schedule == "oneshot":
                points = {0: target}
            else:
                ramp_end = max(1, int(round(s.ramp * total)))
                points = {}
                for j in range(s.prune_points):
                    u = int(round(j * ramp_end / max(1, s.prune_points - 1))) if s.prune_points > 1 else 0
                    points[min(u, total - 1)] = polynomial_sparsity(previous, target, (j + 1) / s.prune_points)
            last_prune = max(points)
            best_loss, best_state, chosen, update = float("inf"), None, 0, 0
            for epoch in range(1, s.epochs + 1):
                work.train()
                units = train_split.chunks(context, rng)
                order = rng.permutation(len(units))
                for b in range(0, len(order), batch):
                    if update in points:
                        prune_model(work, points[update])
                    idx = order[b : b + batch]
                    shifts = rng.integers(-transpose, transpose + 1, len(idx)) if transpose else None
                    x, t = train_split.batch([units[k] for k in idx], shifts, **work.config.input_blocks)
                    out, _ = work(x)
                    losses = compute_losses(work, out, t, harshness, loss_clip, ce_weight)
                    opt.zero_grad(set_to_none=True)
                    losses["total"].backward()
                    if clip_grad:
                        torch.nn.utils.clip_grad_norm_(work.parameters(), clip_grad)
                    opt.step()
                    update += 1
                if epoch == s.epochs and update <= last_prune:  # fewer chunks than planned: finish the ramp
                    prune_model(work, target)
                    update = last_prune + 1
                vsum = evaluate_split(work, valid_split, harshness, loss_clip, ce_weight).summary()
                at_target = update > last_prune
                history.append({"epoch": epoch, "sparsity": sparsity_of(work), "at_target": at_target,
                                **{f"valid_{k}": float(v) for k, v in vsum.items()}})
                if s.progress:
                    print(f"  sparsity {target:.2f} epoch {epoch}: valid loss {vsum['maestro']:.4f} "
                          f"F1 {vsum['f1_best']:.3f} (sparsity now {sparsity_of(work):.3f})", flush=True)
                if at_target and vsum["maestro"] < best_loss:
                    best_loss, chosen = vsum["maestro"], epoch
                    best_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
            prune_model(work, target)  # (a no-op unless the ramp was cut short)
            if best_state is not None:
                work.load_state_dict(best_state)
        snapshot = plain_copy(work)
        snapshot.meta = dict(meta, pruning={"target": target, "schedule": s.schedule, "finetune_epochs": s.epochs,
                                            "chosen_epoch": chosen, "lr": s.lr})
        yield PruneStep(target, sparsity_of(snapshot), snapshot, history, chosen, time.perf_counter() - t0)
        previous = target


# --------------------------------------------------------------------------- int8 / fp16 storage


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``w ~= q * scale[:, None]``, q in -127..127."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def _to_dtype(v: torch.Tensor, values: str) -> torch.Tensor:
    return v.half() if values == "fp16" else v.float()


def compressed_tensors(model: ChopinLSTM, sparse: bool, values: str) -> dict[str, torch.Tensor]:
    """The safetensors dict of the ``sparse`` or ``int8`` storage."""
    if values not in VALUE_DTYPES:
        raise ConfigError(f"values must be one of {', '.join(VALUE_DTYPES)}")
    sd = dense_state_dict(model)
    wnames = set(weight_names(model))
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in wnames:
            out[k] = v.float()
            continue
        if values == "int8":
            q, scale = quantize_rows(v)
            out[f"{k}::scale"] = scale
            v = q
        if sparse:
            flat = v.reshape(-1)
            mask = (flat != 0).numpy()
            out[f"{k}::mask"] = torch.from_numpy(np.packbits(mask))
            out[f"{k}::values"] = flat[torch.from_numpy(mask)].clone() if values == "int8" else _to_dtype(
                flat[torch.from_numpy(mask)], values)
        else:
            out[f"{k}::q" if values == "int8" else k] = v if values == "int8" else _to_dtype(v, values)
    return out


def _storage_info(fmt: str, values: str, sparse: bool) -> dict[str, Any]:
    desc = {
        "sparse": f"pruned LSTM/linear weights as a 1-bit-per-entry mask (packed uint8) + the non-zero values "
                  f"({'int8 with one fp32 scale per row' if values == 'int8' else values}); other tensors dense fp32",
        "int8": "LSTM/linear weights as int8 with one fp32 scale per row (symmetric, scale = max|row|/127); "
                "other tensors dense fp32",
        "fp16": "every tensor fp16",
        "fp32": "every tensor fp32",
    }[fmt]
    return {"layout": "bitmask" if sparse else "dense", "values": values,
            "scales": "per-row fp32" if values == "int8" else None, "other": "fp32" if fmt != "fp16" else "fp16",
            "description": desc}


def save_compressed(folder: str | os.PathLike, model: ChopinLSTM, meta: dict[str, Any] | None = None, *,
                    values: str = "fp16", sparse: bool | None = None, runtime: str | None = None) -> Path:
    """Write ``model`` (a plain or still-pruning ChopinLSTM) into ``folder``.

    ``values``: fp32, fp16 or int8 for the weight matrices.  ``sparse``:
    bitmask storage (default: when more than 2 / bits of the weights are
    zero, i.e. 6 %, 12.5 %, 25 % for fp32, fp16, int8, where the 1-bit mask
    clearly pays for itself).  Dense fp32/fp16 give a
    plain checkpoint (``format`` fp32/fp16); dense int8 gives ``int8``;
    bitmask storage gives ``sparse``.  ``runtime`` (int8 values only): how
    :func:`load_any` runs it by default, ``int8`` (dynamic quantization,
    CPU) or ``float`` (dequantized); default int8."""
    if values not in VALUE_DTYPES:
        raise ConfigError(f"values must be one of {', '.join(VALUE_DTYPES)}, got {values!r}")
    if sparse is None:  # the mask costs 1 bit per weight: worth it once it clearly saves more than that
        sparse = sparsity_of(model) > 2.0 / {"fp32": 32, "fp16": 16, "int8": 8}[values]
    meta = dict(getattr(model, "meta", {}) if meta is None else meta)
    for k in ("weights_sha256", "chopinbot", "model", "format", "storage", "runtime", "sparsity"):
        meta.pop(k, None)
    if not sparse and values != "int8":
        fmt = values
        tensors = {k: _to_dtype(v, values) for k, v in dense_state_dict(model).items()}
    else:
        fmt = "sparse" if sparse else "int8"
        tensors = compressed_tensors(model, sparse, values)
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}")
    cfg = dict(meta, model=model.config.to_dict(), format=fmt, storage=_storage_info(fmt, values, sparse),
               sparsity=round(sparsity_of(model), 6))
    if values == "int8":
        cfg["runtime"] = runtime or "int8"
    return write_checkpoint_dir(folder, tensors, cfg)


def _check_weights_file(folder: Path, cfg: dict[str, Any]) -> Path:
    wpath = folder / WEIGHTS
    if wpath.stat().st_size > MAX_WEIGHTS_BYTES:
        raise ModelFileError(f"{wpath}: weights file too large")
    if cfg.get("weights_sha256") and cfg["weights_sha256"] != sha256_file(wpath):
        raise ModelFileError(f"{wpath}: weights do not match the config's sha256 (file changed or damaged)")
    return wpath


def _model_config(folder: Path, cfg: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(cfg["model"])
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{folder / CONFIG}: invalid model config: {e}") from None


def load_compressed(path: str | os.PathLike | None, runtime: str | None = None) -> ChopinLSTM:
    """Read a ``sparse`` or ``int8`` checkpoint back into a dense model.

    ``runtime``: ``float`` gives a plain fp32 :class:`ChopinLSTM` (any
    device); ``int8`` (CPU only) applies dynamic quantization; default: the
    folder's ``runtime`` field (int8 values) or float."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    cfg = read_config(folder)
    fmt = cfg.get("format")
    if fmt not in ("sparse", "int8"):
        raise ModelFileError(f"{folder / CONFIG}: format {fmt!r} is not a compressed checkpoint")
    storage = cfg.get("storage")
    if not isinstance(storage, dict) or storage.get("values") not in VALUE_DTYPES:
        raise ModelFileError(f"{folder / CONFIG}: missing or invalid 'storage' section")
    values = storage["values"]
    sparse = fmt == "sparse"
    if fmt == "int8" and values != "int8":
        raise ModelFileError(f"{folder / CONFIG}: int8 format with {values} values")
    mcfg = _model_config(folder, cfg)
    wpath = _check_weights_file(folder, cfg)
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{wpath}: not a valid safetensors file ({e})") from None
    model = ChopinLSTM(mcfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    wnames = set(weight_names(model))
    want_dtype = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8}[values]
    used: set[str] = set()
    sd: dict[str, torch.Tensor] = {}

    def take(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in tensors:
            raise ModelFileError(f"{wpath}: tensor {name} is missing")
        t = tensors[name]
        if t.dtype != dtype or tuple(t.shape) != tuple(shape):
            raise ModelFileError(f"{wpath}: tensor {name} has dtype {t.dtype} and shape {tuple(t.shape)}, expected "
                                 f"{dtype} of shape {tuple(shape)}")
        used.add(name)
        return t

    for k, shape in expected.items():
        if k not in wnames:
            t = tensors.get(k)
            if t is None or tuple(t.shape) != tuple(shape) or not t.is_floating_point():
                raise ModelFileError(f"{wpath}: tensor {k} missing or not a float tensor of shape {tuple(shape)}")
            used.add(k)
            sd[k] = t.float()
            continue
        rows, numel = shape[0], math.prod(shape)
        scale = take(f"{k}::scale", torch.float32, (rows,)) if values == "int8" else None
        if scale is not None and not (torch.isfinite(scale).all() and (scale > 0).all()):
            raise ModelFileError(f"{wpath}: tensor {k}::scale holds non-positive or non-finite scales")
        if sparse:
            packed = take(f"{k}::mask", torch.uint8, ((numel + 7) // 8,))
            mask = np.unpackbits(packed.numpy(), count=numel).astype(bool)
            vals = take(f"{k}::values", want_dtype, (int(mask.sum()),))
            flat = torch.zeros(numel, dtype=want_dtype)
            flat[torch.from_numpy(mask)] = vals
            dense = flat.view(shape)
        else:
            dense = take(f"{k}::q", torch.int8, tuple(shape))
        w = dense.float() * scale[:, None] if scale is not None else dense.float()
        if not torch.isfinite(w).all():
            raise ModelFileError(f"{wpath}: tensor {k} holds non-finite values")
        sd[k] = w
    extra = sorted(set(tensors) - used)
    if extra:
        raise ModelFileError(f"{wpath}: unexpected tensors {extra[:3]}")
    model.load_state_dict(sd)
    model.meta = cfg
    model.eval()
    runtime = runtime or (cfg.get("runtime") if values == "int8" else "float") or "float"
    if runtime not in RUNTIMES:
        raise ModelFileError(f"{folder / CONFIG}: unknown runtime {runtime!r}")
    if runtime == "int8":
        model = quantize_int8(model)
    return model


def quantize_int8(model: ChopinLSTM, layers: tuple[str, ...] = DEFAULT_INT8_LAYERS) -> ChopinLSTM:
    """Dynamic int8 quantization for CPU inference (``quantize_dynamic``):
    int8 weights with one scale per output row (symmetric, -127..127, the
    same grid as the ``int8`` storage, so stored integers survive exactly),
    activations quantized on the fly.  ``layers``: ``lstm`` and/or ``linear``.
    Returns a new model; it runs on CPU only."""
    from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig, quantize_dynamic

    kinds = {"lstm": nn.LSTM, "linear": nn.Linear}
    if not layers or any(layer not in kinds for layer in layers):
        raise ConfigError("layers must name lstm and/or linear")
    qconfig = QConfig(
        activation=PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                  quant_min=-127, quant_max=127),
    )
    base = plain_copy(model) if any(hasattr(m, n + "_orig") for m, n in prunable(model)) else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(copy.deepcopy(base).cpu().eval(), {kinds[k]: qconfig for k in layers}, dtype=torch.qint8)
    q.meta = dict(getattr(model, "meta", {}))
    q.int8_layers = tuple(layers)
    return q.eval()


# --------------------------------------------------------------------------- export


class _ExportStep(nn.Module):
    """The model's forward pass as ``(x, h0, c0) -> logits..., h, c``, written
    with export-friendly operations (the note head's neighbourhood is a
    gather with a constant index instead of ``unfold``, which the ONNX
    exporter cannot handle with dynamic shapes).  :func:`verify_export`
    checks it against the real forward pass."""

    def __init__(self, model: ChopinLSTM) -> None:
        super().__init__()
        self.m = model
        w = 2 * NEIGHBOURS + 1
        self.register_buffer("neigh", torch.arange(N_KEYS)[:, None] + torch.arange(w)[None, :], persistent=False)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        m, c = self.m, self.m.config
        h, (h1, c1) = m.lstm(m.lstm_inputs(x), (h0, c0))
        h = m.dense(m.norm(h))
        keys = m.key_out(h)
        onsets = m.onset_out(h) if m.onset_out is not None else None
        if m.skip is not None:
            s = m.skip(x[..., : 2 * N_KEYS])
            keys = keys + s[..., :N_KEYS]
            if onsets is not None:
                onsets = onsets + s[..., N_KEYS:]
        if c.note_head:
            B, T = x.shape[0], x.shape[1]
            kon = x[..., : 2 * N_KEYS].reshape(B, T, 2, N_KEYS)
            padded = torch.nn.functional.pad(kon, (NEIGHBOURS, NEIGHBOURS))
            local = padded[..., self.neigh]  # (B, T, 2, 88, w)
            local = local.transpose(2, 3).flatten(3)  # (B, T, 88, 2w), onsets' window after the keys'
            adj = m.note_mlp_on(local, x, h)
            keys = keys + adj[..., 0]
            if onsets is not None:
                onsets = onsets + adj[..., 1]
        dur = m.duration_outputs(x, h)
        if onsets is None:
            return keys, dur, h1, c1
        return keys, onsets, dur, h1, c1


def _output_names(config: ModelConfig) -> list[str]:
    return ["keys"] + (["onsets"] if config.onset_head else []) + ["duration", "h", "c"]


def _example_inputs(config: ModelConfig, batch: int = 2, steps: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, steps, config.input_dim, generator=g)
    x[..., : 2 * N_KEYS] = (x[..., : 2 * N_KEYS] < 0.08).float()  # keys and onsets are 0/1
    h = torch.randn(config.layers, batch, config.hidden, generator=g) * 0.3
    c = torch.randn(config.layers, batch, config.hidden, generator=g) * 0.3
    return x, h, c


def _float_model(model) -> ChopinLSTM:
    if not isinstance(model, ChopinLSTM) or not isinstance(model.lstm, nn.LSTM):
        raise ConfigError("export needs a float PyTorch model (load compressed models with runtime='float')")
    return plain_copy(model).cpu()


def export_onnx(model: ChopinLSTM, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write the one-step network as ONNX (batch and time dynamic) to ``path``
    (a file; atomically).  Inputs ``x`` (B, T, F), ``h0``/``c0`` (layers, B,
    hidden); outputs ``keys``, ``onsets`` (if the model has them),
    ``duration``, ``h``, ``c``."""
    from chopinbot.io_utils import atomic_write

    step = _ExportStep(_float_model(model)).eval()
    x, h, c = _example_inputs(model.config)
    outs = _output_names(model.config)
    dyn = {"x": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"}, "h": {1: "batch"},
           "c": {1: "batch"}}
    dyn.update({n: {0: "batch", 1: "time"} for n in outs if n not in ("h", "c")})

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(step, (x, h, c), tmp, dynamo=False, input_names=["x", "h0", "c0"], output_names=outs,
                              dynamic_axes=dyn, opset_version=opset, do_constant_folding=True)

    return atomic_write(path, write)


def export_torchscript(model: ChopinLSTM, path: str | os.PathLike) -> Path:
    """Trace the one-step network and save it with ``torch.jit.save`` (a zip
    of TorchScript code and tensors; see docs/compression.md on trust)."""
    from chopinbot.io_utils import atomic_write

    step = _ExportStep(_float_model(model)).eval()
    x, h, c = _example_inputs(model.config)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(step, (x, h, c), check_trace=False)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, tmp)

    return atomic_write(path, write)


class ExportedModel:
    """An ONNX (onnxruntime) or TorchScript network behind ChopinLSTM's
    interface, for :func:`chopinbot.compose.generate.generate`: ``model(x, state)``
    returns ``(Outputs, (h, c))``; CPU only."""

    expected_duration = ChopinLSTM.expected_duration
    point_duration = ChopinLSTM.point_duration

    def __init__(self, config: ModelConfig, run: Callable, kind: str, meta: dict[str, Any] | None = None) -> None:
        self.config = config
        self._run = run
        self.kind = kind
        self.meta = meta or {}
        self.training = False

    def eval(self) -> "ExportedModel":
        return self

    def to(self, device) -> "ExportedModel":
        if torch.device(device).type != "cpu":
            raise ConfigError(f"an exported {self.kind} model runs on CPU only")
        return self

    def __call__(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        c = self.config
        if state is None:
            z = torch.zeros(c.layers, x.shape[0], c.hidden, dtype=torch.float32)
            state = (z, z)
        outs = self._run(x.float().contiguous(), state[0].float().contiguous(), state[1].float().contiguous())
        if c.onset_head:
            keys, onsets, dur, h, cc = outs
        else:
            (keys, dur, h, cc), onsets = outs, None
        return Outputs(keys, onsets, dur), (h, cc)

    forward = __call__


def _onnx_runner(path: Path, threads: int | None = None) -> Callable:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("running ONNX models needs onnxruntime: pip install 'chopinbot[export]'") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(x, h, c):
        outs = sess.run(None, {"x": x.numpy(), "h0": h.numpy(), "c0": c.numpy()})
        return tuple(torch.from_numpy(o) for o in outs)

    return run


def _torchscript_runner(path: Path) -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(x, h, c):
        with torch.no_grad():
            return module(x, h, c)

    return run


def _probabilities(out: Outputs) -> list[torch.Tensor]:
    probs = [torch.sigmoid(out.key_logits)]
    if out.onset_logits is not None:
        probs.append(torch.sigmoid(out.onset_logits))
    probs.append(torch.softmax(out.duration, -1))
    return probs


@torch.no_grad()
def verify_export(reference: ChopinLSTM, exported, steps: int = 32, batch: int = 2, seed: int = 0) -> float:
    """Max absolute difference between the next-state probabilities (keys,
    onsets, duration classes) of ``exported`` and of PyTorch's ``reference``:
    over one multi-step call from a random state and then ``steps`` single
    steps with the state carried (as generation runs it)."""
    ref = plain_copy(reference) if isinstance(reference, ChopinLSTM) and isinstance(reference.lstm, nn.LSTM) \
        else reference
    x, h, c = _example_inputs(ref.config, batch, steps, seed)
    worst = 0.0
    a, sa = ref(x, (h, c))
    b, sb = exported(x, (h, c))
    for p, q in zip(_probabilities(a) + list(sa), _probabilities(b) + list(sb)):
        worst = max(worst, float((p - q).abs().max()))
    sa = sb = None
    for t in range(steps):
        xt = x[:, t : t + 1]
        a, sa = ref(xt, sa)
        b, sb = exported(xt, sb)
        for p, q in zip(_probabilities(a), _probabilities(b)):
            worst = max(worst, float((p - q).abs().max()))
    return worst


def _write_artifact_folder(folder: str | os.PathLike, artifact: Path, name: str, cfg: dict[str, Any]) -> Path:
    """A checkpoint folder holding an exported network, swapped in atomically
    like :func:`chopinbot.model.checkpoint.write_checkpoint_dir` (which cannot carry
    a non-safetensors file): an empty ``model.safetensors`` placeholder, the
    artifact and ``config.json`` with both sha256s."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({}, str(tmp / WEIGHTS))
        shutil.copyfile(artifact, tmp / name)
        cfg = dict(cfg, artifact=name, artifact_sha256=sha256_file(tmp / name), weights_sha256=sha256_file(tmp / WEIGHTS),
                   chopinbot=__version__)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))
        swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _export_meta(model) -> dict[str, Any]:
    meta = dict(getattr(model, "meta", {}))
    for k in ("weights_sha256", "chopinbot", "model", "format", "storage", "runtime", "artifact", "artifact_sha256",
              "verified"):
        meta.pop(k, None)
    return meta


def export_model(model: ChopinLSTM, fmt: str, out: str | os.PathLike, *, sparse: bool | None = None,
                 tolerance: float = EXPORT_TOLERANCE) -> dict[str, Any]:
    """``chopinbot export``: write ``model`` as ``fmt`` into the folder ``out``
    and return what was measured (sizes, max abs difference of the next-state
    probabilities from the fp32 model).  ONNX and TorchScript exports are run
    and compared before the folder is written; a difference above
    ``tolerance`` is an error."""
    if fmt not in ("fp16", "int8", "onnx", "torchscript", "fp32"):
        raise ConfigError("format must be fp32, fp16, int8, onnx or torchscript")
    ref = _float_model(model)
    ref.meta = dict(getattr(model, "meta", {}))
    info: dict[str, Any] = {"format": fmt, "fp32_bytes": fp32_bytes(ref)}
    if fmt in ("fp32", "fp16", "int8"):
        folder = save_compressed(out, ref, _export_meta(ref), values=fmt, sparse=sparse)
        loaded = load_any(folder)
        info["max_abs_diff"] = verify_export(ref, loaded)
        if fmt == "int8":
            info["max_abs_diff_float_runtime"] = verify_export(ref, load_any(folder, runtime="float"))
    else:
        name = ONNX_FILE if fmt == "onnx" else TORCHSCRIPT_FILE
        with tempfile.TemporaryDirectory() as td:
            art = Path(td) / name
            (export_onnx if fmt == "onnx" else export_torchscript)(ref, art)
            runner = _onnx_runner(art) if fmt == "onnx" else _torchscript_runner(art)
            diff = verify_export(ref, ExportedModel(ref.config, runner, fmt))
            if not diff <= tolerance:
                raise ModelFileError(f"the {fmt} export differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
            cfg = dict(_export_meta(ref), model=ref.config.to_dict(), format=fmt,
                       verified={"max_abs_diff": diff, "tolerance": tolerance,
                                 "compared": "sigmoid key/onset and softmax duration probabilities, h, c"},
                       io={"inputs": ["x", "h0", "c0"], "outputs": _output_names(ref.config),
                           "opset": ONNX_OPSET if fmt == "onnx" else None})
            folder = _write_artifact_folder(out, art, name, cfg)
        info["max_abs_diff"] = diff
    info["folder"] = str(folder)
    info["bytes"] = weights_bytes(folder)
    info["ratio"] = info["fp32_bytes"] / max(info["bytes"], 1)
    return info


# --------------------------------------------------------------------------- loading any format


def load_any(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             runtime: str | None = None):
    """Load a checkpoint of any :data:`FORMATS` (default: the shipped model).

    Plain fp32/fp16 go through :func:`chopinbot.model.checkpoint.load_model`;
    ``sparse``/``int8`` are rebuilt dense (``runtime`` as in
    :func:`load_compressed`; on a non-CPU device always float); ``onnx``
    runs in onnxruntime and ``torchscript`` in the TorchScript interpreter,
    both on CPU.  The model is in eval mode and carries ``.meta``."""
    folder = resolve_checkpoint(path)
    cfg = read_config(folder)
    fmt = cfg.get("format", "fp32")
    if fmt not in FORMATS:
        raise ModelFileError(f"{folder / CONFIG}: unknown format {fmt!r} (this version knows {', '.join(FORMATS)})")
    dev = torch.device(device)
    if fmt in PLAIN_FORMATS:
        from chopinbot.model.checkpoint import load_model

        return load_model(folder, dev)
    if fmt in ("sparse", "int8"):
        if dev.type != "cpu":
            runtime = "float"
        return load_compressed(folder, runtime).to(dev)
    if dev.type != "cpu":
        raise ConfigError(f"an exported {fmt} model runs on CPU only")
    mcfg = _model_config(folder, cfg)
    _check_weights_file(folder, cfg)
    name = ONNX_FILE if fmt == "onnx" else TORCHSCRIPT_FILE
    art = folder / name
    if cfg.get("artifact") != name or not art.exists():
        raise ModelFileError(f"{folder}: the {fmt} checkpoint has no {name}")
    if art.stat().st_size > MAX_ARTIFACT_BYTES:
        raise ModelFileError(f"{art}: file too large")
    if cfg.get("artifact_sha256") != sha256_file(art):
        raise ModelFileError(f"{art}: does not match the config's sha256 (file changed or damaged)")
    runner = _onnx_runner(art) if fmt == "onnx" else _torchscript_runner(art)
    return ExportedModel(mcfg, runner, fmt, cfg)


# --------------------------------------------------------------------------- quality and speed


def quality(model, dataset) -> dict[str, float]:
    """Test metrics as ``chopinbot evaluate`` reports them: the key decision
    threshold chosen on the valid pieces, then applied to the test pieces."""
    from chopinbot.model.predict import evaluate_split
    from chopinbot.dataset.batches import SplitData

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
    from chopinbot.dataset.prepare import PrepareSettings
    from chopinbot.compose.seeds import seed_from_test

    settings = getattr(model, "meta", {}).get("dataset_settings")
    return seed_from_test(0, 16, PrepareSettings(**settings) if settings else PrepareSettings())


def _time_generate(model, seed, steps: int, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one generation."""
    from chopinbot.compose.generate import GenerateConfig, generate

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


def measure_row(label: str, folder: Path, dataset, fp32_size: int, speed_steps: int, threads: int | None,
                runtime: str | None = None, reference=None, **extra) -> dict[str, Any]:
    """Load ``folder`` back (what is measured is what was saved) and measure
    it: test quality, size on disk, generation speed at batch 1 (alternating
    with ``reference``, the fp32 model, when given)."""
    model = load_any(folder, runtime=runtime)
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


def prune_study(model: ChopinLSTM, dataset, targets: list[float], out: str | os.PathLike,
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
    src = _float_model(model)
    src.meta = dict(getattr(model, "meta", {}))
    fp32_size = fp32_bytes(src)
    rows: list[dict[str, Any]] = []
    if reference:
        fmts = ["fp32", "fp16", "int8", "onnx", "torchscript"]
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
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
        from dataclasses import replace

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
        models = {k: load_any(f) for k, f in folders.items()}
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
    import csv
    import io

    from chopinbot.io_utils import atomic_write_json, atomic_write_text

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
    from chopinbot.render.plots import plt, save_figure

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
