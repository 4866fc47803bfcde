"""dermstack command line: noun groups (data, extract, features, boosting, ensembles, report) plus run/demo."""
from __future__ import annotations

import importlib
import logging
import sys

import click

from dermstack import __version__
from dermstack.errors import DermstackError

#: command name -> "module:attribute"; imported only when the command is used (fast start-up).
COMMANDS = {
    "data": "dermstack.data.cli:data",
    "extract": "dermstack.extract.cli:extract",
    "features": "dermstack.features.cli:features",
    "boosting": "dermstack.boosting.cli:boosting",
    "ensembles": "dermstack.ensembles.cli:ensembles",
    "report": "dermstack.reports.cli:report",
    "run": "dermstack.run:run_command",
    "demo": "dermstack.run:demo_command",
    "predict": "dermstack.ensembles.cli:predict_command",
    "submit": "dermstack.ensembles.cli:submit_command",
    "compare": "dermstack.reports.compare:compare_command",
    "evaluate": "dermstack.external.cli:evaluate_command",
    "kinds": "dermstack.kinds:kinds_command",
}


class UserError(click.ClickException):
    """A DermstackError as the CLI shows it: the message alone, exit status 2, no traceback."""

    exit_code = 2


class LazyGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DermstackError as e:
            raise UserError(str(e)) from None

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="dermstack")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """dermstack: skin-lesion images to explainable classifiers, the ISIC 2024 way."""
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DermstackError as e:
        click.secho(f"Error: {e}", fg="red", err=True)
        sys.exit(2)
    except OSError as e:  # permissions, not-a-directory, disk full ...: the path and the reason, no traceback
        where = f"{e.filename}: " if e.filename else ""
        also = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        click.secho(f"Error: {where}{e.strerror or e}{also}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
