"""``femno eval``: error statistics of a trained operator model on any dataset."""

from __future__ import annotations

import argparse

EPILOG = """\
The dataset is any `femno generate` output with solutions: the model's own test split,
or the user's mesh and coefficients. SPON models bind to the dataset's mesh; FNO and
DeepONet need their training mesh. Errors are relative L2 errors in the mass-matrix
norm; warnings name where the data lies outside the model's training data (mesh size,
domain, input ranges): there the model extrapolates.

examples:
  femno generate darcy -o mesh=my_mesh.msh --samples 50 --out mine.femno
  femno eval --model spon.pt --data mine.femno
  femno eval --model spon.pt --data mine.femno --json --plot errors.png
  femno eval --model geo.pt --data tshapes.femno --plot errors.png   (geometry models)
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="error statistics of a trained model (SPON, FNO, DeepONet) on a dataset",
        description="Run a trained operator model on every completed sample of a dataset "
        "and report relative L2 errors (mean, median, 90th percentile, max), the Dirichlet "
        "error, the worst samples, time per sample, and extrapolation warnings. Exit code 0 "
        "also with warnings.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL", help="model file (.pt)")
    p.add_argument("--data", required=True, metavar="DATASET", help="femno generate dataset")
    p.add_argument("--batch-size", type=int, default=64, help="samples per forward pass")
    p.add_argument("--worst", type=int, default=5, help="worst samples to list (default 5)")
    p.add_argument("--allow-partial", action="store_true",
                   help="evaluate the completed samples of an unfinished dataset")
    p.add_argument("--plot", metavar="PNG", help="histogram of the per-sample errors and "
                   "the worst sample's error field (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from femno.datagen.store import require_complete
    from femno.errors import InputError
    from femno.operators.checkpoint import load_model
    from femno.operators.evaluation import evaluate_model
    from femno.operators.fe_data import FEData

    if args.batch_size < 1 or args.worst < 0:
        raise InputError("--batch-size must be >= 1 and --worst >= 0")
    require_complete(args.data, allow_partial=args.allow_partial)
    model = load_model(args.model)
    if _geometry(args.data) or _is_geometry_model(model):
        return _run_geometry(args, model)
    meta = getattr(model, "meta", {}) or {}
    encode = (meta.get("data") or {}).get("encode", meta.get("encode", "l2"))
    channels = (meta.get("data") or {}).get("channels")
    data = FEData.from_dataset(args.data, inputs=channels, encode=encode)
    res = evaluate_model(model, data, batch_size=args.batch_size, worst=args.worst)
    err, pred = res.pop("rel_l2"), res.pop("pred")
    summary = {"model": args.model, "kind": getattr(type(model), "model_kind", None),
               "data": args.data, "family": data.family, "dofs": int(data.n_dofs), **res}
    if args.plot:
        _plot(err, pred, data, res, args.plot)
        summary["plot"] = args.plot
    worst = ", ".join(f"{w['sample']} ({w['rel_l2']:.3g})" for w in res["worst"])
    return _report(args, summary, [], worst, "femno eval")


def _report(args, summary, extra_rows, worst, title) -> int:
    """Print the summary (JSON, or a table with ``extra_rows``, the worst samples and the
    warnings); exit code 0."""
    from femno.cli._output import print_json, print_table

    if args.json:
        print_json(summary)
        return 0
    rows = [(k, v) for k, v in summary.items() if k not in ("worst", "warnings", "per_shape")]
    print_table(rows + extra_rows + [("worst samples", worst)], title=title)
    for w in summary["warnings"]:
        print(f"warning: {w}")
    return 0


def _geometry(path) -> bool:
    from femno.datagen.store import DatasetStore

    return DatasetStore.open(path).manifest.get("layout", {}).get("geometry") is not None


def _is_geometry_model(model) -> bool:
    from femno.operators.geometry_surrogate import is_geometry_model

    return is_geometry_model(model)


def _run_geometry(args, model) -> int:
    """A geometry model on a geometry dataset: each sample on its own mesh."""
    from femno.errors import InputError
    from femno.operators.geometry_surrogate import evaluate_geometry_model

    if not _geometry(args.data):
        raise InputError(f"{args.model!r} is a geometry model; evaluate it on a geometry "
                         "dataset (femno generate PROBLEM --geometry)")
    if not _is_geometry_model(model):
        raise InputError(f"{args.data!r} is a geometry dataset (a mesh per sample); "
                         f"{args.model!r} is not a geometry model (femno train geometry)")
    res = evaluate_geometry_model(model, args.data, worst=args.worst)
    err, items, pred = res.pop("rel_l2"), res.pop("items"), res.pop("pred")
    summary = {"model": args.model, "kind": getattr(type(model), "model_kind", None),
               "data": args.data, **res}
    if args.plot:
        _plot_geometry(err, items, pred, res, args.plot)
        summary["plot"] = args.plot
    shapes = [(f"median rel L2, {s}", f"{v['median']:.4g} ({v['samples']} samples)")
              for s, v in res["per_shape"].items()]
    worst = ", ".join(f"{w['row']} {w['shape']} ({w['rel_l2']:.3g})" for w in res["worst"])
    return _report(args, summary, shapes, worst, "femno eval (geometry)")


def _pyplot():
    from femno.errors import optional_import

    optional_import("matplotlib", extra="plot", purpose="--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _error_figure(path, err, res, *, hist, bins, title, field=None) -> None:
    """Two panels: a histogram of the per-sample errors ``err`` (``hist``: a list of
    arrays and their labels for a stacked one, or None), with the median marked, and
    ``field = (mesh, values, cmap, title)`` drawn on a 2-D triangle mesh (or nothing)."""
    import matplotlib.tri as mtri

    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    if hist is None:
        ax0.hist(100 * err, bins=bins, color="tab:blue")
    else:
        ax0.hist(hist[0], bins=bins, stacked=True, label=hist[1])
    ax0.axvline(100 * res["rel_l2_median"], color="k", ls="--", label="median")
    ax0.set_xlabel("relative L2 error (%)")
    ax0.set_ylabel("samples")
    ax0.legend()
    ax0.set_title(title)
    if field is None:
        ax1.axis("off")
    else:
        mesh, values, cmap, ftitle = field
        tri = mtri.Triangulation(mesh.p[0], mesh.p[1], mesh.t.T)
        cs = ax1.tripcolor(tri, values, shading="gouraud", cmap=cmap)
        fig.colorbar(cs, ax=ax1)
        ax1.set_aspect("equal")
        ax1.set_title(ftitle)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_geometry(err, items, pred, res, path) -> None:
    import numpy as np

    shapes = np.array([str(it["shape"]) for it in items])
    names = sorted(set(shapes))
    bins = np.linspace(0, 100 * err.max() * 1.001, min(30, max(5, err.size // 3)) + 1)
    w = int(np.argmax(err))
    it = items[w]
    nd = it["basis"].nodal_dofs
    diff = np.sqrt(sum((pred[w][nd[k]] - it["y"][nd[k]]) ** 2 for k in range(nd.shape[0])))
    _error_figure(path, err, res, hist=([100 * err[shapes == s] for s in names], names),
                  bins=bins, title=f"{err.size} samples, median {100 * res['rel_l2_median']:.2f} %",
                  field=(it["basis"].mesh, diff, "viridis",
                         f"|error| of the worst sample, row {it['row']} ({it['shape']}, "
                         f"{100 * err[w]:.2f} %)"))


def _plot(err, pred, data, res, path) -> None:
    import numpy as np

    worst = int(np.argmax(err))
    mesh = data.mesh
    field = None
    if mesh.p.shape[0] == 2 and mesh.t.shape[0] == 3 and data.n_dofs == mesh.p.shape[1]:
        diff = pred[worst] - data.Y[worst].numpy()  # P1: dofs are the vertices
        field = (mesh, diff, "coolwarm", f"error of the worst sample ({100 * err[worst]:.2f} %)")
    # (the error field is drawn for P1 triangles only)
    _error_figure(path, err, res, hist=None, bins=min(30, max(5, err.size // 3)),
                  title=f"{err.size} samples, mean {100 * res['rel_l2_mean']:.2f} %", field=field)
