"""Translate what a PETSc KSP solve reports into femno's terms (reasons, residuals)."""

from __future__ import annotations

from femno.solvers.petsc_backend._import import get_petsc

__all__ = ["reason_name", "short_reason", "residual_history", "failure_message"]


def _reason_names():
    PETSc = get_petsc()
    out = {}
    for name in dir(PETSc.KSP.ConvergedReason):
        if name.startswith(("CONVERGED_", "DIVERGED_")):
            out.setdefault(getattr(PETSc.KSP.ConvergedReason, name), name)
    return out


def reason_name(code: int) -> str:
    """PETSc's ``KSPConvergedReason`` name of ``code`` (e.g. ``"DIVERGED_MAX_IT"``)."""
    return _reason_names().get(code, f"REASON_{code}")


def short_reason(name: str) -> str:
    """femno's short reason (``stats.reason``) for a ``KSPConvergedReason`` name."""
    if name in ("CONVERGED_RTOL", "CONVERGED_RTOL_NORMAL"):
        return "rtol"
    if name in ("CONVERGED_ATOL", "CONVERGED_ATOL_NORMAL"):
        return "atol"
    if name == "CONVERGED_ITS":
        return "direct"
    if name == "CONVERGED_HAPPY_BREAKDOWN":
        return "rtol"
    if name in ("DIVERGED_MAX_IT", "DIVERGED_ITS"):
        return "maxiter"
    if name.startswith("DIVERGED_BREAKDOWN"):
        return "breakdown"
    if name.startswith("DIVERGED_INDEFINITE"):
        return "indefinite"
    return name.lower()


def residual_history(ksp, bvec, bnorm: float, hist: list, pc_type: str) -> tuple[str, list]:
    """The kind of residual PETSc monitored (``stats.residual_kind``) and the history
    ``hist`` (``||r_k|| / ||b||``) made relative to the right norm of the rhs."""
    PETSc = get_petsc()
    NT = PETSc.KSP.NormType
    kind = {
        NT.UNPRECONDITIONED: "recursive",
        NT.PRECONDITIONED: "preconditioned",
        NT.NATURAL: "natural",
        NT.NONE: "true",
    }.get(ksp.getNormType(), "unknown")
    if pc_type == "none" and kind == "preconditioned":
        kind = "recursive"
    elif kind == "preconditioned" and hist:
        # PETSc logs ||M^-1 r_k||: make it relative to ||M^-1 b|| (entry 0 is 1 for
        # a zero initial guess)
        z = bvec.duplicate()
        ksp.getPC().apply(bvec, z)
        pbnorm = z.norm()
        z.destroy()
        if pbnorm > 0:
            hist = [h * bnorm / pbnorm for h in hist]
    return kind, hist


def failure_message(solver, name: str, its: int, true_res: float, code: int, kind: str) -> str:
    """The ConvergenceError/warning text for a solve of ``solver`` that failed."""
    msg = (
        f"PETSc {solver.method} with preconditioner {solver.pc_name!r} did not converge: "
        f"KSP_{name} after {its} iterations, true relative residual {true_res:.3e} "
        f"(rtol {solver.rtol:.1e})"
    )
    if code > 0:
        msg += (
            f"; PETSc converged on its {kind} residual but the true residual "
            f"stayed above the tolerance after {solver.restarts} restart(s)"
        )
    return msg
