"""The package layout holds (docs/architecture.md): one-way imports, a pure-torch model, small modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "pixnet"
LEAVES = {"_keys", "_arrays", "_cache", "_logging", "_memory", "_version"}  # import nothing of pixnet's packages

# What each package may import of pixnet (besides the leaves); each arrow points one way.
ALLOWED = {
    "geometry": set(),
    "model": set(),
    "data": {"geometry"},
    "io": {"data", "geometry"},
    "datasets": set(),
    "pp": {"data", "model"},
    "train": {"model", "geometry", "data"},
    "infer": {"model", "geometry", "data", "io", "pp"},
    "baselines": {"model", "geometry", "data", "train"},
    "tl": {"model", "geometry", "data", "pp", "train", "infer", "baselines"},
    "pl": {"model", "geometry", "data", "pp"},
}


def _imports(path: Path) -> set[tuple[str, int]]:
    """``(top-level pixnet unit, line)`` of every pixnet import in a file, relative or absolute, lazy ones included."""
    pkg = list(path.relative_to(ROOT).parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            mod = pkg[: len(pkg) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            names = [mod[0]] if mod else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pixnet":
            names = node.module.split(".")[1:2] or [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("pixnet.")]
        else:
            continue
        out |= {(n, node.lineno) for n in names}
    return out


def _third_party(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_leaves_import_nothing_of_pixnets_packages():
    for leaf in sorted(LEAVES):
        path = ROOT / f"{leaf}.py"
        assert path.exists(), f"LEAVES names pixnet.{leaf}, which does not exist"
        assert {u for u, _ in _imports(path)} <= LEAVES, f"pixnet.{leaf} imports {sorted(_imports(path))}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for unit, line in _imports(path):
            if unit != package and unit not in LEAVES | ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports pixnet.{unit}")
    assert not bad, f"pixnet.{package} may import only {sorted(ALLOWED[package])}: " + "; ".join(bad)


def test_model_imports_nothing_else_of_pixnet_nor_lightning():
    for path in sorted((ROOT / "model").rglob("*.py")):
        others = {u for u, _ in _imports(path)} - {"model"}
        assert not others, f"{path.name} imports pixnet.{sorted(others)}"
        assert not _third_party(path) & {"lightning", "pytorch_lightning", "spatialdata", "anndata"}, path.name


def test_geometry_is_numpy_and_shapely_only():
    for path in sorted((ROOT / "geometry").rglob("*.py")):
        assert _third_party(path) <= {"__future__", "dataclasses", "typing", "numpy", "shapely"}, path.name


def test_import_pixnet_model_does_not_import_lightning():
    code = (
        "import sys, pixnet.model, pixnet.tl, pixnet.pl\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "assert not heavy, heavy\n"
        "import pixnet.train.module\n"
        "assert 'lightning' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_no_module_is_long():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"
