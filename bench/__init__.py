"""Benchmarks of captcha-tune: is Ray's share of the work small, does the data keep up, does the search pay?

    python -m bench.run [--quick] [--only data,throughput,overhead,search] [--out DIR]

One module per benchmark; each has `run(out, quick) -> dict` (writes `out/NAME.json` and its plots) and
`rows(result) -> list[Row]` (its lines of `summary.md`). `bench.gpu_train` (one GPU, no Ray) and
`bench/accuracy.sh` run on their own. Results of the real runs are committed in `bench/results/`; generated
datasets and Ray storage go to the git-ignored `bench/.cache/`.
"""
