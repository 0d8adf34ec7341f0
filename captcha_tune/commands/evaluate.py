"""captcha-tune evaluate: full match, character accuracy and top confusions of a model on labelled data;
for an ensemble with --compare-members, each member's too and the ensemble's gain over the best one."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy of an exported model or a checkpoint on labelled images")
    p.add_argument("model", help=".pt2 from `captcha-tune export`, a checkpoint, a run folder or a sweep folder")
    p.add_argument("--data", required=True, help="dataset folder or Parquet file with image and label columns")
    p.add_argument("--split", default="val", help="split of a dataset folder (ignored for a Parquet file)")
    p.add_argument("--compare-members", action="store_true",
                   help="for an ensemble .pt2 (export --top-k): evaluate each member's checkpoint too and print the ensemble's gain over the best")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> None:
    from results.evaluate import evaluate, load_rows
    from results.predict import load_predictor

    predictor = load_predictor(args.model)
    rows = load_rows(args.data, args.split)
    if args.compare_members:
        return run_compare(predictor, rows, args)
    m = evaluate(predictor, rows)
    if args.json:
        print(json.dumps(dict(m, model=str(args.model), data=str(args.data))))
        return
    print_metrics(m)


def print_metrics(m: dict) -> None:
    print(f"full match {m['full_match']:.4f}  char acc {m['char_acc']:.4f}  n {m['n']}")
    if m["confusions"]:
        print("top confusions (true -> predicted  count):")
        for true, pred, count in m["confusions"]:
            print(f"  {true} -> {pred}  {count}")


def run_compare(predictor, rows, args) -> None:
    from results.ensemble import compare_members

    c = compare_members(predictor, rows)
    if args.json:
        print(json.dumps(dict(c["ensemble"], model=str(args.model), data=str(args.data), best_member=c["best_member"],
                              gain_full_match=c["gain_full_match"], gain_char_acc=c["gain_char_acc"],
                              members=[{k: v for k, v in m.items() if k != "confusions"} for m in c["members"]])))
        return
    print_metrics(c["ensemble"])
    for m in c["members"]:
        print(f"member {m['trial_id'] or m['checkpoint']}: full match {m['full_match']:.4f}  char acc {m['char_acc']:.4f}")
    print(f"ensemble - best member ({c['best_member']}): full match {c['gain_full_match']:+.4f}  char acc {c['gain_char_acc']:+.4f}")
