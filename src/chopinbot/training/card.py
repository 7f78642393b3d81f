"""A trained run's model card: what it learnt from and how well it does, in two
files of the run folder, ``model_card.json`` (for programs: ``chopinbot models``)
and ``model_card.md`` (for people), each written atomically.

The held-out figures are the key NLL per state (nats) on the dataset's valid
pieces, of the result (``best/``) and, for a fine-tuning run, of the model it
started from on the same pieces: the figure that says whether fine-tuning
helped.  The test pieces stay untouched (they are the evaluation's).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot.model.checkpoint import bundled_models, read_config, resolve_checkpoint
from chopinbot.model.network import ModelConfig

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"


def write_model_card(out: str | os.PathLike, card: dict[str, Any]) -> None:
    """Write ``card`` (see :func:`chopinbot.training.train.train`) as JSON and Markdown into ``out``."""
    out = Path(out)
    atomic_write_json(out / CARD_JSON, card)
    atomic_write_text(out / CARD_MD, card_markdown(card))


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def card_markdown(card: dict[str, Any]) -> str:
    data, held = card.get("data", {}), card.get("held_out", {})
    lines = [
        f"# Model card: {card.get('name', '?')}",
        "",
        f"- **Data**: {data.get('dataset') or 'the bundled corpus'} ({data.get('train_pieces', '?')} training pieces, "
        f"{data.get('valid_pieces', '?')} valid; {data.get('train_states', 0):,} training states)",
        f"- **Composers**: {', '.join(card.get('composers') or []) or '-'}",
        f"- **Styles the model composes in**: {', '.join(card.get('styles') or []) or 'one (no style input)'}",
        f"- **Started from**: {card.get('init_from') or 'random weights'}",
        f"- **Training**: {card.get('epochs', '?')} epochs ({card.get('stopped', '?')}), best epoch "
        f"{card.get('best_epoch', '?')}, lr {card.get('lr')}, {card.get('cpu_minutes', 0):.1f} CPU-minutes, "
        f"{card.get('wall_minutes', 0):.1f} minutes",
        "",
        "Held-out figures (the dataset's valid pieces; key NLL per state in nats, lower is better):",
        "",
        "| model | key NLL | key F1 |",
        "|---|---:|---:|",
    ]
    if held.get("start_key_nll") is not None:
        lines.append(f"| before (epoch 0: {card.get('init_from') or 'initial weights'}) | "
                     f"{_f(held.get('start_key_nll'))} | {_f(held.get('start_f1'))} |")
    lines.append(f"| this model (best/) | {_f(held.get('key_nll'))} | {_f(held.get('f1'))} |")
    for w in card.get("warnings", []):
        lines += ["", f"**Warning**: {w}"]
    return "\n".join(lines) + "\n"


def model_summary(folder: str | os.PathLike, name: str | None = None, kind: str = "run") -> dict[str, Any]:
    """Name, kind, composers (the styles it composes in, or the data's composers)
    and held-out key NLL of a bundled model or a run folder, from its model card
    when it has one, else from its checkpoint's config."""
    folder = Path(folder)
    card_path = folder / CARD_JSON
    if card_path.is_file():
        import json

        card = json.loads(card_path.read_text())
        return {"name": name or card.get("name") or folder.name, "kind": kind,
                "backbone": ModelConfig.from_dict(read_config(resolve_checkpoint(folder))["model"]).shape,
                "composers": card.get("composers") or card.get("styles") or [],
                "key_nll": card.get("held_out", {}).get("key_nll"),
                "start_key_nll": card.get("held_out", {}).get("start_key_nll"),
                "init_from": card.get("init_from"), "folder": str(folder)}
    ckpt = resolve_checkpoint(folder)
    cfg = read_config(ckpt)
    mcfg = ModelConfig.from_dict(cfg["model"])
    train = cfg.get("train") or {}
    return {"name": name or folder.name, "kind": kind, "backbone": mcfg.shape,
            "composers": list(mcfg.styles) if mcfg.style_input else [],
            "key_nll": (cfg.get("metrics") or {}).get("valid_key_nll"), "start_key_nll": None,
            "init_from": train.get("init_from"), "folder": str(ckpt)}


def list_models(runs: list[str] | None = None) -> list[dict[str, Any]]:
    """The bundled models, then each run folder in ``runs``."""
    rows = [model_summary(path, name, "bundled") for name, path in bundled_models().items()]
    rows += [model_summary(r) for r in runs or []]
    return rows
