#!/usr/bin/env bash
# Benchmark of issue 2: accuracy, traffic and wall time of the three modes, 10 IID clients,
# public encoder, same rounds for every mode. Writes runs/bench-<dataset>/ (compare.json/.csv/.png
# and one run directory per mode).
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
fedlatent compare --dataset "$dataset" --clients 10 --partition iid --rounds 10 --encoder public \
  "${extra[@]}" --out "runs/bench-$dataset" "$@"
