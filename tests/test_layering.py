"""The package's imports point one way: data -> features -> models -> decoding, with training beside
decoding, never below it. Read from the source (ast), so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import asr

PACKAGE = Path(asr.__file__).parent
# a module may import from its own layer and the ones before it; shared helpers (asr.config, asr.io_utils,
# asr.tokenizer, asr.device, asr.pretrained) sit below them all
LAYERS = ["data", "features", "models", "decoding"]


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file of the package at ``root``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "asr" and parts[1] in LAYERS + ["training", "cli"] else None


def layering_violations(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        own = rel.parts[1] if len(rel.parts) > 2 else None  # asr/<layer>/x.py
        for line, module in imported_modules(path, root):
            target = layer_of(module)
            if target is None or target == own:
                continue
            if own in LAYERS:
                allowed = LAYERS[: LAYERS.index(own) + 1]
            elif own in ("training", "cli"):
                allowed = LAYERS + ["training"] + (["cli"] if own == "cli" else [])
            else:  # top-level modules (asr/export.py, asr/api.py, ...) serve users: anything but training
                allowed = LAYERS
            if target not in allowed:
                bad.append(f"{rel}:{line} imports {module}")
    return sorted(set(bad))


def test_imports_point_one_way():
    assert layering_violations() == []


def test_the_check_catches_an_upward_import(tmp_path):
    # a decoding module that imports training, and a model that imports decoding: both reported
    pkg = tmp_path / "asr"
    for sub in ("decoding", "models", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "decoding" / "x.py").write_text("from asr.training.data import pad_features\n")
    (pkg / "models" / "y.py").write_text("def f():\n    from ..decoding import x\n")
    (pkg / "training" / "z.py").write_text("from asr.decoding import x\n")  # allowed: training sits beside decoding
    assert layering_violations(pkg) == [
        "asr/decoding/x.py:1 imports asr.training.data",
        "asr/decoding/x.py:1 imports asr.training.data.pad_features",
        "asr/models/y.py:2 imports asr.decoding",
        "asr/models/y.py:2 imports asr.decoding.x",
    ]
