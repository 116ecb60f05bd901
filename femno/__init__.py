"""femno: finite elements and neural operators.

Subpackages
-----------
fem
    Finite-element core on scikit-fem: meshes, spaces, boundary conditions and
    parametric problem families that produce ``(A, b)``.
solvers
    Krylov methods, preconditioners and the scipy/PETSc backends behind one
    factory, :func:`femno.solvers.krylov`.
datagen
    Fast generation of training data from parametric families.
operators
    Neural operators in torch.
multiscale
    RVE solver and FE² macro solver.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("femno")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0.dev0"

from femno.errors import ConvergenceError, FemnoError, InputError, MissingDependencyError

__all__ = ["__version__", "FemnoError", "InputError", "ConvergenceError", "MissingDependencyError"]
