"""ChopinBot: a small neural network (a Transformer by default) that composes piano music like Chopin.

Python API (what the CLI and the web app call)::

    from chopinbot import load_model, generate, GenerateConfig, seed_from_test
    model = load_model()                       # the shipped model
    result = generate(model, seed_from_test(3), GenerateConfig(steps=200, key="F minor", random_seed=1))
    result.save_midi("out/piece.mid"); result.save_wav("out/piece.wav"); result.save_png("out/piece.png")
    result.notes                               # (N, 4): start beat, end beat, pitch, velocity
    # steered: density (notes/s), register (MIDI), loudness; a form; a span of a file composed anew
    generate(model, seed, GenerateConfig(seconds=30, density=6, register=(48, 84), loudness="p"))
    compose_form(model, seed, GenerateConfig(seconds=60), form="ABA")
    infill(model, "piece.mid", 5, 9, "bars")
"""

from __future__ import annotations

__version__ = "0.1.0"

# Imported lazily so that `chopinbot prepare` never pays for importing torch.
_LAZY = {
    "load_model": "model.formats",
    "save_model": "model.checkpoint",
    "generate": "compose.generate",
    "GenerateConfig": "compose.generate",
    "GenerationResult": "compose.generate",
    "infill": "compose.infill",
    "compose_form": "compose.form",
    "result_figures": "evaluation.figures",
    "seed_from_test": "compose.seeds",
    "seed_from_primer": "compose.seeds",
    "list_seeds": "compose.seeds",
    "prepare": "dataset.prepare",
    "Dataset": "dataset.store",
    "train": "training.train",
    "TrainConfig": "training.train",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'chopinbot' has no attribute {name!r}")
