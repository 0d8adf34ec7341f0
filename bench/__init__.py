"""Benchmarks of captcha-tune: is Ray's share of the work small, does the data keep up, does the search pay?

    python -m bench.run [--quick] [--only data,throughput,overhead,search] [--out DIR]

One module per benchmark: `run(out, quick) -> dict` writes `out/NAME.json` and its plot, `rows(result)` its lines of
`summary.md`. `bench.gpu_train` (one GPU, no Ray) and `bench/accuracy.sh` run on their own. Committed results are in
`bench/results/`; generated datasets and Ray storage go to the git-ignored `bench/.cache/`.
"""
