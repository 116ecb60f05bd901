"""Finite-element core on scikit-fem: meshes, spaces, boundary conditions, random
fields and parametric problem families producing ``(A, b)``.

>>> from femno.fem import get_family, sample_system
>>> sys = sample_system(get_family("poisson", n=4), seed=0)
>>> sys.dofs
9
"""

from femno.fem.bc import (
    apply_dirichlet,
    boundary_dofs,
    boundary_facets,
    dirichlet_values,
    neumann_load,
    periodic_condense,
    periodic_master,
    periodic_projection,
)
from femno.fem.families import (
    FAMILIES,
    Darcy,
    DarcyPWC,
    Elasticity,
    Family,
    Heat,
    Helmholtz,
    LinearSystem,
    Poisson,
    get_family,
    sample_system,
)
from femno.fem.mesh import (
    load_mesh,
    lshape,
    refine,
    unit_square,
    unstructured_disk,
    unstructured_square,
)
from femno.fem.random_fields import GaussianRandomField, gaussian_field, lognormal_field
from femno.fem.rve import REFERENCE_RVES, RVEMesh, load_rve
from femno.fem.spaces import ELEMENTS, cell_of, element, element_name, make_basis

__all__ = [
    "unit_square",
    "unstructured_square",
    "unstructured_disk",
    "lshape",
    "refine",
    "load_mesh",
    "load_rve",
    "RVEMesh",
    "REFERENCE_RVES",
    "ELEMENTS",
    "element",
    "element_name",
    "make_basis",
    "cell_of",
    "boundary_facets",
    "boundary_dofs",
    "dirichlet_values",
    "apply_dirichlet",
    "neumann_load",
    "periodic_master",
    "periodic_projection",
    "periodic_condense",
    "GaussianRandomField",
    "gaussian_field",
    "lognormal_field",
    "Family",
    "LinearSystem",
    "FAMILIES",
    "get_family",
    "sample_system",
    "Poisson",
    "Darcy",
    "DarcyPWC",
    "Helmholtz",
    "Heat",
    "Elasticity",
]
