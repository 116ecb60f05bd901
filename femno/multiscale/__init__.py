"""Multiscale FE²: material laws, periodic RVE solver and macro solver (planned: issue 5).

The RVE meshes themselves are already read by :func:`femno.fem.load_rve`.
"""
