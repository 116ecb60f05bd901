"""``femno dataset``: look into dataset directories written by ``femno generate``."""

from __future__ import annotations

from femno.cli._output import print_json, print_table


def add_parser(sub) -> None:
    p = sub.add_parser("dataset", help="inspect and verify generated datasets",
                       description="Inspect and verify dataset directories written by "
                       "femno generate.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    q = dsub.add_parser("inspect", help="settings, completion, arrays and solver statistics")
    q.add_argument("path", help="dataset directory")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_inspect)
    v = dsub.add_parser(
        "verify", help="re-read every block and check it against its completion marker",
        description="Re-read every finished block and compare it with the checksums and chunk "
        "sizes in its completion marker.  Exit status 0: complete and intact; 1: damaged or "
        "incomplete blocks (listed by sample range); 2: not a dataset.  Rerun the "
        "`femno generate` command that wrote the dataset, with the same arguments, to "
        "recompute the damaged and missing blocks.")
    v.add_argument("path", help="dataset directory")
    v.add_argument("--quick", action="store_true",
                   help="only check that chunk files exist with their recorded sizes (no reads)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=run_verify)
    e = dsub.add_parser(
        "export", help="write a trajectory dataset in The Well's or PDEBench's HDF5 layout",
        description="Evaluate every trajectory on a uniform grid of the (rectangular) domain "
        "and write it as The Well (OUT/data/train/NAME.hdf5, read by "
        "the_well.data.WellDataset(path=OUT, well_split_name='train')) or PDEBench "
        "(OUT/NAME.h5, one group per sample). The interpolation error is recorded per sample.")
    e.add_argument("path", help="trajectory dataset directory (femno generate ... --steps T)")
    e.add_argument("--format", choices=("well", "pdebench"), required=True)
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--grid", type=int, nargs=2, metavar=("NX", "NY"), default=None,
                   help="grid points per direction (default: the vertex grid of a square mesh)")
    e.add_argument("--name", default=None, help="dataset name (default femno_FAMILY)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_export)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_inspect(args) -> int:
    from femno.datagen.store import inspect_dataset

    info = inspect_dataset(args.path)
    if args.json:
        print_json(info)
        return 0
    s = info["settings"]
    rows = [
        ("path", info["path"]), ("family", info["family"]),
        ("options", ", ".join(f"{k}={v}" for k, v in info["family_options"].items()) or "-"),
        ("samples done", f"{info['samples_done']} / {info['samples_total']}"),
        ("complete", "yes" if info["complete"] else "no"),
        ("blocks done", f"{info['blocks_done']} / {info['blocks_total']} (block {s['block']})"),
        ("method / pc / rtol", f"{s.get('method', 'direct')} / {s.get('pc', '-')} / {s['rtol']:g}"),
        ("methods used", ", ".join(info["methods_used"]) or "-"),
        ("seed / sort", f"{s['seed']} / {s.get('sort', '-')}"),
        ("element / dofs", f"{info['layout'].get('element')} / {info['layout'].get('n_dofs')}"),
    ]
    traj = info["layout"].get("trajectory")
    if traj:
        scheme = traj.get("scheme", "theta")
        if scheme.startswith("theta"):  # "theta 0.5" or "theta 0.5, time-dependent ..."
            scheme = f"theta {traj['theta']:g}{scheme[len('theta'):]}"
        rows.append(("trajectory", f"{traj['steps']} steps of dt {traj['dt']:g}, {scheme} "
                                   f"({' x '.join(traj['axes'])})"))
    geo = info["layout"].get("geometry")
    if geo:
        rows.append(("geometry", f"a mesh per sample: shapes {', '.join(geo['shapes'])}, h "
                                 f"{geo['h']:g}, padded to {geo['max_points']} vertices"))
    rows += [(f"stats: {k}", v) for k, v in info["stats"].items()]
    rows += [(f"array {k}", f"{v['shape']} {v['dtype']} chunks {v['chunks']}")
             for k, v in info["arrays"].items()]
    rows += [(f"version {k}", v) for k, v in info["versions"].items()]
    rows.append(("created", info["created"]))
    rows += [("damaged", line) for line in info.get("damage", [])]
    print_table(rows, title="femno dataset inspect")
    return 0


def _ranges(blocks: list[int]) -> str:
    out, start = [], None
    for i, b in enumerate(blocks):
        if start is None:
            start = b
        if i + 1 == len(blocks) or blocks[i + 1] != b + 1:
            out.append(str(start) if start == b else f"{start}-{b}")
            start = None
    return ", ".join(out)


def run_verify(args) -> int:
    from femno.datagen.store import REPAIR_HINT, DatasetStore

    store = DatasetStore.open(args.path)
    report = store.verify(quick=args.quick)
    if args.json:
        print_json(report)
        return 0 if report["ok"] else 1
    for p in report["static"]:
        print(f"{p['array']} (written at creation): {p['problem']}")
    for d in report["damaged"]:
        lo, hi = d["samples"]
        for p in d["problems"]:
            print(f"block {d['block']} (samples {lo}-{hi}): {p['array'] or 'marker'}: "
                  f"{p['problem']}")
    inc = report["incomplete"]
    if inc:
        print(f"incomplete: {len(inc)} of {report['blocks_total']} blocks not generated yet "
              f"(blocks {_ranges([d['block'] for d in inc])})")
    what = "quick check (files and sizes)" if args.quick else "checksums"
    if report["ok"]:
        print(f"{report['path']}: all {report['blocks_total']} blocks intact ({what})")
        return 0
    nd = len(report["damaged"])
    print(f"{report['path']}: {nd} damaged block(s), {len(inc)} missing, "
          f"{report['blocks_ok']} of {report['blocks_total']} intact ({what})")
    if report["static"]:
        print("arrays written at creation are damaged: generate the dataset again into a "
              "new path")
    elif nd or inc:
        print("to repair: " + REPAIR_HINT.format(path=report["path"]).split(" and ", 1)[1])
    return 1


def run_export(args) -> int:
    from femno.datagen.export import export_dataset

    nx, ny = args.grid or (None, None)
    info = export_dataset(args.path, args.out, format=args.format, nx=nx, ny=ny, name=args.name)
    if args.json:
        print_json(info)
    else:
        print_table([(k, v) for k, v in info.items() if k != "interpolation_error"],
                    title=f"femno dataset export --format {args.format}")
    return 0
