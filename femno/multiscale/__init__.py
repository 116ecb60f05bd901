"""Multiscale FE²: material laws, the periodic RVE solver and the macro solver.

==========================  ===================================================
module                      what it holds
==========================  ===================================================
:mod:`.materials`           fibre (linear) and matrix (nonlinear elastic) laws
                            of SPEC §2, stress and consistent tangent
:mod:`.rve_assembly`        vectorized Q8 assembly on the RVE mesh
:mod:`.rve_solver`          ``RVESolver``: periodic fluctuation, Newton,
                            homogenized stress and condensed macro tangent
:mod:`.snapshots`           Latin-hypercube RVE snapshots (resumable)
:mod:`.micro`               the micro-model plug point: closed-form laws, the
                            full FE RVE (parallel), EquiNO
:mod:`.macro`               plane-strain macro problems (Cook's membrane,
                            L-profile), load stepping and Newton
:mod:`.fe2`                 FE² driver, force-displacement curve and plots
==========================  ===================================================

The RVE meshes themselves are read by :func:`femno.fem.load_rve`.
"""
