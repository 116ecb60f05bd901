"""Statistics recorded by every linear solve."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["SolveStats"]


@dataclass
class SolveStats:
    """What one linear solve did.

    Attributes
    ----------
    method, pc, backend : str
        Krylov method (``"cg"``, ``"gmres"``, ...), preconditioner name and backend
        (``"scipy"`` or ``"petsc"``).
    iterations : int
        Krylov iterations (matrix-vector products with the system matrix, not
        counting the one for the initial residual).
    residuals : list of float
        Relative residual history ``||b - A x_k||_2 / ||b||_2``, entry 0 is the
        initial guess. Methods that only know a recursively updated or
        preconditioned residual record that one and say so in ``residual_kind``.
    residual : float
        Final *true* relative residual ``||b - A x||_2 / ||b||_2``, recomputed
        after the solve (so it can be trusted whatever the method).
    converged : bool
        ``residual <= rtol`` (plus ``atol / ||b||``).
    setup_s, solve_s : float
        Wall-clock seconds spent in preconditioner setup and in the iteration.
    reason : str
        Why the iteration stopped (``"rtol"``, ``"maxiter"``, ``"breakdown"``, ...).
    n : int
        Number of unknowns.
    """

    method: str = ""
    pc: str = "none"
    backend: str = "scipy"
    n: int = 0
    rtol: float = 1e-8
    iterations: int = 0
    residuals: list = field(default_factory=list)
    residual: float = math.nan
    residual_kind: str = "true"
    converged: bool = False
    setup_s: float = 0.0
    solve_s: float = 0.0
    reason: str = ""

    @property
    def total_s(self) -> float:
        return self.setup_s + self.solve_s

    def as_dict(self, *, history: bool = True) -> dict:
        """JSON-ready dictionary (``history=False`` drops the residual history)."""
        d = asdict(self)
        d["total_s"] = self.total_s
        if not history:
            d.pop("residuals")
        return d

    def summary(self) -> str:
        state = "converged" if self.converged else f"NOT converged ({self.reason})"
        return (
            f"{self.method}+{self.pc} [{self.backend}] n={self.n}: {self.iterations} it, "
            f"rel. residual {self.residual:.3e}, {state}, setup {self.setup_s:.3f} s, "
            f"solve {self.solve_s:.3f} s"
        )
