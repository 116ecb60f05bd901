"""Neural operators in torch, with one training loop and one checkpoint format.

==========================  ===================================================
module                      what it holds
==========================  ===================================================
:mod:`.checkpoint`          ``save_model`` / ``load_model``: one file format
                            (kind, config, weights, metadata, versions)
:mod:`.training`            ``fit``: Adam epochs, optional L-BFGS, validation,
                            checkpoint / resume
:mod:`.fe_data`             datasets of ``femno generate`` as FE data: mesh,
                            basis, mass matrix, encoded inputs, solutions
:mod:`.fe_torch`            FE matrices as torch sparse tensors, dof graph,
                            prolongation between mesh levels
:mod:`.spon`                structure-preserving operator networks (SPON) and
                            the multigrid variant (``spon``, ``spon-mg``)
:mod:`.spon_train`          training and evaluation of SPON models
:mod:`.baselines`           FNO and DeepONet on the same data
:mod:`.grid_transfer`       FE space <-> regular grid transfers (probe, bilinear)
:mod:`.fe_training`         training and evaluation of any FE operator model
                            (mass-matrix relative L2 loss)
:mod:`.surrogate`           the Surrogate plug point: a model in place of a
                            solve, or as a Krylov initial guess
:mod:`.equino`              EquiNO: physics-informed POD operator of a
                            periodic RVE (stress and consistent tangent)
:mod:`.equino_fit`          EquiNO's coefficient fits and reduced solves (LM)
:mod:`.equino_train`        EquiNO training and evaluation on FE snapshots
:mod:`.precond_nets`        the grid CNN of learned preconditioners (DCDM,
                            neural flexible CG)
:mod:`.precond_graph`       matrix-graph networks: message passing for any
                            mesh, SPD IC(0)-pattern factor (NeuralIF-style)
:mod:`.precond_amg`         learned smoothed aggregation: a graph network sets
                            the prolongation damping of pyamg's SA hierarchy
:mod:`.precond_train`       label-free training of learned preconditioners
==========================  ===================================================

Modules are imported on use (``import femno`` does not import torch models).
"""
