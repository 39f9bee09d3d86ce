"""The tree keeps the shape docs/architecture.md describes: tests mirror ``src/musicsearch/`` (one ``tests/<name>/``
folder per subpackage), and no module imports from a layer above its own.

The layer table below is the one in docs/architecture.md ("Layers"); the two must change together (a test here
checks that every table row appears there).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "musicsearch"
TESTS = REPO / "tests"
ARCHITECTURE = REPO / "docs" / "architecture.md"

#: Layer of each top-level package or module of ``musicsearch``, lowest first. A module may import from a lower
#: layer and from its own package; never from a higher layer, nor from another package of its own layer, except
#: the pairs in :data:`ONE_UNIT`. ``musicsearch`` itself (the root ``__init__``) may be imported from anywhere, for
#: ``__version__``.
LAYERS: dict[str, int] = {
    # 0: the one error type
    "errors": 0,
    # 1: core helpers: the registry, file writing, package data
    "registry": 1,
    "fileio": 1,
    "assets": 1,
    # 2: signals and words
    "audio": 2,
    "text": 2,
    # 3: corpora, manifests, datasets
    "data": 3,
    # 4: the musicnn teachers (ported taggers)
    "teachers": 4,
    # 5: the model and its objectives
    "models": 5,
    "losses": 5,
    # 6: what uses a model
    "train": 6,
    "eval": 6,
    "index": 6,
    # 7: searching an index
    "search": 7,
    # 8: the faces: command line (``python -m musicsearch`` is ``__main__``) and library
    "cli": 8,
    "__main__": 8,
    "library": 8,
}
#: Packages of one layer that may import each other: a model holds its objective's head, and the objective
#: registry names the model config (for types only); ``__main__`` is the command line's entry point.
ONE_UNIT = {frozenset({"models", "losses"}), frozenset({"cli", "__main__"})}
#: Modules whose tests live in tests/misc/ (top-level modules, not packages).
TOP_LEVEL_MODULES_TESTED_IN_MISC = {"errors", "registry", "fileio", "library", "__main__"}


def _top(module: str) -> str | None:
    """``musicsearch.models.config`` -> ``models``; ``musicsearch`` -> None (the root); other modules -> None."""
    parts = module.split(".")
    if parts[0] != "musicsearch" or len(parts) == 1:
        return None
    return parts[1]


def _owner(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in the file, inside functions and ``TYPE_CHECKING`` blocks
    too (a lazy import is still a dependency)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "musicsearch":  # from musicsearch import x: x may be a subpackage
                out += [(node.lineno, f"musicsearch.{a.name}") for a in node.names if a.name != "__version__"]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def _packages() -> list[str]:
    return sorted(p.parent.name for p in SRC.glob("*/__init__.py"))


def test_every_package_and_module_has_a_layer() -> None:
    names = set(_packages()) | {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert names - set(LAYERS) == set(), "add the new package or module to LAYERS and to docs/architecture.md"
    assert set(LAYERS) - names == set(), "LAYERS names a package or module that no longer exists"


def test_no_module_imports_from_a_higher_layer() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        own = _owner(path)
        if own == "__init__":
            continue  # the root: imports its subpackages to make two of them callable (see its docstring)
        for line, module in _imports(path):
            target = _top(module)
            if target is None or target == own:
                continue
            if target not in LAYERS:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports unknown musicsearch module {module}")
                continue
            if LAYERS[target] < LAYERS[own] or frozenset({own, target}) in ONE_UNIT:
                continue
            wrong.append(
                f"{path.relative_to(REPO)}:{line} ({own}, layer {LAYERS[own]}) imports {module} "
                f"({target}, layer {LAYERS[target]})"
            )
    assert not wrong, "imports against the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself: a module of ``audio`` importing from ``search`` is found (and one from ``errors`` not)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from musicsearch.errors import AudioError\ndef f():\n    from musicsearch.search.api import search\n",
        encoding="utf-8",
    )
    found = [(line, m) for line, m in _imports(bad) if LAYERS[_top(m) or "errors"] > LAYERS["audio"]]
    assert found == [(3, "musicsearch.search.api")]


def test_tests_mirror_the_packages() -> None:
    missing = [name for name in _packages() if not (TESTS / name).is_dir()]
    assert not missing, f"src/musicsearch/ packages without a tests/<name>/ folder: {missing}"
    assert (TESTS / "misc").is_dir()
    for name in TOP_LEVEL_MODULES_TESTED_IN_MISC - {"__main__"}:
        assert (SRC / f"{name}.py").is_file(), name


def test_architecture_page_states_the_same_layers() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for name in LAYERS:
        assert f"`{name}`" in text, f"docs/architecture.md does not mention `{name}`"
    for layer in sorted(set(LAYERS.values())):
        names = sorted(n for n, v in LAYERS.items() if v == layer)
        row = next((line for line in text.splitlines() if line.startswith(f"| {layer} |")), None)
        assert row is not None, f"docs/architecture.md has no row '| {layer} |' in its layer table"
        for name in names:
            assert f"`{name}`" in row, f"docs/architecture.md: `{name}` is not in the row of layer {layer}"
