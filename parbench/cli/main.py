"""The entry point: every command module registered on one Typer app, and the one place where errors and
interrupts become exit codes (a `ParbenchError` is one red line and exit 1, a traceback only with --debug;
Ctrl-C 130 and SIGTERM 143 with the command that resumes a run)."""

from __future__ import annotations

import shlex
import sys

import typer

from parbench.cli import datasets, methods, robust, runs, store, suites  # noqa: F401  (they register their commands)
from parbench.cli.common import STATE, app, err
from parbench.errors import ParbenchError


class _Terminated(BaseException):
    """SIGTERM (a scheduler's stop, `kill`): unwinds like Ctrl-C so atomic writes finish or leave nothing."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _interrupted(code: int) -> None:
    """One line saying what survives: a run's last finished epoch, resumable with the same command."""
    args = sys.argv[1:]
    cmd = "parbench " + " ".join(shlex.quote(a) for a in args)
    if "run" in args and "--resume" not in args:
        hint = f"resume with: {cmd} --resume"
    elif "run" in args:
        hint = f"resume with: {cmd}"
    elif {"suite", "demo"} & set(args):
        hint = f"continue with: {cmd} (finished runs are skipped, an interrupted one resumes)"
    else:
        hint = "nothing was left half-written"
    err.print(f"interrupted; {hint}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # not standalone: typer then *returns* exit codes, 130 among them for a Ctrl-C it caught itself
        code = app(standalone_mode=False)
        if code == 130:
            _interrupted(130)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ParbenchError as e:
        if STATE["debug"]:
            raise
        # one line, as it is: no markup parsing of paths like [roots], no wrapping of long paths
        err.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted(130)
    except _Terminated:
        _interrupted(143)
    except Exception as e:  # usage errors (typer vendors its own click, so match by behaviour, not class)
        if type(e).__name__ == "Abort":  # click turns Ctrl-C into Abort
            _interrupted(130)
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
