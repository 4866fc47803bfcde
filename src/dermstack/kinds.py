"""`dermstack kinds`: every registered model kind and ensemble method, its parameters and defaults
(like ``timm.list_models``); :func:`markdown` writes the same listing for the docs site's model kinds page."""
from __future__ import annotations

import click

from dermstack.registry import ensemble_methods, method_names, model_kinds, param_rows


def markdown() -> str:
    """The model kinds and ensemble methods as Markdown: one table of parameters per kind."""
    out = ["Model kinds (`[[models]] kind`):", ""]
    for k in model_kinds().values():
        out += [f"- **`{k.name}`**: {k.description}."]
    for k in model_kinds().values():
        out += ["", f"`kind = \"{k.name}\"` params:", "", "| param | type | default |", "|---|---|---|"]
        out += ["| " + " | ".join(f"`{v}`".replace("|", r"\|") for v in row) + " |" for row in param_rows(k.params)]
    out += ["", "Ensemble methods (`[ensemble] method`; `auto` picks the best of the best member and the "
            "methods marked *auto* by nested CV, `none` keeps the first model):", ""]
    methods = ensemble_methods()
    out += [f"- **`{m}`**: {methods[m].description}{' (*auto*)' if methods[m].auto_candidate else ''}."
            for m in method_names() if m in methods]
    return "\n".join(out) + "\n"


@click.command("kinds")
@click.option("--markdown", "as_markdown", is_flag=True, help="The listing as Markdown (the docs site's model kinds page).")
def kinds_command(as_markdown: bool) -> None:
    """List every registered model kind and ensemble method with its parameters and defaults."""
    if as_markdown:
        click.echo(markdown(), nl=False)
        return
    for k in model_kinds().values():
        click.echo(f"{k.name}: {k.description}")
        for name, kind, default in param_rows(k.params):
            click.echo(f"    {name} ({kind}) = {default}")
    click.echo("ensemble methods ([ensemble] method):")
    methods = ensemble_methods()
    for m in method_names():
        what = methods[m].description if m in methods else \
            ("best of the best member and the auto candidates by nested CV" if m == "auto" else "the first model alone")
        click.echo(f"  {m}: {what}")
