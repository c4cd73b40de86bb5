"""The layout's rules, read from the source (docs/architecture.md draws them):

- `base_model` imports nothing else from the project;
- `reward_models` may use `base_model`'s mel front end, corpus definitions and file helpers, never the generator
  (model, sampling, pipeline), so a referee stays independent of what it judges;
- `rewardflow` imports `base_model` and `reward_models`, never the scripts (`experiments`, `bundled`);
- no function in the three libraries is longer than 80 lines, and none imports another module's private name.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("base_model", "reward_models", "rewardflow")
PROJECT = ("base_model", "reward_models", "rewardflow", "experiments", "bundled", "tests")
# What reward_models may take from base_model: the mel front end, the corpora, file helpers.
REFEREE_MAY_USE = ("base_model.mel", "base_model.data", "base_model.files")


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.AST, path: Path, package: str) -> list[str]:
    """Every module a file imports, with relative imports resolved against its package."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = list(path.relative_to(ROOT).with_suffix("").parts)[: -node.level]
                base = ".".join(parts)
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module)
    return names


def _project_imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path, tree in _modules(package):
        for name in _imports(tree, path, package):
            if name.split(".")[0] in PROJECT:
                found.append((str(path.relative_to(ROOT)), name))
    return found


def test_base_model_imports_nothing_else_from_the_project():
    bad = [(f, n) for f, n in _project_imports("base_model") if not n.startswith("base_model")]
    assert not bad, bad


def test_reward_models_never_import_the_generator():
    bad = [
        (f, n)
        for f, n in _project_imports("reward_models")
        if not n.startswith("reward_models") and not n.startswith(REFEREE_MAY_USE)
    ]
    assert not bad, bad


def test_rewardflow_imports_only_the_two_libraries():
    bad = [(f, n) for f, n in _project_imports("rewardflow") if n.split(".")[0] not in LIBRARIES]
    assert not bad, bad


def test_the_rule_would_catch_a_violation(tmp_path):
    """The import reader resolves what the rules check: a relative import and a nested one inside a function."""
    src = "from .sampling import x\n\ndef f():\n    from rewardflow.rollout import y\n"
    path = ROOT / "reward_models" / "fake.py"
    names = _imports(ast.parse(src), path, "reward_models")
    assert names == ["reward_models.sampling", "rewardflow.rollout"]


@pytest.mark.parametrize("package", LIBRARIES)
def test_no_function_over_80_lines_and_no_private_imports(package):
    long, private = [], []
    for path, tree in _modules(package):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
                )
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROJECT:
                private += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert not long, long
    assert not private, private
