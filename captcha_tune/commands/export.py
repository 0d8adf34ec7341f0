"""captcha-tune export: the best checkpoint of a sweep, run or checkpoint as one standalone .pt2 file;
with --top-k K, the best K trials of a sweep as one .pt2 that averages their probabilities."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export the best checkpoint as a torch.export .pt2 that takes raw RGB images")
    p.add_argument("path", metavar="EXP_OR_RUN", help="sweep experiment folder, run folder, checkpoint folder or checkpoint.pt")
    p.add_argument("--out", required=True, help="file to write, e.g. model.pt2")
    p.add_argument("--top-k", type=int, metavar="K", help="an ensemble of the sweep's best K trials (each at its best checkpoint) in one .pt2")
    p.set_defaults(func=run)


def describe(origin: dict) -> str:
    where = [f"trial {origin['trial_id']}"] if origin.get("trial_id") else []
    where.append(f"step {origin.get('step')}")
    where += [f"{k} {origin[k]:.4f}" for k in ("val_full_match", "val_char_acc") if isinstance(origin.get(k), (int, float))]
    return ", ".join(where)


def run(args) -> None:
    if args.top_k is not None:
        return run_ensemble(args)
    from results.export import export_model
    from results.checkpoints import resolve

    file, origin = resolve(args.path)
    print(f"chose {file} ({describe(origin)})")
    out = export_model(file, args.out, origin)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def run_ensemble(args) -> None:
    from results.ensemble import export_ensemble, top_checkpoints

    members = top_checkpoints(args.path, args.top_k)
    for file, origin in members:
        print(f"member {file} ({describe(origin)})")
    out = export_ensemble(members, args.out, source=str(args.path))
    print(f"wrote {out} (ensemble of {len(members)}, {out.stat().st_size / 1e6:.1f} MB)")
