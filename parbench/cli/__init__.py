"""The `parbench` command line: parse, call the library, print. One module per command group; the shared option
types and consoles live in `common`; `main` turns errors and interrupts into exit codes. Heavy imports (torch,
open_clip) happen inside the commands that need them, so `--help`, `datasets list` and `score` stay fast."""

from parbench.cli.main import app, main

__all__ = ["app", "main"]
