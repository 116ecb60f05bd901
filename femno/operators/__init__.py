"""Neural operators in torch (planned: issues 5, 6, 7).

Structure-preserving operator networks (SPON), EquiNO, learned preconditioners and
baselines, with one training loop and one checkpoint format. Nothing is
implemented yet.
"""
