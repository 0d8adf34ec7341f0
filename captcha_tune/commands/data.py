"""captcha-tune data generate|import|show: make, bring in, or look at a captcha dataset."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("data", help="generate, import or show captcha datasets")
    verbs = p.add_subparsers(dest="data_verb", required=True)

    g = verbs.add_parser("generate", help="render captchas with the `captcha` package on all cores")
    g.add_argument("--spec", choices=["easy", "mixed", "hard"], default="easy")
    g.add_argument("--n", type=int, default=5000, help="number of images (train + validation)")
    g.add_argument("--out", required=True, help="dataset folder to write")
    g.add_argument("--val-fraction", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=None, help="seed of the labels (images themselves can't be seeded)")
    g.set_defaults(func=generate)

    i = verbs.add_parser("import", help="import your own labelled images")
    i.add_argument("src", help="folder of images named by their label (226md.png), or with a labels file")
    i.add_argument("--labels", default=None, help="CSV/TSV of filename,label (default: labels come from file names)")
    i.add_argument("--out", required=True)
    i.add_argument("--charset", default=None, help="allowed symbols (default: taken from the data)")
    i.add_argument("--max-len", type=int, default=None, help="longest label the model reads (default: the longest label imported)")
    i.add_argument("--val-fraction", type=float, default=0.1)
    i.set_defaults(func=import_)

    s = verbs.add_parser("show", help="contact sheet of images with their labels")
    s.add_argument("data", help="dataset folder or Parquet file")
    s.add_argument("--out", default="sheet.png")
    s.add_argument("--n", type=int, default=48)
    s.set_defaults(func=show)


def generate(args) -> None:
    from trainable.data import generate

    out = generate(args.spec, args.n, args.out, args.val_fraction, args.seed)
    print(f"wrote {args.n} '{args.spec}' captchas to {out}")


def import_(args) -> None:
    from trainable.importer import import_folder

    import_folder(args.src, args.out, labels_file=args.labels, charset=args.charset, max_len=args.max_len, val_fraction=args.val_fraction)


def show(args) -> None:
    from trainable.sheet import contact_sheet

    print(f"wrote {contact_sheet(args.data, args.out, args.n)}")
