"""``python -m probe`` and the ``probe`` console script.

Ctrl-C is answered with one line and exit 130 at every moment, including while the command
modules (typer, rich) are still importing, before probe's own handler is in place.
"""

import os
import sys


def main() -> None:
    try:
        from probe.cli import entry

        entry()
    except KeyboardInterrupt:
        sys.stderr.write("probe: interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # no finalization: a half-imported module must not abort the interpreter


if __name__ == "__main__":
    main()
