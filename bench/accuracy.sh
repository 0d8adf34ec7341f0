#!/usr/bin/env bash
# Accuracy on the held-out bench sets (never trained or tuned on) of what the CPU-sized default sweeps + retrains
# produce, on 2 CPU cores: ~2 h in all. Each retrain writes EXP/retrain/NAME/summary.json ("test": full match).
# Retrains run to convergence by default (a plateau ends them); --time-budget holds each case to its goal's time.
set -euo pipefail
S=${S:-experiments}
BENCH=${BENCH:-../shared/bench}
D=${D:-data}

# 1) easy: the default sweep (8 trials x 2 DDP workers, TPE + ASHA, 6000 generated images), then its best config
#    to completion on 30k images of the same spec
[ -f "$S/demo/sweep.json" ] || captcha-tune sweep --storage "$S" --name demo
[ -f "$D/easy30k/meta.json" ] || captcha-tune data generate --spec easy --n 30000 --out "$D/easy30k" --seed 11
captcha-tune retrain "$S/demo" --name easy --data "$D/easy30k" --time-budget 480 --test "$BENCH/synth-easy-test.parquet"

# 2) mixed (68 symbols, 4-7 characters, arithmetic questions): its own sweep on 12k images, then 40k
captcha-tune sweep --storage "$S" --name mixed --spec mixed --data-n 12000
[ -f "$D/mixed40k/meta.json" ] || captcha-tune data generate --spec mixed --n 40000 --out "$D/mixed40k" --seed 12
captcha-tune retrain "$S/mixed" --name mixed --data "$D/mixed40k" --time-budget 1500 --test "$BENCH/synth-mixed-test.parquet"

# 3) small data: 1,000 easy captchas as a user's folder of PNGs named by their labels, imported, swept, retrained
[ -d "$D/small-pngs" ] || python -m bench.accuracy pngs --n 1000 --out "$D/small-pngs" --seed 13
[ -f "$D/small/meta.json" ] || captcha-tune data import "$D/small-pngs" --out "$D/small"
captcha-tune sweep --storage "$S" --name small --data "$D/small"
captcha-tune retrain "$S/small" --name small --test "$BENCH/synth-easy-test.parquet"

# 4) hard (6 characters of 0-9a-z, 200x80, heavy noise): 3,000 generated training images, the small-set regime users
#    have; its sweep sizes trials from the 6-character labels and searches the input height; goal >= 90% in 40 min
[ -f "$D/hard3k/meta.json" ] || captcha-tune data generate --spec hard --n 3000 --out "$D/hard3k" --seed 14
captcha-tune sweep --storage "$S" --name hard --data "$D/hard3k"
captcha-tune retrain "$S/hard" --name hard --time-budget 1200 --test "$BENCH/synth-hard-test.parquet"

# 5) the figures into bench/results/accuracy.json (and the head x augment table of each sweep's trials)
python -m bench.accuracy collect "$S/demo/retrain/easy" "$S/mixed/retrain/mixed" "$S/small/retrain/small" "$S/hard/retrain/hard"
