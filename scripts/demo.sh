#!/usr/bin/env bash
# The main job end to end on the model and data that ship with the project: installs what is
# missing, builds tfload, and inspects a committed model.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --release --locked --quiet
tfload="$root/target/release/tfload"
model="saved_models/multi_io"
echo "== tfload variables $model" >&2
"$tfload" variables "$model"
echo >&2
echo "== tfload signatures $model" >&2
"$tfload" signatures "$model"
