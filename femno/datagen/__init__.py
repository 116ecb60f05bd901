"""Fast generation of training data from parametric families (planned: issue 4).

Sequence strategies (sorted Krylov subspace recycling, factorization and AMG
reuse, block solves, warm starts, ``auto``), the on-disk dataset store and the
local/Dask runners will live here. Nothing is implemented yet; importing this
package gives no functions.
"""
