"""`python -m minictr` is the `minictr` command."""

from minictr.cli import entry

entry()
