"""captcha-tune predict: read captchas with an exported model or a checkpoint, and answer arithmetic ones."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("predict", help="read captcha images with an exported .pt2 or a checkpoint")
    p.add_argument("model", help=".pt2 from `captcha-tune export`, a checkpoint, a run folder or a sweep folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, Parquet files with an image column")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, text, answer}")
    p.set_defaults(func=run)


def run(args) -> None:
    from results.predict import answer, load_predictor, read_images

    predictor = load_predictor(args.model)
    rows = read_images(args.inputs)
    texts = predictor.predict([rgb for _, rgb, _ in rows])
    results = [dict(name=name, text=text, answer=answer(text)) for (name, _, _), text in zip(rows, texts)]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"{r['name']}\t{r['text']}" + (f"\t= {r['answer']}" if r["answer"] is not None else ""))
