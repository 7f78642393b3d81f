"""States per second over a long piece, block by block: is the cost per state flat as a piece grows?

    PYTHONPATH=src python scripts/length_rate_check.py --steps 20000 --block 1000

Composes one piece of ``--steps`` states at batch 1 on one thread (no retries) and prints the rate of
each block of ``--block`` states; then the rate of the first block against the last.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from chopinbot.compose import decoding
from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.model.formats import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder or bundled name (default: the shipped model)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--seed-index", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    marks = []

    class Clock:
        def __call__(self, new, count):
            if count % args.block == 0:
                marks.append((time.perf_counter(), time.process_time()))
            return False

    original = decoding.Decoder.run

    def run(self, stop, extra=()):
        marks.append((time.perf_counter(), time.process_time()))
        return original(self, [*stop, Clock()], extra)

    decoding.Decoder.run = run
    t = time.perf_counter()
    generate(model, seed_from_test(args.seed_index), GenerateConfig(steps=args.steps, retry=False, random_seed=0))
    total = time.perf_counter() - t
    wall = [args.block / (b[0] - a[0]) for a, b in zip(marks, marks[1:])]
    cpu = [args.block / (b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    print(json.dumps({"steps": args.steps, "seconds": round(total, 1), "states_per_cpu_second": [round(r) for r in cpu],
                      "states_per_wall_second": [round(r) for r in wall],
                      "cpu_last_over_first": round(cpu[-1] / cpu[0], 3)}))


if __name__ == "__main__":
    main()
