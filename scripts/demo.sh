#!/usr/bin/env bash
# The main job end to end on the model and data that ship with the project: installs what is
# missing, builds tfload, fine-tunes the CNN pretrained on digits 0-4 to digits 5-9 from an image
# folder with its base frozen, checks the trained model, and lists the committed model's
# signatures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --locked --quiet
tfload="$root/target/debug/tfload"
model="saved_models/cnn_digits"
out="demo-out/cnn_digits_5_9"

step() { printf '\n== %s\n' "$*" >&2; }

step "tfload variables $model"
"$tfload" variables "$model"
step "tfload train $model --show-mask   (the model's default: base frozen, new head trainable)"
"$tfload" train "$model" --show-mask
step "tfload train: fine-tune on the image folder of digits 5-9, validate on held-out digits"
"$tfload" train "$model" \
    --data saved_models/data/digits_5_9_images \
    --val-data saved_models/data/digits_5_9_val.npz \
    --epochs 10 --batch-size 16 --out "$out" --overwrite
if "$tfload" eval --help >/dev/null 2>&1; then
    step "tfload eval $out on the held-out digits"
    "$tfload" eval "$out" --data saved_models/data/digits_5_9_val.npz
fi
step "tfload signatures $model"
"$tfload" signatures "$model"
