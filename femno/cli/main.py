"""Entry point of the ``femno`` command.

Exit codes: 0 success, 2 bad input (unknown name, unreadable file, ...),
3 a solver did not converge, 4 an optional dependency is missing, 1 an internal
error (a bug: please report it).  Every failure is one line ``femno: error: ...``
on stderr, never a traceback; set ``FEMNO_DEBUG=1`` to re-raise the exception
instead (developers).
"""

from __future__ import annotations

import argparse
import os
import sys

from femno import __version__
from femno.errors import ConvergenceError, FemnoError, MissingDependencyError

EXIT_INTERNAL, EXIT_INPUT, EXIT_NOT_CONVERGED, EXIT_MISSING_DEP = 1, 2, 3, 4


class UsageError(FemnoError):
    """A command-line syntax error found by argparse (exit code 2)."""


class FemnoArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line: ``femno: error: PROG: MESSAGE``."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "(no message)"

DESCRIPTION = """\
femno: finite elements and neural operators.

Assemble parametric PDE families with scikit-fem, solve them with Krylov methods and
AMG on scipy/pyamg or PETSc, generate training datasets fast, train neural operators
(SPON, FNO, DeepONet, EquiNO, learned preconditioners) and run FE² with them.

examples:
  femno info                                  versions, backends, devices
  femno solve darcy --n 256 --pc amg          log-normal Darcy flow, AMG-PCG
  femno solve darcy --backend petsc --pc hypre --petsc-option pc_hypre_boomeramg_strong_threshold=0.5
  femno generate darcy --samples 1000 --out darcy.femno --workers 2
  femno train spon --data darcy.femno --out spon.pt --arch spon-mg
  femno eval --model spon.pt --data my_mesh.femno   surrogate errors on your own data
  femno rve solve --rve RVE1 --strain 0.01 0 0 --json
  femno fe2 --macro cook --micro equino:rve1.pt --steps 5 --plot cook.png
  femno solve darcy --n 256 --solver fcg --pc neural:pc.pt
"""


def build_parser() -> argparse.ArgumentParser:
    from femno.cli import dataset, evaluate, fe2, generate, info, rve, solve, train

    parser = FemnoArgumentParser(
        prog="femno", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"femno {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    solve.add_parser(sub)
    generate.add_parser(sub)
    dataset.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    rve.add_parser(sub)
    fe2.add_parser(sub)
    return parser


def _debug() -> bool:
    return os.environ.get("FEMNO_DEBUG", "").strip() not in ("", "0", "false", "no")


def main(argv=None) -> int:
    """Run ``femno ARGV``; returns the exit code (see the module docstring)."""
    import warnings

    format_warning = warnings.formatwarning
    if not _debug():  # warnings as one line each, without the source line that raised them
        warnings.formatwarning = _format_warning
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = format_warning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"femno: warning: {_one_line(message)}\n"


def _main(argv) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("femno: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, like coreutils
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if _debug():
            raise
        code, line = _report(exc)
        print(line, file=sys.stderr)
        return code


def _petsc_reason(exc) -> str:
    """The last, most specific line of a PETSc error stack (``[0] Unable to find ...``)."""
    text = str(exc)
    parts = [p.strip() for p in text.split("[0]") if p.strip()]
    code = getattr(exc, "ierr", None)
    reason = parts[-1] if parts else _one_line(text)
    if len(parts) > 2 and parts[-2].startswith("Unknown type"):
        reason = f"{parts[-2].split('.')[0]}: {reason}"
    return _one_line(reason) + (f" (PETSc error code {code}; check --petsc-option and --pc)"
                                if code is not None else "")


def _report(exc: BaseException) -> tuple[int, str]:
    """Exit code and the one-line message of an exception that escaped a command."""
    if isinstance(exc, MissingDependencyError):
        return EXIT_MISSING_DEP, f"femno: error: {_one_line(exc)}"
    if isinstance(exc, ConvergenceError):
        return EXIT_NOT_CONVERGED, f"femno: error: {_one_line(exc)}"
    if isinstance(exc, FemnoError):
        return EXIT_INPUT, f"femno: error: {_one_line(exc)}"
    if type(exc).__module__.startswith("petsc4py"):  # PETSc.Error: bad options, types, ...
        return EXIT_INPUT, f"femno: error: PETSc: {_petsc_reason(exc)}"
    if isinstance(exc, MemoryError):
        what = f" ({_one_line(exc)})" if str(exc) else ""
        return EXIT_INPUT, (f"femno: error: out of memory{what}; try a smaller --n "
                            "(or fewer --samples / --workers)")
    return EXIT_INTERNAL, (f"femno: internal error: {type(exc).__name__}: {_one_line(exc)} "
                           "(set FEMNO_DEBUG=1 for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
