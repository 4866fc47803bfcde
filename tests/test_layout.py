"""The package's layout: TaskKind at the bottom, no task-kind string comparisons, no import cycles,
one topic per folder, no booster library named outside its adapter."""
import ast
import functools
import re
from pathlib import Path

import pytest

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


@functools.cache
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


# -- names the checks read (one topic per folder, kinds that describe themselves) -------------------
LIBRARIES = ("lightgbm", "xgboost", "catboost")
#: where a booster library's name may be written: its adapter, the packages whose versions a run
#: records, and the kind a [[models]] entry without one gets
LIBRARY_NAMES_ALLOWED = {
    "boosting/lightgbm_.py": None, "boosting/xgboost_.py": None, "boosting/catboost_.py": None,
    "provenance.py": "PACKAGES", "config/modelconfig.py": "DEFAULT_KIND",
}


def string_constants(tree: ast.AST) -> list[tuple[ast.Constant, str | None]]:
    """Every str constant of a module with the name it is assigned to at module level (None elsewhere)."""
    out = []
    for stmt in tree.body:
        target = stmt.targets[0].id if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name) else None
        out += [(n, target) for n in ast.walk(stmt) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return out


def test_no_booster_library_is_named_outside_its_adapter():
    found = []
    for name, text in sources().items():
        allowed = LIBRARY_NAMES_ALLOWED.get(name, "")
        for node, target in string_constants(ast.parse(text)):
            if node.value in LIBRARIES and not (allowed is None or target == allowed):
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not found, "a library's differences live on its adapter class (dermstack.boosting.base):\n" + "\n".join(found)


def test_one_write_submission():
    defs = [f"{name}:{node.lineno}" for name, text in sources().items() for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "write_submission"]
    assert defs == ["outputs/submission.py:" + defs[0].split(":")[1]], defs


def test_ensembles_holds_only_ensembles():
    left = [p.name for p in (SRC / "ensembles").glob("*.py")
            if p.stem.startswith("cnn") or p.stem in ("augment", "imagebank", "predict", "submission")]
    assert not left, f"the CNN belongs in cnn/, predict and submissions in outputs/: {left}"


@pytest.mark.parametrize("package,never", [
    ("dermstack.boosting", "dermstack.cnn"),  # the CNN's scores reach a booster as a feature group the pipeline hands over
    *[(p, "dermstack.reports") for p in ("dermstack.boosting", "dermstack.linear", "dermstack.mlp", "dermstack.cnn",
                                          "dermstack.ensembles")],  # the reports read the kinds, never the other way
])
def test_model_packages_do_not_import_what_sits_above_them(package, never):
    graph = module_graph()
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m == package or m.startswith(package + ".")
                 for d in deps if d == never or d.startswith(never + "."))
    assert not bad, bad
