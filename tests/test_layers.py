"""The layering of STYLE.md, enforced: imports only point down, data and model never import each other."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "tuneforge"
LAYER = {
    # The CLI is the one entry point: `tuneforge serve` and `tuneforge board` start the other front
    # doors, so cli sits just above them; serve and board never import cli or each other.
    "cli": 5,
    "board": 4,
    "serve": 4,
    "train": 3.5,  # the online stages (grpo, ppo, online_dpo) sample through the inference engine's decoding core
    "inference": 3,
    "eval": 3.5,  # evaluation drives the inference engine (chat and serve use the same one)
    "export": 3,
    "synth": 3,  # asks a teacher endpoint for data rows; reads alpaca files with data/
    "data": 2,
    "model": 2,
    "config": 1,
    "runs": 1,
    "utils": 0,
}
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_imports_point_down_only():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        own = parts[0]
        for name in imports(path):
            bits = name.split(".")
            if bits[0] != "tuneforge" or len(bits) < 2 or bits[1] not in LAYER or bits[1] == own:
                continue
            other = bits[1]
            if LAYER[other] >= LAYER[own]:
                problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not problems, problems


def test_config_never_imports_heavy_libraries():
    for path in (PACKAGE / "config").rglob("*.py"):
        heavy = [n for n in imports(path) if n.split(".")[0] in HEAVY]
        assert not heavy, (path, heavy)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the tuneforge modules it imports (at the top or inside functions; TYPE_CHECKING too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles_inside_a_package():
    """A cycle (a imports b imports a, even lazily) means two modules are one responsibility split badly."""
    graph = _import_graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt.split(".")[:2] != node.split(".")[:2]:
                continue  # across packages the layer test already forbids going back up
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif len(path) < 8:
                visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, sorted(set(cycles))
