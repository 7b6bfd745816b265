"""``python -m mtpoold`` runs the command line, like the ``mtpoold`` script."""

from ._cli import entry

if __name__ == "__main__":
    entry()
