"""Benchmarks of captcha-tune: is Ray's share of the work small, does the data keep up, does the search pay?

    python -m bench.run [--quick] [--only data,throughput,overhead,gpu,search] [--out DIR]

One module per benchmark; each has `run(out, quick) -> dict` (writes `out/NAME.json` and its plots) and
`rows(result) -> list[Row]` (its lines of `summary.md`). Results of the real runs are committed in
`bench/results/`; generated datasets and Ray storage go to the git-ignored `bench/.cache/`.
"""
