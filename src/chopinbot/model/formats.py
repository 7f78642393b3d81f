"""Every stored model format, read and written: plain, pruned, int8, exported.

Every format is a checkpoint *folder* like :mod:`chopinbot.model.checkpoint`
(``config.json`` + ``model.safetensors``, swapped in atomically, never a
pickle); ``config.json`` gains a ``format`` field:

``fp32`` / ``fp16``
    plain checkpoints (:func:`chopinbot.model.checkpoint.load_checkpoint` reads them).
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
    a one-step network (inputs ``x``, ``h0``, ``c0``; outputs the key, onset,
    duration and (``loudness`` models) velocity-class logits and the new ``h``,
    ``c``) in ``model.onnx`` /
    ``model.pt`` (written by :mod:`chopinbot.compress.export`);
    ``model.safetensors`` is then an empty placeholder (the checkpoint layout
    requires it) and ``config.json`` records the artifact's sha256 and the
    measured difference from PyTorch.  A ``joint_keys`` model is never
    exported (its sampler evaluates the note head again for the keys below
    each key, which a one-step network does not expose).

:func:`load_model` rebuilds a model from any of them that behaves like
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
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import sha256_file
from chopinbot.model.checkpoint import (
    CONFIG,
    PLAIN_FORMATS,
    WEIGHTS,
    checked_weights,
    load_checkpoint,
    model_config,
    read_config,
    read_tensors,
    resolve_checkpoint,
    write_checkpoint_dir,
)
from chopinbot.model.network import ChopinLSTM, ModelConfig, Outputs

FORMATS = ("fp32", "fp16", "sparse", "int8", "onnx", "torchscript")
VALUE_DTYPES = ("fp32", "fp16", "int8")
RUNTIMES = ("float", "int8")
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
MAX_ARTIFACT_BYTES = 2_000_000_000
# dynamic quantization of these layers is what makes batch-1 generation
# faster (see docs/compression.md); quantizing the small linear layers too
# costs more in activation quantization than it saves
DEFAULT_INT8_LAYERS = ("lstm",)


# --------------------------------------------------------------------------- the compressed weights


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


def effective_weight(mod: nn.Module, name: str) -> torch.Tensor:
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
        out[k] = effective_weight(mod, attr).detach().clone()
    return out


def sparsity_of(model: ChopinLSTM) -> float:
    """Fraction of zeros among the prunable weights."""
    zeros = total = 0
    for mod, name in prunable(model):
        w = effective_weight(mod, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def plain_copy(model: ChopinLSTM) -> ChopinLSTM:
    """A fresh float :class:`ChopinLSTM` with ``model``'s effective weights
    (pruning made permanent), in eval mode, carrying ``.meta``."""
    fresh = ChopinLSTM(model.config)
    fresh.load_state_dict(dense_state_dict(model))
    fresh.meta = dict(getattr(model, "meta", {}))
    return fresh.eval()


def fp32_bytes(model: ChopinLSTM) -> int:
    """Size of the model's plain fp32 ``model.safetensors`` (the reference)."""
    return len(save({k: v.float().contiguous() for k, v in dense_state_dict(model).items()}))


def weights_bytes(folder: str | os.PathLike) -> int:
    """Bytes of a checkpoint's weight files (``model.safetensors`` plus an
    exported ``model.onnx`` / ``model.pt``); ``config.json`` not counted."""
    folder = resolve_checkpoint(folder)
    return sum((folder / n).stat().st_size for n in (WEIGHTS, ONNX_FILE, TORCHSCRIPT_FILE) if (folder / n).exists())


# --------------------------------------------------------------------------- int8 / fp16 / sparse storage


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


def storage_info(fmt: str, values: str, sparse: bool) -> dict[str, Any]:
    """The ``storage`` section of a config: how the weights are laid out, in words too."""
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
    :func:`load_model` runs it by default, ``int8`` (dynamic quantization,
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
    cfg = dict(meta, model=model.config.to_dict(), format=fmt, storage=storage_info(fmt, values, sparse),
               sparsity=round(sparsity_of(model), 6))
    if values == "int8":
        cfg["runtime"] = runtime or "int8"
    return write_checkpoint_dir(folder, tensors, cfg)


def load_compressed(path: str | os.PathLike | None, runtime: str | None = None) -> ChopinLSTM:
    """Read a ``sparse`` or ``int8`` checkpoint back into a dense model.

    ``runtime``: ``float`` gives a plain fp32 :class:`ChopinLSTM` (any
    device); ``int8`` (CPU only) applies dynamic quantization; default: the
    folder's ``runtime`` field (int8 values) or float."""
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
    mcfg = model_config(folder, cfg)
    wpath, tensors = read_tensors(folder, cfg)
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
    # imported here: torch.ao.quantization costs every plain model load (chopinbot generate) its import time
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


# --------------------------------------------------------------------------- exported networks (ONNX, TorchScript)


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

    def eval(self) -> ExportedModel:
        return self

    def to(self, device) -> ExportedModel:
        if torch.device(device).type != "cpu":
            raise ConfigError(f"an exported {self.kind} model runs on CPU only")
        return self

    def __call__(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        c = self.config
        if state is None:
            z = torch.zeros(c.layers, x.shape[0], c.hidden, dtype=torch.float32)
            state = (z, z)
        outs = list(self._run(x.float().contiguous(), state[0].float().contiguous(), state[1].float().contiguous()))
        keys = outs.pop(0)
        onsets = outs.pop(0) if c.onset_head else None
        dur = outs.pop(0)
        loudness = outs.pop(0) if c.loudness else None
        h, cc = outs
        return Outputs(keys, onsets, dur, loudness), (h, cc)

    forward = __call__


def onnx_runner(path: Path, threads: int | None = None) -> Callable:
    """``run(x, h, c) -> outputs`` of an ONNX file in onnxruntime (CPU)."""
    try:  # an optional dependency: pip install 'chopinbot[export]'
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


def torchscript_runner(path: Path) -> Callable:
    """``run(x, h, c) -> outputs`` of a TorchScript file (CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(x, h, c):
        with torch.no_grad():
            return module(x, h, c)

    return run


def write_artifact_folder(folder: str | os.PathLike, artifact: Path, cfg: dict[str, Any]) -> Path:
    """A checkpoint folder holding an exported network (``model.onnx`` or
    ``model.pt``, named as ``artifact``), swapped in atomically: an empty
    ``model.safetensors`` placeholder, the artifact and ``config.json`` with
    both sha256s."""
    name = artifact.name
    if name not in (ONNX_FILE, TORCHSCRIPT_FILE):
        raise ConfigError(f"an exported network is stored as {ONNX_FILE} or {TORCHSCRIPT_FILE}, not {name}")
    cfg = dict(cfg, artifact=name, artifact_sha256=sha256_file(artifact))
    return write_checkpoint_dir(folder, {}, cfg, extra_files={name: artifact})


def _load_artifact(folder: Path, cfg: dict[str, Any], fmt: str) -> ExportedModel:
    mcfg = model_config(folder, cfg)
    if mcfg.joint_keys:
        raise ModelFileError(f"{folder / CONFIG}: a joint_keys model cannot run as an {fmt} export")
    checked_weights(folder, cfg)
    name = ONNX_FILE if fmt == "onnx" else TORCHSCRIPT_FILE
    art = folder / name
    if cfg.get("artifact") != name or not art.exists():
        raise ModelFileError(f"{folder}: the {fmt} checkpoint has no {name}")
    if art.stat().st_size > MAX_ARTIFACT_BYTES:
        raise ModelFileError(f"{art}: file too large")
    if cfg.get("artifact_sha256") != sha256_file(art):
        raise ModelFileError(f"{art}: does not match the config's sha256 (file changed or damaged)")
    runner = onnx_runner(art) if fmt == "onnx" else torchscript_runner(art)
    return ExportedModel(mcfg, runner, fmt, cfg)


# --------------------------------------------------------------------------- loading any format


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               runtime: str | None = None) -> ChopinLSTM | ExportedModel:
    """Load a model of any :data:`FORMATS` from a checkpoint or run folder
    (default: the shipped model).

    Plain fp32/fp16 go through :func:`chopinbot.model.checkpoint.load_checkpoint`;
    ``sparse``/``int8`` are rebuilt dense (``runtime`` as in
    :func:`load_compressed`; on a non-CPU device always float); ``onnx``
    runs in onnxruntime and ``torchscript`` in the TorchScript interpreter,
    both on CPU.  The model is in eval mode and carries ``.meta`` (its config.json)."""
    folder = resolve_checkpoint(path)
    cfg = read_config(folder)
    fmt = cfg.get("format", "fp32")
    if fmt not in FORMATS:
        raise ModelFileError(f"{folder / CONFIG}: unknown format {fmt!r} (this version knows {', '.join(FORMATS)})")
    dev = torch.device(device)
    if fmt in PLAIN_FORMATS:
        return load_checkpoint(folder, dev)
    if fmt in ("sparse", "int8"):
        if dev.type != "cpu":
            runtime = "float"
        return load_compressed(folder, runtime).to(dev)
    if dev.type != "cpu":
        raise ConfigError(f"an exported {fmt} model runs on CPU only")
    return _load_artifact(folder, cfg, fmt)
