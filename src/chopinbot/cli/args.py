"""Argument types shared by the subcommands: each rejects a bad value with a
one-line message (argparse then exits with code 2)."""

from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise argparse.ArgumentTypeError(message)


def positive_int(text: str) -> int:
    v = _int(text)
    _check(v > 0, f"must be at least 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    v = _int(text)
    _check(v >= 0, f"must be 0 or more, got {v}")
    return v


def positive_float(text: str) -> float:
    v = _float(text)
    _check(v > 0 and v != float("inf"), f"must be a positive number, got {text}")  # NaN fails v > 0
    return v


def nonneg_float(text: str) -> float:
    v = _float(text)
    _check(v >= 0 and v != float("inf"), f"must be 0 or more, got {text}")
    return v


def probability(text: str) -> float:
    v = _float(text)
    _check(0.0 <= v <= 1.0, f"must be between 0 and 1, got {text}")
    return v


def seed_int(text: str) -> int:
    """A random seed: 0 .. 2**32 - 1 (numpy refuses negatives, torch overflows past 2**64)."""
    v = _int(text)
    _check(0 <= v < 2**32, f"must be 0 .. {2**32 - 1}, got {v}")
    return v


def port(text: str) -> int:
    v = _int(text)
    _check(1 <= v <= 65535, f"must be a port number 1..65535, got {v}")
    return v


def number_in(low: float, high: float, kind: type = float, low_open: bool = False):
    """An argument type for a ``kind`` (int or float) in [low, high], or (low, high]
    with ``low_open``: the flag then checks the bound the library declares."""
    def parse(text: str):
        v = (_int if kind is int else _float)(text)
        ok = (v > low if low_open else v >= low) and v <= high  # NaN fails
        _check(ok, f"must be above {low:g} and at most {high:g}, got {text}" if low_open else
               f"must be between {low:g} and {high:g}, got {text}")
        return v

    parse.__name__ = f"{kind.__name__}_in"
    return parse
