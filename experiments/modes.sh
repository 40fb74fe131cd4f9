#!/usr/bin/env bash
# Benchmark of issue 2: accuracy, traffic and wall time of the three modes, 10 IID clients,
# public encoder, same rounds for every mode. Writes runs/bench-<dataset>/ (compare.json/.csv/.png
# and the sweep's points/ with one run directory per mode).
#   bash experiments/modes.sh digits
#   bash experiments/modes.sh fashion-mnist
set -euo pipefail
dataset=${1:-digits}
shift || true
case "$dataset" in
  digits) extra=() ;;
  # The public split of Fashion-MNIST is 12k images: 30 epochs train the autoencoder well.
  fashion-mnist|mnist) extra=(--ae-epochs 30) ;;
  *) echo "unknown dataset $dataset" >&2; exit 2 ;;
esac
# The issue-2 setting, not compare's profile: 20% public, 10 rounds of 5 local epochs.
fedlatent compare --dataset "$dataset" --clients 10 --partition iid --rounds 10 --local-epochs 5 \
  --public-fraction 0.2 --encoders public "${extra[@]}" --out "runs/bench-$dataset" "$@"
