r"""Finite-element spaces: element names and bases.

Element names and the cells they live on:

======  ==========================  ===========================================
name    cell                        scikit-fem element
======  ==========================  ===========================================
``P1``  triangle / tetrahedron      ``ElementTriP1`` / ``ElementTetP1``
``P2``  triangle / tetrahedron      ``ElementTriP2`` / ``ElementTetP2``
``Q1``  quadrilateral / hexahedron  ``ElementQuad1`` / ``ElementHex1``
``Q2``  quadrilateral / hexahedron  ``ElementQuad2`` / ``ElementHex2``
``Q8``  quadrilateral               ``ElementQuadS2`` (8-node serendipity)
======  ==========================  ===========================================

>>> from femno.fem.mesh import unit_square
>>> basis = make_basis(unit_square(4), "P2")
>>> int(basis.N)
81
"""

from __future__ import annotations

import skfem

from femno.errors import InputError

__all__ = ["ELEMENTS", "element", "element_name", "make_basis", "cell_of", "DEFAULT_ELEMENT"]

ELEMENTS: dict[tuple[str, str], type] = {
    ("P1", "tri"): skfem.ElementTriP1,
    ("P2", "tri"): skfem.ElementTriP2,
    ("Q1", "quad"): skfem.ElementQuad1,
    ("Q2", "quad"): skfem.ElementQuad2,
    ("Q8", "quad"): skfem.ElementQuadS2,
    ("P1", "tet"): skfem.ElementTetP1,
    ("P2", "tet"): skfem.ElementTetP2,
    ("Q1", "hex"): skfem.ElementHex1,
    ("Q2", "hex"): skfem.ElementHex2,
}

#: Default element name per mesh class (isoparametric for curved meshes).
DEFAULT_ELEMENT = {
    skfem.MeshTri2: "P2",
    skfem.MeshQuad2: "Q8",
    skfem.MeshTet2: "P2",
    skfem.MeshHex2: "Q2",
}


def _names(cell: str | None = None) -> list[str]:
    return sorted({n for (n, c) in ELEMENTS if cell is None or c == cell})


def cell_of(mesh: skfem.Mesh) -> str:
    """Cell kind of a scikit-fem mesh: ``"tri"``, ``"quad"``, ``"tet"`` or ``"hex"``.

    >>> from femno.fem.mesh import unit_square
    >>> cell_of(unit_square(1, cell="quad"))
    'quad'
    """
    for cls, cell in (
        (skfem.MeshTri1, "tri"),
        (skfem.MeshQuad1, "quad"),
        (skfem.MeshTet1, "tet"),
        (skfem.MeshHex1, "hex"),
    ):
        if isinstance(mesh, cls):
            return cell
    raise InputError(f"unsupported mesh type {type(mesh).__name__}; expected tri/quad/tet/hex")


def element(name: str, *, cell: str | None = None) -> skfem.Element:
    """Return a scikit-fem element instance by name.

    Parameters
    ----------
    name : str
        ``"P1"``, ``"P2"``, ``"Q1"``, ``"Q2"`` or ``"Q8"`` (case-insensitive).
    cell : {"tri", "quad", "tet", "hex"}, optional, keyword-only
        Cell the element lives on.  Default: ``"tri"`` for ``P*`` names and
        ``"quad"`` for ``Q*`` names.

    Raises
    ------
    InputError
        Unknown name, or a name that does not exist on ``cell``; the message lists
        the valid names.

    Examples
    --------
    >>> type(element("Q8")).__name__
    'ElementQuadS2'
    >>> type(element("P2", cell="tet")).__name__
    'ElementTetP2'
    """
    if not isinstance(name, str):
        raise InputError(f"element name must be a string, got {name!r}; valid: {_names()}")
    key = name.upper()
    if key not in _names():
        raise InputError(f"unknown element {name!r}; valid names: {_names()}")
    if cell is None:
        cell = "quad" if key.startswith("Q") else "tri"
    try:
        return ELEMENTS[(key, cell)]()
    except KeyError:
        raise InputError(
            f"element {name!r} is not available on {cell!r} cells; valid names there: "
            f"{_names(cell)}"
        ) from None


def element_name(elem: skfem.Element) -> str:
    """Short name (``"P1"``, ``"Q8"``, ...) of an element instance, else its class name.

    Vector elements keep the name of their scalar component.

    >>> element_name(skfem.ElementVector(skfem.ElementQuadS2()))
    'Q8'
    """
    inner = elem.elem if isinstance(elem, skfem.ElementVector) else elem
    for (name, _), cls in ELEMENTS.items():
        if type(inner) is cls:
            return name
    return type(inner).__name__


def make_basis(
    mesh: skfem.Mesh,
    name: str | skfem.Element | None = None,
    *,
    vector: bool = False,
    intorder: int | None = None,
) -> skfem.CellBasis:
    """Build a :class:`skfem.CellBasis` on ``mesh``.

    Parameters
    ----------
    mesh : skfem.Mesh
        Triangle, quadrilateral, tetrahedral or hexahedral mesh (linear or quadratic
        geometry, including periodic ``MeshTri1DG`` / ``MeshQuad1DG``).
    name : str or skfem.Element, optional
        Element name (see the module table) or an element instance.  Default:
        ``P1`` on triangles/tetrahedra, ``Q1`` on quadrilaterals/hexahedra, and
        isoparametric ``P2`` / ``Q8`` / ``Q2`` on quadratic-geometry meshes.
    vector : bool, keyword-only
        Wrap the element into :class:`skfem.ElementVector` (``dim`` components,
        interleaved dofs).
    intorder : int, optional, keyword-only
        Quadrature order; default scikit-fem's choice (twice the element degree).

    Returns
    -------
    skfem.CellBasis

    Raises
    ------
    InputError
        Unknown element name or element/mesh mismatch.

    Examples
    --------
    >>> from femno.fem.mesh import unit_square
    >>> int(make_basis(unit_square(2, cell="quad"), vector=True).N)
    18
    """
    if not isinstance(mesh, skfem.Mesh):
        raise InputError(f"make_basis expects a skfem Mesh, got {type(mesh).__name__}")
    cell = cell_of(mesh)
    if name is None:
        name = DEFAULT_ELEMENT.get(type(mesh), "P1" if cell in ("tri", "tet") else "Q1")
    if isinstance(name, skfem.Element):
        elem = name
        if elem.refdom is not mesh.elem.refdom:
            raise InputError(
                f"element {type(elem).__name__} does not match the {cell} mesh; valid names: "
                f"{_names(cell)}"
            )
    else:
        key = str(name).upper()
        if key in _names() and (key, cell) not in ELEMENTS:
            raise InputError(
                f"element {name!r} does not match the {cell} mesh; valid names: {_names(cell)}"
            )
        elem = element(key, cell=cell)
    if vector:
        elem = skfem.ElementVector(elem, mesh.dim())
    if intorder is not None and (not isinstance(intorder, int) or intorder < 1):
        raise InputError(f"intorder must be a positive integer, got {intorder!r}")
    return skfem.CellBasis(mesh, elem, intorder=intorder)
