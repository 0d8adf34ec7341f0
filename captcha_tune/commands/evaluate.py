"""captcha-tune evaluate: full match, character accuracy and top confusions of a model on labelled data."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy of an exported model or a checkpoint on labelled images")
    p.add_argument("model", help=".pt2 from `captcha-tune export`, a checkpoint, a run folder or a sweep folder")
    p.add_argument("--data", required=True, help="dataset folder or Parquet file with image and label columns")
    p.add_argument("--split", default="val", help="split of a dataset folder (ignored for a Parquet file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> None:
    from results.evaluate import evaluate, load_rows
    from results.predict import load_predictor

    predictor = load_predictor(args.model)
    m = evaluate(predictor, load_rows(args.data, args.split))
    if args.json:
        print(json.dumps(dict(m, model=str(args.model), data=str(args.data))))
        return
    print(f"full match {m['full_match']:.4f}  char acc {m['char_acc']:.4f}  n {m['n']}")
    if m["confusions"]:
        print("top confusions (true -> predicted  count):")
        for true, pred, count in m["confusions"]:
            print(f"  {true} -> {pred}  {count}")
