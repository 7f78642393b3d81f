"""The package's shape holds: no import cycle, every import points down the
layer table below (never up, never sideways to a sibling), no module reaches
for another package's private names, and no module (library or tools) is over
600 lines (the lint runs in `make test`).

Imports are read from the source (every ``import``, at module level or inside
a function), so a back-arrow hidden in a function-local import is found too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("chopinbot", "chopinbot_tools")
MAX_MODULE_LINES = 600

# The layers, bottom (0) to top. A module may import modules of its own package
# and of any package on a LOWER rank; packages on the same rank are siblings that
# know nothing of each other. A module is ranked by the longest name below that
# is a prefix of its own, so a new package fails the test until it is placed.
LAYERS: dict[str, int] = {
    "chopinbot": 0,  # the root package: __version__, and names loaded lazily by string
    "chopinbot.constants": 0,
    "chopinbot.errors": 0,
    "chopinbot.io_utils": 1,  # atomic writes
    "chopinbot.progress": 1,
    "chopinbot.device": 1,  # raises errors.ConfigError
    "chopinbot.music": 2,  # MIDI, scores, states, keys: no model, no dataset
    "chopinbot.dataset": 3,  # corpus -> states -> batches (and their targets)
    "chopinbot.notation": 3,  # states -> sheet music (MusicXML, engraved pages): music alone
    # output formats (MIDI, WAV, piano roll, plots, scores) depend on music and notation; compose
    # writes its pieces through them (PieceOutputs), so render sits below compose, not beside app
    "chopinbot.render": 4,
    "chopinbot.model": 4,
    "chopinbot.training": 5,
    "chopinbot.compose": 5,
    "chopinbot.compress": 6,  # prunes with training's epoch, measures with compose
    "chopinbot.evaluation": 6,  # composes continuations and scores them
    "chopinbot.app": 7,
    "chopinbot.cli": 8,  # `chopinbot bench`/`benchmark` run tools through cli.COMMANDS' lazy registry, never by import
    "chopinbot.__main__": 9,  # `python -m chopinbot`: the command line's entry point
    "chopinbot_tools": 10,  # benchmarks and fuzzers, on top of everything (their own `python -m` entries)
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (SRC / pkg).rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that ``name`` imports (the longest known dotted prefix of each)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in known:
                found.add(candidate)
                return

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                add(f"{module}.{alias.name}")
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def layer_of(module: str) -> str | None:
    """The entry of :data:`LAYERS` that ranks ``module`` (its longest prefix there)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    return None


def back_arrows(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for every import that does not point down the table."""
    bad = []
    for a, deps in sorted(graph.items()):
        la = layer_of(a)
        for b in sorted(deps):
            lb = layer_of(b)
            if la is None or lb is None or la == lb:
                continue
            if LAYERS[la] < LAYERS[lb]:
                bad.append((a, b, f"{la} (rank {LAYERS[la]}) imports the higher {lb} (rank {LAYERS[lb]})"))
            elif LAYERS[la] == LAYERS[lb]:
                bad.append((a, b, f"{la} imports its sibling {lb} (both rank {LAYERS[la]})"))
    return bad


def private_imports() -> list[tuple[str, str]]:
    """(importer, module._name) for each ``from M import _name`` where M is in another
    top package (a private name is its own package's business)."""
    found = []
    for name, path in _modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")
                module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith(PACKAGES):
                continue
            if layer_of(module) == layer_of(name):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((name, f"{module}.{alias.name}"))
    return sorted(found)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_the_layer_finder_finds_a_back_arrow():
    graph = {"chopinbot.music.keys": {"chopinbot.model.network"},  # up
             "chopinbot.training.train": {"chopinbot.compose.generate"},  # sideways
             "chopinbot.cli.train": {"chopinbot.training.train"},  # down: fine
             "chopinbot.dataset.store": {"chopinbot.dataset.features"}}  # within: fine
    assert [(a, b) for a, b, _ in back_arrows(graph)] == [
        ("chopinbot.music.keys", "chopinbot.model.network"),
        ("chopinbot.training.train", "chopinbot.compose.generate")]


def test_every_module_has_a_layer():
    assert sorted(m for m in _modules() if layer_of(m) is None) == []


def test_no_import_points_up_or_sideways():
    bad = [(a, b, why) for a, b, why in back_arrows(import_graph())]
    assert not bad, "back-arrows in the import graph:\n" + "\n".join(f"  {a} -> {b}: {why}" for a, b, why in bad)


def test_no_private_name_imported_from_another_package():
    bad = list(private_imports())
    assert not bad, "private names imported across packages:\n" + "\n".join(f"  {a} -> {b}" for a, b in bad)


def test_no_module_over_600_lines():
    """The library's modules and the tools' alike."""
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_the_cli_reaches_the_tools_only_by_name():
    """`chopinbot bench` and `chopinbot benchmark` are tools: cli.COMMANDS names their
    modules (loaded when the command runs), each one exists and is a tool, and the
    tools keep their own ``python -m`` entry."""
    from chopinbot.cli import COMMANDS, module_path

    modules = _modules()
    named = {name: module_path(mod) for name, (mod, _) in COMMANDS.items()}
    assert sorted(n for n, m in named.items() if m not in modules) == []
    outside = {n: m for n, m in named.items() if not m.startswith("chopinbot.cli.")}
    assert outside and all(m.startswith("chopinbot_tools.") for m in outside.values())
    for m in outside.values():
        assert 'if __name__ == "__main__":' in modules[m].read_text(), f"{m} has no `python -m` entry"
