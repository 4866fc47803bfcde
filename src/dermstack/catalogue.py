"""`dermstack kinds` and :func:`dermstack.kinds`: every registered model kind and ensemble method, its parameters and defaults
(like ``timm.list_models``); :func:`markdown` writes the same listing for the docs site's model kinds page."""
from __future__ import annotations

import re
from dataclasses import MISSING, fields

import click

from dermstack.config.limits import TYPE_TEXT
from dermstack.errors import PluginError
from dermstack.registry import PLUGINS, ensemble_methods, method_names, model_kinds, origin, plugin_problems


def param_rows(schema: type) -> list[tuple[str, str, str]]:
    """(name, type, default) of each field of a params schema, for `dermstack kinds` and the docs' model kinds page."""
    out = []
    for f in fields(schema):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        out.append((f.name, _readable_type(str(f.type)), repr(default)))
    return out


def _readable_type(text: str) -> str:
    """A field's annotation as a user reads it: ``one_of('w', ('a', 'b'))`` -> ``'a' | 'b'``, and
    ``Annotated[T, validators...]`` -> ``T``."""
    text = re.sub(r"one_of\('\w+', \(([^)]*)\)\)", lambda m: " | ".join(v.strip() for v in m.group(1).split(",") if v.strip()), text)
    while (i := text.find("Annotated[")) >= 0:
        depth, j = 0, i + len("Annotated[")
        start, comma = j, None
        for j in range(start, len(text)):
            if text[j] in "[(":
                depth += 1
            elif text[j] in "])":
                if depth == 0:
                    break
                depth -= 1
            elif text[j] == "," and depth == 0 and comma is None:
                comma = j
        text = text[:i] + text[start:comma if comma is not None else j] + text[j + 1:]
    return text


def rows(schema: type) -> list[tuple[str, str, str]]:
    """``param_rows`` with each bounded type shown as its range (``Rounds`` -> ``int 1..100000``)."""
    names = re.compile(r"\b(" + "|".join(TYPE_TEXT) + r")\b")
    return [(name, names.sub(lambda m: TYPE_TEXT[m.group(1)], kind), default) for name, kind, default in param_rows(schema)]


def markdown() -> str:
    """The model kinds and ensemble methods (an installed plugin's too) as Markdown: one table of parameters per kind."""
    kinds = list(model_kinds().values())
    out = ["Model kinds (`[[models]] kind`):", ""]
    for k in kinds:
        out += [f"- **`{k.name}`**: {k.description}."]
    for k in kinds:
        out += ["", f"`kind = \"{k.name}\"` params:", "", "| param | type | default |", "|---|---|---|"]
        out += ["| " + " | ".join(f"`{v}`".replace("|", r"\|") for v in row) + " |" for row in rows(k.params)]
    out += ["", "Ensemble methods (`[ensemble] method`; `auto` picks the best of the best member and the "
            "methods marked *auto* by nested CV, `none` keeps the first model):", ""]
    methods = ensemble_methods()
    out += [f"- **`{m}`**: {methods[m].description}{' (*auto*)' if methods[m].auto_candidate else ''}."
            for m in method_names() if m in methods]
    return "\n".join(out) + "\n"


@click.command("kinds")
@click.option("--markdown", "as_markdown", is_flag=True, help="The listing as Markdown (the docs site's model kinds page).")
def kinds_command(as_markdown: bool) -> None:
    """List every registered model kind and ensemble method (installed plugins' too) with its parameters
    and defaults; a plugin that could not be loaded is named after the listing (exit status 2)."""
    if as_markdown:
        click.echo(markdown(), nl=False)
    else:
        _listing()
    broken = plugin_problems()
    if broken:
        raise PluginError(f"{len(broken)} plugin(s) left out:\n" + "\n".join(f"  {p}: {why}" for p, why in broken.items()))


def catalogue() -> dict[str, dict]:
    """The registry as data (:func:`dermstack.kinds` and `dermstack kinds`): ``models``, kind -> its
    ``description``, ``origin`` (the module or plugin that registered it) and ``params``, name ->
    (``type``, ``default``) as the config reference writes them; ``ensembles``, each ``[ensemble] method``
    (``auto`` and ``none`` included) -> what it does."""
    models = {k.name: {"description": k.description, "origin": origin(k.name),
                       "params": {name: {"type": kind, "default": default} for name, kind, default in rows(k.params)}}
              for k in model_kinds().values()}
    methods = ensemble_methods()
    ensembles = {m: methods[m].description if m in methods else
                 ("best of the best member and the auto candidates by nested CV" if m == "auto" else "the first model alone")
                 for m in method_names()}
    return {"models": models, "ensembles": ensembles}


def _listing() -> None:
    listed = catalogue()
    for name, k in listed["models"].items():
        where = "" if k["origin"] in PLUGINS else f" [{k['origin']}]"
        click.echo(f"{name}: {k['description']}{where}")
        for param, p in k["params"].items():
            click.echo(f"    {param} ({p['type']}) = {p['default']}")
    click.echo("ensemble methods ([ensemble] method):")
    for m, what in listed["ensembles"].items():
        click.echo(f"  {m}: {what}")
