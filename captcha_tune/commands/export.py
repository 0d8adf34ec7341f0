"""captcha-tune export: the best checkpoint of a sweep, run or checkpoint as one standalone .pt2 file."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export the best checkpoint as a torch.export .pt2 that takes raw RGB images")
    p.add_argument("path", metavar="EXP_OR_RUN", help="sweep experiment folder, run folder, checkpoint folder or checkpoint.pt")
    p.add_argument("--out", required=True, help="file to write, e.g. model.pt2")
    p.set_defaults(func=run)


def run(args) -> None:
    from results.export import export_model
    from results.predict import locate_checkpoint

    file, origin = locate_checkpoint(args.path)
    where = [f"trial {origin['trial_id']}"] if origin.get("trial_id") else []
    where.append(f"step {origin.get('step')}")
    where += [f"{k} {origin[k]:.4f}" for k in ("val_full_match", "val_char_acc") if isinstance(origin.get(k), (int, float))]
    print(f"chose {file} ({', '.join(where)})")
    out = export_model(file, args.out, origin)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
