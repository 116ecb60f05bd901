"""Where torch and the finite-element core meet: differentiable solves and assembly.

* :func:`linear_solve` -- :math:`x = A^{-1} b` as a torch function whose backward is one
  adjoint solve reusing the forward's factorization / hierarchy (:class:`AdjointSolver`);
* :class:`TorchAssembler` -- a scikit-fem form's condensed matrix from torch coefficients
  at the quadrature points, differentiable in them;
* :func:`newton_solve` -- a user's torch models as flux law / reaction term of a
  nonlinear FE problem, Newton with the autograd tangent (batched at all quadrature points);
* :class:`ResidualLoss` -- the FE residual of network predictions as a training loss
  (no solution labels needed).

Together: coefficient -> matrix -> solution -> loss, e.g. recovering a Darcy
coefficient from point observations (``demos/hybrid_inverse_darcy.py``).
"""

from femno.hybrid.assembly import TorchAssembler
from femno.hybrid.newton import NewtonResult, newton_solve
from femno.hybrid.residual_loss import ResidualLoss
from femno.hybrid.solve import AdjointSolver, csr_tensor, linear_solve, to_scipy

__all__ = ["linear_solve", "AdjointSolver", "TorchAssembler", "to_scipy", "csr_tensor",
           "newton_solve", "NewtonResult", "ResidualLoss"]
