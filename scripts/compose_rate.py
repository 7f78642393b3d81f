"""States per second at batch 1, one thread, in process: the issue's end-to-end speed bound (2,000 states).

    PYTHONPATH=src python scripts/compose_rate.py piano-transformer piano-controls [--steps 2000] [--repeats 3]
        [--seed-index N] [--listen]

Each model composes one warm-up piece, then the models alternate, ``--repeats`` pieces each (random seeds
0, 1, ...; no retries) from test seed ``--seed-index`` (default 0: the first window of a piece, nothing
before it; e.g. 300 reads 512 states of context, which the note head learns first with ``--listen``:
model.adaptation);
prints each rate and the median.
"""

from __future__ import annotations

import argparse
import time

import torch

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.model.formats import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="bundled names or model folders")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed-index", type=int, default=0)
    ap.add_argument("--listen", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = {name: load_model(name) for name in args.models}
    seed = seed_from_test(args.seed_index)
    for model in models.values():
        generate(model, seed, GenerateConfig(steps=200, random_seed=0))
    rates: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.repeats):
        for name, model in models.items():
            t = time.perf_counter()
            generate(model, seed, GenerateConfig(steps=args.steps, random_seed=r, retry=False, listen=args.listen))
            rates[name].append(args.steps / (time.perf_counter() - t))
    for name, v in rates.items():
        print(f"{name}: {', '.join(f'{x:,.0f}' for x in v)} states/s; median {sorted(v)[len(v) // 2]:,.0f}")


if __name__ == "__main__":
    main()
