"""The command line: one module per command, each parse -> call the API -> render -> exit code.

``common`` holds the app, the shared options and the error guard; importing a command module
registers its command (in this order, which ``--help`` shows). The only package that imports typer.
"""

from probe.cli import advise, check, common, compare, depth, fix, inspect, rules, run, schema, sweep, train  # noqa: F401  (registration)
from probe.cli.common import app

__all__ = ["app", "entry"]


def entry() -> None:
    """Console-script entry point (``probe`` and ``python -m probe``): this process is the CLI's
    own, so it may freeze the garbage collector's view of torch (``load_torch``)."""
    from probe.cli.session import Session, running

    with running(Session(own_process=True)):
        app()
