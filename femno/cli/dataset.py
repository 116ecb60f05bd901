"""``femno dataset``: look into dataset directories written by ``femno generate``."""

from __future__ import annotations

from femno.cli._output import print_json, print_table


def add_parser(sub) -> None:
    p = sub.add_parser("dataset", help="inspect generated datasets",
                       description="Inspect dataset directories written by femno generate.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    q = dsub.add_parser("inspect", help="settings, completion, arrays and solver statistics")
    q.add_argument("path", help="dataset directory")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_inspect)
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
        ("blocks done", f"{info['blocks_done']} / {info['blocks_total']} (block {s['block']})"),
        ("method / pc / rtol", f"{s['method']} / {s['pc']} / {s['rtol']:g}"),
        ("methods used", ", ".join(info["methods_used"]) or "-"),
        ("seed / sort", f"{s['seed']} / {s['sort']}"),
        ("element / dofs", f"{info['layout'].get('element')} / {info['layout'].get('n_dofs')}"),
    ]
    rows += [(f"stats: {k}", v) for k, v in info["stats"].items()]
    rows += [(f"array {k}", f"{v['shape']} {v['dtype']} chunks {v['chunks']}")
             for k, v in info["arrays"].items()]
    rows += [(f"version {k}", v) for k, v in info["versions"].items()]
    rows.append(("created", info["created"]))
    print_table(rows, title="femno dataset inspect")
    return 0
