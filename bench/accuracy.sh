#!/usr/bin/env bash
# Accuracy on the held-out bench sets (never trained or tuned on) of what the CPU-sized default sweeps + retrains
# produce, on 2 CPU cores: ~35 min in all. Each retrain writes EXP/retrain/NAME/summary.json ("test": full match).
set -euo pipefail
S=${S:-experiments}
BENCH=${BENCH:-../shared/bench}
D=${D:-data}

# 1) easy: the default sweep (8 trials x 2 DDP workers, TPE + ASHA, 6000 generated images), then its best config
#    to completion on 30k images of the same spec
[ -f "$S/demo/sweep.json" ] || captcha-tune sweep --storage "$S" --name demo
[ -f "$D/easy30k/meta.json" ] || captcha-tune data generate --spec easy --n 30000 --out "$D/easy30k" --seed 11
captcha-tune retrain "$S/demo" --name easy --data "$D/easy30k" --max-steps 3000 --patience 10 --test "$BENCH/synth-easy-test.parquet"

# 2) mixed (68 symbols, 4-7 characters, arithmetic questions): its own sweep on 12k images, then 40k
captcha-tune sweep --storage "$S" --name mixed --spec mixed --data-n 12000
[ -f "$D/mixed40k/meta.json" ] || captcha-tune data generate --spec mixed --n 40000 --out "$D/mixed40k" --seed 12
captcha-tune retrain "$S/mixed" --name mixed --data "$D/mixed40k" --max-steps 4000 --patience 10 --test "$BENCH/synth-mixed-test.parquet"

# 3) small data: 1,000 easy captchas as a user's folder of PNGs named by their labels, imported, swept, retrained
[ -d "$D/small-pngs" ] || python -m bench.accuracy pngs --n 1000 --out "$D/small-pngs" --seed 13
[ -f "$D/small/meta.json" ] || captcha-tune data import "$D/small-pngs" --out "$D/small"
captcha-tune sweep --storage "$S" --name small --data "$D/small"
captcha-tune retrain "$S/small" --name small --max-steps 2400 --patience 10 --test "$BENCH/synth-easy-test.parquet"

# 4) the figures into bench/results/accuracy.json (and the head x augment table of each sweep's trials)
python -m bench.accuracy collect "$S/demo/retrain/easy" "$S/mixed/retrain/mixed" "$S/small/retrain/small"
