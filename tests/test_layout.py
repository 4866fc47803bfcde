"""The package's layout: TaskKind at the bottom, no task-kind string comparisons."""
import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dermstack"
TASK_STRINGS = r'"(?:binary|multiclass|multilabel)"'
COMPARISON = re.compile(rf"(?:==|!=)\s*{TASK_STRINGS}|{TASK_STRINGS}\s*(?:==|!=)|in \(\s*{TASK_STRINGS}")


def sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}


def imported_modules(tree: ast.AST, module: str) -> set[str]:
    """Every module an AST imports, at any depth (imports inside functions count), resolved to
    dotted names (``from . import x`` relative to ``module``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_taskkind_is_a_bottom_module():
    tree = ast.parse((SRC / "taskkind.py").read_text())
    assert not {m for m in imported_modules(tree, "dermstack.taskkind") if m.startswith("dermstack")}


def test_no_task_kind_string_comparisons():
    found = [f"{name}:{i + 1}: {line.strip()}" for name, text in sources().items() if name != "taskkind.py"
             for i, line in enumerate(text.splitlines()) if COMPARISON.search(line)]
    assert not found, "ask TaskKind (kind.binary / .exclusive / .multilabel):\n" + "\n".join(found)
