"""The package's layers import one way along the data path (README "Architecture").

Every import statement of every module under pysrc/epsync, wherever it stands (top level,
inside a function, under TYPE_CHECKING), is read with `ast` and checked against the layer
table below; generated code (`*_pb2*.py`) is left out. A new arrow against the direction
fails here, naming the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "pysrc" / "epsync"

# Each layer and the layers it may import from (itself included). Bottom to top:
# the wire and its errors; what a resource is; where it is stored; keeping watchers in sync;
# serving it. The client and the CLI stand beside the server and see only the API and the model.
LAYER_OF_PREFIX: dict[str, str] = {
    "epsync": "api",  # the package itself: its __init__ re-exports the core's version
    "epsync._core": "api",
    "epsync.v1": "api",
    "epsync.etcd": "api",  # etcd's generated API, for the etcd datastore
    "epsync.internal": "api",  # the generated protocol between one server's processes
    "epsync.errors": "api",
    "epsync.model": "model",
    "epsync.store": "store",
    "epsync.sync": "sync",
    "epsync.server": "server",
    "epsync.client": "client",
    "epsync.cli": "cli",
    "epsync.main": "entry",
    "epsync.__main__": "entry",
}
MAY_IMPORT: dict[str, set[str]] = {
    "api": {"api"},
    "model": {"api", "model"},
    "store": {"api", "model", "store"},
    "sync": {"api", "model", "store", "sync"},
    "server": {"api", "model", "store", "sync", "server"},
    "client": {"api", "model", "client"},
    "cli": {"api", "model", "client", "cli"},
    "entry": {"api", "model", "store", "sync", "server", "client", "cli", "entry"},
}
# Within a layer, modules that must not import one another in the named direction:
# (importer prefix, imported prefix).
FORBIDDEN_INSIDE: list[tuple[str, str]] = [
    ("epsync.store.base", "epsync.store.sqlite"),
    ("epsync.store.base", "epsync.store.etcd"),
    ("epsync.store.feed", "epsync.store.sqlite"),
    ("epsync.store.feed", "epsync.store.etcd"),
    ("epsync.store.sqlite", "epsync.store.etcd"),
    ("epsync.store.etcd", "epsync.store.sqlite"),
    # The cache is fed by the store and read by the hubs; it never reaches up to them.
    ("epsync.sync.cache", "epsync.sync.hub"),
    ("epsync.sync.cache", "epsync.sync.endpoint_hub"),
    ("epsync.sync.cache", "epsync.sync.profile_hub"),
    ("epsync.sync.cache", "epsync.sync.watcher"),
    ("epsync.sync.watcher", "epsync.sync.hub"),
    ("epsync.sync.wire", "epsync.sync.cache"),
]
# Nothing of the product imports the tools that measure it.
FOREIGN = ("bench", "tests")


def layer_of(module: str) -> str | None:
    for prefix in sorted(LAYER_OF_PREFIX, key=len, reverse=True):
        if module == prefix or (prefix != "epsync" and module.startswith(prefix + ".")):
            return LAYER_OF_PREFIX[prefix]
    return None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from epsync.server import gcpolicy` imports the submodule when there is one.
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*")
    return found


def violations_in(source: str, module: str, *, is_package: bool = False) -> list[str]:
    importer_layer = layer_of(module)
    if importer_layer is None:
        return [f"{module} belongs to no layer: add it to LAYER_OF_PREFIX"]
    problems: list[str] = []
    for line, target in imported_modules(source, module, is_package):
        top = target.split(".")[0]
        if top in FOREIGN:
            problems.append(f"{module}:{line} imports {target}: the product must not import {top}/")
            continue
        if top != "epsync":
            continue
        target_layer = layer_of(target)
        if target_layer is None:
            continue  # `from epsync.x import name`: the entry for epsync.x is checked
        if target_layer not in MAY_IMPORT[importer_layer]:
            problems.append(
                f"{module}:{line} imports {target}: layer {importer_layer} may import only "
                f"{sorted(MAY_IMPORT[importer_layer])}, not {target_layer}"
            )
        for importer_prefix, imported_prefix in FORBIDDEN_INSIDE:
            inside = module == importer_prefix or module.startswith(importer_prefix + ".")
            if inside and (target == imported_prefix or target.startswith(imported_prefix + ".")):
                problems.append(
                    f"{module}:{line} imports {target}: {importer_prefix} must not import {imported_prefix}"
                )
    return problems


def product_modules() -> list[Path]:
    return sorted(p for p in PACKAGE_ROOT.rglob("*.py") if "_pb2" not in p.name)


def test_every_import_follows_the_layers() -> None:
    problems: list[str] = []
    for path in product_modules():
        module = module_name(path, PACKAGE_ROOT)
        problems += violations_in(path.read_text(), module, is_package=path.name == "__init__.py")
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_table_covers_every_package() -> None:
    packages = {module_name(p, PACKAGE_ROOT) for p in PACKAGE_ROOT.glob("*/__init__.py")}
    modules = {module_name(p, PACKAGE_ROOT) for p in PACKAGE_ROOT.glob("*.py")}
    unplaced = sorted(m for m in packages | modules if layer_of(m) is None)
    assert not unplaced, f"modules in no layer: {unplaced}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("epsync.sync.cache", "from epsync.server.status import abort\n", "layer sync may import only"),
        ("epsync.model.kinds", "import epsync.store.base\n", "layer model may import only"),
        ("epsync.client.view", "def f():\n    from epsync.sync import wire\n", "layer client may import only"),
        ("epsync.cli.writes", "from epsync.server import config\n", "layer cli may import only"),
        ("epsync.server.app", "from bench.loadtest import run\n", "must not import bench/"),
        ("epsync.store.sqlite.store", "from epsync.store.etcd import client\n", "must not import epsync.store.etcd"),
        ("epsync.sync.cache", "from .hub import WatchHub\n", "must not import epsync.sync.hub"),
        ("epsync.sync", "from .watcher import Watcher\n", None),
        ("epsync.server.app", "from epsync.sync.cache import ResourceCache\n", None),
    ],
)
def test_the_checker_catches_an_arrow_against_the_direction(module: str, source: str, expected: str | None) -> None:
    problems = violations_in(source, module, is_package=module == "epsync.sync")
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems
