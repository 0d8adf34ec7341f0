#!/usr/bin/env bash
# Accuracy of what the CPU-sized default sweep + retrain produce, on the held-out bench sets (never trained on).
# 2 CPU cores: ~10 min sweep + 2 x ~10 min retrain. Results: the last lines of each retrain, and
# EXP/retrain/{easy,mixed}/summary.json ("test": full match on the bench set).
set -euo pipefail
S=${S:-experiments}
BENCH=${BENCH:-../shared/bench}

# 1) the default sweep (8 trials x 2 DDP workers, TPE + ASHA) on a generated 6000-image easy set
captcha-tune sweep --storage "$S" --name demo

# 2) its best config to completion on more data of the same spec, tested on the easy bench set
[ -f data/easy30k/meta.json ] || captcha-tune data generate --spec easy --n 30000 --out data/easy30k --seed 11
captcha-tune retrain "$S/demo" --name easy --data data/easy30k --max-steps 3000 --patience 10 --test "$BENCH/synth-easy-test.parquet"

# 3) the same config on the mixed spec (68 symbols, up to 7 characters, arithmetic questions)
[ -f data/mixed40k/meta.json ] || captcha-tune data generate --spec mixed --n 40000 --out data/mixed40k --seed 12
captcha-tune retrain "$S/demo" --name mixed --data data/mixed40k --max-steps 3000 --patience 10 --test "$BENCH/synth-mixed-test.parquet"

# 4) the figures into bench/results/accuracy.json and summary.md
python -m bench.accuracy "$S/demo/retrain/easy" "$S/demo/retrain/mixed"
python -m bench.run --only ""
