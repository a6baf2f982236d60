"""``python -m segcp``: the ``segcp`` command (:func:`segcp.cli.console`)."""

from segcp.cli import console

if __name__ == "__main__":
    console()
