"""Entry point of the ``femno`` command.

Exit codes: 0 success, 2 bad input (unknown name, unreadable file, ...),
3 a solver did not converge, 4 an optional dependency is missing.
"""

from __future__ import annotations

import argparse
import sys

from femno import __version__
from femno.errors import ConvergenceError, FemnoError, MissingDependencyError

EXIT_INPUT, EXIT_NOT_CONVERGED, EXIT_MISSING_DEP = 2, 3, 4

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
  femno rve solve --rve RVE1 --strain 0.01 0 0 --json
  femno fe2 --macro cook --micro equino:rve1.pt --steps 5 --plot cook.png
  femno solve darcy --n 256 --solver fcg --pc neural:pc.pt
"""


def build_parser() -> argparse.ArgumentParser:
    from femno.cli import dataset, fe2, generate, info, rve, solve, train

    parser = argparse.ArgumentParser(
        prog="femno", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"femno {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    solve.add_parser(sub)
    generate.add_parser(sub)
    dataset.add_parser(sub)
    train.add_parser(sub)
    rve.add_parser(sub)
    fe2.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MissingDependencyError as exc:
        print(f"femno: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_DEP
    except ConvergenceError as exc:
        print(f"femno: error: {exc}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    except FemnoError as exc:
        print(f"femno: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("femno: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, like coreutils
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
