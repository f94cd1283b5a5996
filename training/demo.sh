#!/usr/bin/env bash
# End-to-end demo on synthetic data, CPU only:
#   training.synthetic -> training.prepare -> training.train (cpu-small) -> training.evaluate
# and the same evaluation of an untrained model of the same architecture, for comparison.
#
# Usage: training/demo.sh OUT_DIR [N_IMAGES] [extra training.train arguments, e.g. --set epochs=5]
# Run from the repository root with the project's Python (PYTHON=.venv/bin/python by default).
set -euo pipefail

out=${1:?usage: training/demo.sh OUT_DIR [N_IMAGES] [--set key=value ...]}
n=${2:-80}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
export NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$out"

stage() {  # stage NAME COMMAND...: run it, log its output, record its wall time
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  "$@" 2>>"$out/demo.log"
  echo "$name $((SECONDS - start))" >>"$out/timings.txt"
  echo "== $name done in $((SECONDS - start)) s"
}

: >"$out/timings.txt"
: >"$out/demo.log"
start=$SECONDS
stage synthetic "$python" -m training.synthetic --out "$out/data" --n "$n" --seed 7 --size 1024 --workers 2
stage prepare "$python" -m training.prepare --synthetic "$out/data" --out "$out/manifest.csv"
stage train "$python" -m training.train --manifest "$out/manifest.csv" --config cpu-small --out "$out/run" "$@"
stage evaluate "$python" -m training.evaluate --model "$out/run/best" --manifest "$out/manifest.csv" \
  --split test --out "$out/eval"
# The baseline: same architecture and input size, random weights, default thresholds.
size=$("$python" -c "import json; c = json.load(open('$out/run/best/config.json')); print(c['model']['decoder_channels'], c['preprocessing']['input_size'], c['model']['encoder'])")
read -r channels input encoder <<<"$size"
stage untrained "$python" -m training.untrained --out "$out/untrained" --encoder "$encoder" \
  --decoder-channels "$channels" --input-size "$input" --seed 0
stage evaluate-untrained "$python" -m training.evaluate --model "$out/untrained" --manifest "$out/manifest.csv" \
  --split test --out "$out/eval-untrained"

echo "total $((SECONDS - start))" >>"$out/timings.txt"
times >"$out/cpu.txt"  # the second line: user and system CPU time of every stage (load-independent)
echo "cpu user/system $(tail -1 "$out/cpu.txt")" >>"$out/timings.txt"
"$python" - "$out" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for name in ("eval", "eval-untrained"):
    m = json.loads((out / name / "metrics.json").read_text())["metrics"]["overall"]
    rows.append((name, m))
print("\n| model | macro F1 | macro AUPR | " + " | ".join(f"AUPR {c}" for c in ("EX", "HE", "MA", "SE")) + " |")
print("|---|---:|---:|---:|---:|---:|---:|")
fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
for name, m in rows:
    label = "trained (cpu-small)" if name == "eval" else "untrained"
    print(f"| {label} | {fmt(m['macro']['f1'])} | {fmt(m['macro']['aupr'])} | "
          + " | ".join(fmt(m[c]["aupr"]) for c in ("EX", "HE", "MA", "SE")) + " |")
print("\nwall time per stage (s):")
print((out / "timings.txt").read_text())
EOF
