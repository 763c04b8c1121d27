"""``python -m probe``."""

from probe.cli import entry

if __name__ == "__main__":
    entry()
