"""Starting from a trained model: ``chopinbot train --init-from MODEL --data DIR``.

Fine-tuning keeps the model's shape and duration vocabulary and starts from
its weights.  Music by a composer the model does not know becomes a new
style: the model gains a style input (or a new style in it), whose weights
start at 0, so the fine-tuned model starts out composing exactly as the
original did, and then learns what the new style changes.

Only the first LSTM layer reads the style columns; every other weight keeps
its shape (checked when copying), so the surgery is one matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from chopinbot.dataset.conditioning import StyleBlock
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.inputs import InputBlock
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ConfigError
from chopinbot.model.network import NEIGHBOURS, ChopinLSTM, ModelConfig

FIRST_LAYER_INPUTS = {"lstm": "lstm.weight_ih_l0", "transformer": "transformer.inp.weight"}  # by backbone
DURATION_TERMS = "repeat_dur.weight"  # reads the blocks' duration columns
NOTE_INPUTS = "note_mlp.0.weight"  # reads each key's neighbourhood, its values of the blocks, then the rest


def data_styles(ds: Dataset, split: str = "train") -> list[str]:
    """The styles of a dataset's split: its composers' style names, sorted."""
    return sorted({style_name(s.composer) for s in ds.segments(split)})


def new_model_styles(styles: list[str], default_style: str | None = None, always: bool = False) -> dict:
    """The style fields of a new model trained on music in ``styles``: a
    style input when there are several (or ``always``), Chopin the default
    style when present; none otherwise."""
    if len(styles) < 2 and not always:
        return dict(style_input=False, styles=[], default_style="")
    default = default_style or ("chopin" if "chopin" in styles else styles[0])
    if default not in styles:
        raise ConfigError(f"default style {default!r} is not among the data's styles ({', '.join(styles)})")
    return dict(style_input=True, styles=list(styles), default_style=default)


def fine_tune_config(base: ModelConfig, styles: list[str], default_style: str | None = None) -> ModelConfig:
    """``base`` extended by the styles of the new data it does not know.

    A model without a style input that is fine-tuned on one style's music gains
    a style input with that style alone (its default): the model is simply
    moved.  New styles are appended, so the model's own keep their columns."""
    new = [s for s in styles if s not in base.styles]
    if not new and default_style in (None, base.default_style):
        return base
    all_styles = list(base.styles) + new
    default = default_style or (styles[0] if len(styles) == 1 else base.default_style or all_styles[0])
    if default not in all_styles:
        raise ConfigError(f"default style {default!r} is neither the model's nor the data's")
    return replace(base, style_input=True, styles=all_styles, default_style=default)


def copy_weights(target: ChopinLSTM, source: ChopinLSTM) -> None:
    """Load ``source``'s weights into ``target``, whose config may add styles:
    the backbone's first layer's columns are mapped block by block (style columns by
    style name; new ones start at 0), and so are a style-heads model's duration
    terms and note-head values; every other tensor must match in shape."""
    src, dst = source.state_dict(), target.state_dict()
    missing = set(dst) - set(src)
    if missing:
        raise ConfigError(f"the models differ in shape: {', '.join(sorted(missing)[:3])} missing")
    old, new = source.config.blocks, target.config.blocks
    mapped = dict(src)
    first = FIRST_LAYER_INPUTS[source.config.model_type]
    mapped[first] = _map_block_columns(src[first], old, new, 0, lambda b: b.lstm_width)
    if source.config.style_heads:  # the style also feeds the duration head's terms and each key's note-head values
        if DURATION_TERMS in src:
            mapped[DURATION_TERMS] = _map_block_columns(
                src[DURATION_TERMS], old, new, 0, lambda b: sum(d.stop - d.start for d in b.duration_columns()))
        if NOTE_INPUTS in src:
            mapped[NOTE_INPUTS] = _map_block_columns(src[NOTE_INPUTS], old, new, 2 * (2 * NEIGHBOURS + 1),
                                                     lambda b: len(b.key_columns()))
    for name, t in dst.items():
        if mapped[name].shape != t.shape:
            raise ConfigError(f"the models differ in shape at {name}: {tuple(mapped[name].shape)} vs {tuple(t.shape)}")
    target.load_state_dict(mapped)


def _map_block_columns(weight: torch.Tensor, old: tuple, new: tuple, lead: int,
                       width: Callable[[InputBlock], int]) -> torch.Tensor:
    """``weight``'s input columns laid out as ``lead`` columns, then ``width(block)`` columns of each
    block in order, then the rest: moved to ``new``'s blocks, a style block's by style name (a new
    style's columns start at 0; any other block must keep its width)."""
    old_total = sum(width(b) for b in old)
    rest = weight.shape[1] - lead - old_total
    out = weight.new_zeros((weight.shape[0], lead + sum(width(b) for b in new) + rest))
    out[:, :lead] = weight[:, :lead]
    out[:, out.shape[1] - rest:] = weight[:, lead + old_total:]
    starts, at = {}, lead
    for b in new:
        starts[b.name], at = (at, b), at + width(b)
    at = lead
    for b in old:
        if b.name not in starts:
            raise ConfigError(f"the new model lacks the input block {b.name!r}")
        (j, nb), w = starts[b.name], width(b)
        if isinstance(b, StyleBlock):
            for k, name in enumerate(b.styles[:w]):
                out[:, j + nb.styles.index(name)] = weight[:, at + k]
        elif w != width(nb):
            raise ConfigError(f"the input block {b.name!r} changed width")
        else:
            out[:, j:j + w] = weight[:, at:at + w]
        at += w
    return out
