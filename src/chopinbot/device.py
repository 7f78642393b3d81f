"""Choosing where to run: `--device auto|cpu|cuda`."""

from __future__ import annotations

import torch

from chopinbot.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (this torch build or machine has none)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)
