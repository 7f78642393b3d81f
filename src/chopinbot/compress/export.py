"""ONNX and TorchScript export, and ``chopinbot export`` of any format.

An exported network is the model's one-step forward pass (inputs ``x``,
``h0``, ``c0``; outputs the key, onset, duration and (``loudness`` models)
velocity-class logits and the new ``h``, ``c``), run and compared with PyTorch before it is written into a
checkpoint folder (:func:`chopinbot.model.formats.write_artifact_folder`);
:func:`chopinbot.model.formats.load_model` reads it back as an
:class:`~chopinbot.model.formats.ExportedModel`.  A ``joint_keys`` model is
refused: its keys are drawn low to high, each through the note head again
given those below, which the one-step network does not expose (its fp32,
fp16 and int8 forms keep the PyTorch forward and work).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chopinbot.constants import N_KEYS
from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import atomic_write
from chopinbot.model.formats import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    ExportedModel,
    fp32_bytes,
    load_model,
    onnx_runner,
    plain_copy,
    save_compressed,
    torchscript_runner,
    weights_bytes,
    write_artifact_folder,
)
from chopinbot.model.network import ChopinLSTM, ModelConfig, Outputs
from chopinbot.model.transformer import CausalTransformer

ONNX_OPSET = 17
# next-state probabilities of an exported model may differ from PyTorch's by
# at most this much (float32 re-association; measured ~1e-6)
EXPORT_TOLERANCE = 1e-4


class _ExportStep(nn.Module):
    """The model's own forward pass as ``(x, h0, c0) -> logits..., h, c``:
    flat outputs, as the exporters want (the forward is export-friendly: the
    note head gathers with a constant index, no ``unfold``).  :func:`verify_export`
    checks the exported network against the model."""

    def __init__(self, model: ChopinLSTM) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        out, (h, c) = self.m(x, (h0, c0))
        return tuple(t for t in out if t is not None) + (h, c)


def _output_names(config: ModelConfig) -> list[str]:
    return (["keys"] + (["onsets"] if config.onset_head else []) + ["duration"]
            + (["loudness"] if config.loudness else []) + ["h", "c"])


def _example_inputs(config: ModelConfig, batch: int = 2, steps: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, steps, config.input_dim, generator=g)
    x[..., : 2 * N_KEYS] = (x[..., : 2 * N_KEYS] < 0.08).float()  # keys and onsets are 0/1
    h = torch.randn(config.layers, batch, config.hidden, generator=g) * 0.3
    c = torch.randn(config.layers, batch, config.hidden, generator=g) * 0.3
    return x, h, c


def float_model(model) -> ChopinLSTM:
    """A plain float CPU copy of ``model`` (pruning made permanent); int8-quantized
    models and exports are refused."""
    if not isinstance(model, ChopinLSTM) or not isinstance(model.backbone, (nn.LSTM, CausalTransformer)) or any(
            "quantized" in type(m).__module__ for m in model.modules()):  # int8 layers inside a Transformer
        raise ConfigError("export needs a float PyTorch model (load compressed models with runtime='float')")
    return plain_copy(model).cpu()


def _refuse_transformer(model, fmt: str) -> None:
    if isinstance(model, ChopinLSTM) and model.config.model_type != "lstm":
        raise ConfigError(f"{fmt} export writes the LSTM backbone's one-step network; this model's backbone is a "
                          f"{model.config.model_type} (use fp32, fp16 or int8)")


def _refuse_joint(model, fmt: str) -> None:
    if model.config.joint_keys:
        raise ConfigError(f"a joint_keys model cannot be exported as {fmt}: its keys are drawn low to high, the note "
                          f"head evaluated again given the keys below, which the one-step network does not expose "
                          f"(use fp32, fp16 or int8)")


def export_onnx(model: ChopinLSTM, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Write the one-step network as ONNX (batch and time dynamic) to ``path``
    (a file; atomically).  Inputs ``x`` (B, T, F), ``h0``/``c0`` (layers, B,
    hidden); outputs ``keys``, ``onsets`` (if the model has them),
    ``duration``, ``loudness`` (if it has it), ``h``, ``c``."""
    _refuse_joint(model, "ONNX")
    step = _ExportStep(float_model(model)).eval()
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
    _refuse_joint(model, "TorchScript")
    step = _ExportStep(float_model(model)).eval()
    x, h, c = _example_inputs(model.config)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(step, (x, h, c), check_trace=False)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, tmp)

    return atomic_write(path, write)


def _probabilities(out: Outputs) -> list[torch.Tensor]:
    probs = [torch.sigmoid(out.key_logits)]
    if out.onset_logits is not None:
        probs.append(torch.sigmoid(out.onset_logits))
    probs.append(torch.softmax(out.duration, -1))
    if out.loudness is not None:
        probs.append(torch.softmax(out.loudness, -1))
    return probs


@torch.no_grad()
def verify_export(reference: ChopinLSTM, exported, steps: int = 32, batch: int = 2, seed: int = 0) -> float:
    """Max absolute difference between the next-state probabilities (keys,
    onsets, duration classes) of ``exported`` and of PyTorch's ``reference``:
    over one multi-step call from a random state and then ``steps`` single
    steps with the state carried (as generation runs it)."""
    ref = plain_copy(reference) if isinstance(reference, ChopinLSTM) and isinstance(reference.backbone, nn.LSTM) \
        else reference
    x, h, c = _example_inputs(ref.config, batch, steps, seed)
    start = None if ref.config.model_type == "transformer" else (h, c)  # a Transformer's state: its cache of x
    worst = 0.0
    a, sa = ref(x, start)
    b, sb = exported(x, start)
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


def _export_meta(model) -> dict[str, Any]:
    """``model``'s meta without what describes its stored form (the export writes its own)."""
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
    if fmt in ("onnx", "torchscript"):
        _refuse_transformer(model, fmt)
        _refuse_joint(model, fmt)
    ref = float_model(model)
    ref.meta = dict(getattr(model, "meta", {}))
    info: dict[str, Any] = {"format": fmt, "fp32_bytes": fp32_bytes(ref)}
    if fmt in ("fp32", "fp16", "int8"):
        folder = save_compressed(out, ref, _export_meta(ref), values=fmt, sparse=sparse)
        loaded = load_model(folder)
        info["max_abs_diff"] = verify_export(ref, loaded)
        if fmt == "int8":
            info["max_abs_diff_float_runtime"] = verify_export(ref, load_model(folder, runtime="float"))
    else:
        name = ONNX_FILE if fmt == "onnx" else TORCHSCRIPT_FILE
        with tempfile.TemporaryDirectory() as td:
            art = Path(td) / name
            (export_onnx if fmt == "onnx" else export_torchscript)(ref, art)
            runner = onnx_runner(art) if fmt == "onnx" else torchscript_runner(art)
            diff = verify_export(ref, ExportedModel(ref.config, runner, fmt))
            if not diff <= tolerance:
                raise ModelFileError(f"the {fmt} export differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
            cfg = dict(_export_meta(ref), model=ref.config.to_dict(), format=fmt,
                       verified={"max_abs_diff": diff, "tolerance": tolerance,
                                 "compared": "sigmoid key/onset, softmax duration (and loudness) probabilities, h, c"},
                       io={"inputs": ["x", "h0", "c0"], "outputs": _output_names(ref.config),
                           "opset": ONNX_OPSET if fmt == "onnx" else None})
            folder = write_artifact_folder(out, art, cfg)
        info["max_abs_diff"] = diff
    info["folder"] = str(folder)
    info["bytes"] = weights_bytes(folder)
    info["ratio"] = info["fp32_bytes"] / max(info["bytes"], 1)
    return info

