"""The package's layout: TaskKind at the bottom, no task-kind string comparisons."""
import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dermstack"
TASK_STRINGS = r'"(?:binary|multiclass|multilabel)"'
COMPARISON = re.compile(rf"(?:==|!=)\s*{TASK_STRINGS}|{TASK_STRINGS}\s*(?:==|!=)|in \(\s*{TASK_STRINGS}")


def sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}


def type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks: type names for annotations, never imported
    when the module runs, so they close no import cycle (the registry types its fields this way)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imported_modules(tree: ast.AST, module: str) -> set[str]:
    """Every module an AST imports, at any depth (imports inside functions count), resolved to
    dotted names (``from . import x`` relative to ``module``); type-only imports (:func:`type_checking_only`) aside."""
    out, skip = set(), type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


def module_graph() -> dict[str, set[str]]:
    """dermstack module -> the dermstack modules it imports, anywhere in it (inside functions too);
    importing ``a.b.c`` also imports the packages ``a.b`` and ``a`` (their ``__init__``)."""
    names = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = ("dermstack",) + p.relative_to(SRC).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for target in imported_modules(ast.parse(path.read_text()), package + ".__init__"):
            while target and target not in names:
                target = target.rpartition(".")[0]
            while target:  # the module and every package above it
                if target != name and not name.startswith(target + "."):
                    deps.add(target)
                target = target.rpartition(".")[0]
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph, state, stack, cycles = module_graph(), {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)



def test_modules_stay_small():
    big = {name: n for name, text in sources().items() if (n := len(text.splitlines())) > 400}
    assert not big, f"modules over 400 lines (split by topic): {big}"
