"""dermstack command line: noun groups (data, extract, features, boosting, ensembles, report) plus run/demo."""
from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time

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
    "predict": "dermstack.outputs.cli:predict_command",
    "submit": "dermstack.outputs.cli:submit_command",
    "compare": "dermstack.reports.cli:compare_command",
    "evaluate": "dermstack.external.cli:evaluate_command",
    "kinds": "dermstack.catalogue:kinds_command",
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


#: exit status after Ctrl-C (SIGINT): the shell's convention, 128 + 2
INTERRUPTED = 130
#: seconds the main thread has after Ctrl-C to clean up (a temporary file, the run's lock) before the
#: process ends anyway: a fit inside a library call or in a worker thread is not waited for
GRACE_SECONDS = 1.0
_interrupt = threading.Event()
_said = threading.Lock()
_wakeup: list[socket.socket] = []


def _interrupted() -> None:
    """Say what Ctrl-C left and end the process now, with :data:`INTERRUPTED` (threads still fitting are not waited for)."""
    if _said.acquire(blocking=False):
        click.secho("Interrupted (Ctrl-C): stopped. Every file dermstack writes is written whole or not at all, and a run "
                    "directory keeps its finished stages: the same command again resumes.", fg="red", err=True)
        _end_children()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    time.sleep(GRACE_SECONDS)  # the other thread is saying it and ending the process


def _end_children() -> None:
    """End this process's children (the image features' worker processes, :func:`dermstack.jobs.process_pool`):
    ``os._exit`` leaves them running, and a Ctrl-C that reached only dermstack (``kill -INT``, ``timeout -s
    INT``, not the terminal's whole process group) would leave them working on, holding the caller's pipes open."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:  # already gone
            pass
    for child in psutil.wait_procs(children, timeout=GRACE_SECONDS)[1]:
        try:
            child.kill()
        except psutil.Error:
            pass


def _stop_on_interrupt() -> None:
    """End the process within :data:`GRACE_SECONDS` of Ctrl-C even while the main thread is inside a
    library call (Python runs its SIGINT handler only between bytecodes): the C-level handler writes
    the signal's number to a socket at once (``signal.set_wakeup_fd``), which a watching thread reads."""
    receive, send = _wakeup[:] = socket.socketpair()  # kept referenced: a collected socket closes its fd
    send.setblocking(False)
    try:
        signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        return

    def watch() -> None:
        while data := receive.recv(64):
            if signal.SIGINT in data:
                _interrupt.set()
                time.sleep(GRACE_SECONDS)
                _interrupted()

    threading.Thread(target=watch, name="dermstack-interrupt", daemon=True).start()


def main() -> None:
    # LightGBM and XGBoost use OpenMP; with busy-waiting threads a loaded machine (more runnable threads
    # than cores) trains 10x slower, and passive waiting costs nothing when the cores are free. This is
    # our own process, and no OpenMP runtime has loaded yet; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _stop_on_interrupt()
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt) or _interrupt.is_set():
            _interrupted()
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DermstackError as e:
        click.secho(f"Error: {e}", fg="red", err=True)
        sys.exit(2)
    except OSError as e:  # permissions, not-a-directory, disk full ...: the path and the reason, no traceback
        if _interrupt.is_set():
            _interrupted()
        where = f"{e.filename}: " if e.filename else ""
        also = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        click.secho(f"Error: {where}{e.strerror or e}{also}", fg="red", err=True)
        sys.exit(2)
    except BaseException:
        if _interrupt.is_set():  # a worker process that Ctrl-C stopped too, say: not the error to show
            _interrupted()
        raise


if __name__ == "__main__":
    main()
