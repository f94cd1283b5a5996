#!/usr/bin/env bash
# Reproduce the bundled model in weights/ from the IDRiD release, stage by stage:
#   bash training/make_bundled.sh "PATH/TO/A. Segmentation" [WORKDIR]
#
# Stages (STAGES, default "pretrain data train calibrate bundle"):
#   pretrain   the synthetic demonstration model the fine-tuning starts from
#              (training/make_synthetic.sh into WORKDIR/synthetic; hours on a CPU). Skipped
#              when INIT names a checkpoint folder or WORKDIR/synthetic/weights exists.
#   data       `training.prepare --idrid`: IDRiD's 27 official test photos are the test split;
#              10 of the 54 training photos, stratified by which lesions they show (soft
#              exudates included), are the validation split for model selection, thresholds
#              and calibration; the other 44 train.
#   train      `training.train --config idrid` from the pretrained weights into WORKDIR/real
#              (resumes where it stopped: run the same command again).
#   calibrate  Platt scaling per lesion and thresholds re-tuned, on the validation photos at
#              their original resolution (`training.calibrate`).
#   bundle     fp16 weights, test metrics on the 27 official test photos with bootstrap
#              intervals, the normal-eye check, inference time and the model card -> OUT.
#
# Environment: PYTHON (default .venv/bin/python), INIT (pretrained checkpoint folder; default
# WORKDIR/synthetic/weights), OUT (default weights), TRAIN_SET (extra `--set key=value` pairs
# for training, space-separated, e.g. "time_limit_minutes=125 amp=bf16"), MACHINE (the
# training machine named in the card; default: read from this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: bash training/make_bundled.sh \"PATH/TO/A. Segmentation\" [WORKDIR]" >&2
  exit 2
fi
idrid=$1
work=${2:-runs/idrid}
py=${PYTHON:-.venv/bin/python}
stages=${STAGES:-pretrain data train calibrate bundle}
init=${INIT:-$work/synthetic/weights}
out=${OUT:-weights}
cores=$(nproc)
export NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$work"

if "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  gpu=$("$py" -c "import torch; print(torch.cuda.get_device_name(0))")
  machine_settings="num_workers=$(( cores > 2 ? cores - 1 : 1 )) threads=0"
  machine=${MACHINE:-"one $gpu GPU with $cores CPU cores"}
else
  # One loader worker (decoding is cached after the first epoch) beside one thread per core.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cores}
  machine_settings="num_workers=1 threads=$cores"
  machine=${MACHINE:-"a $cores-core x86_64 CPU (no GPU)"}
fi

if [[ " $stages " == *" pretrain "* && ! -f "$init/config.json" ]]; then
  OUT="$work/synthetic/weights" bash training/make_synthetic.sh "$work/synthetic"
  init=$work/synthetic/weights
fi

if [[ " $stages " == *" data "* ]]; then
  "$py" -m training.prepare --idrid "$idrid" --out "$work/manifest.csv" --val-fraction 0.17
fi

if [[ " $stages " == *" train "* ]]; then
  sets=()
  for kv in init_weights="$init" $machine_settings cache_dir="$work/cache" ${TRAIN_SET:-}; do sets+=(--set "$kv"); done
  start=$(date +%s)
  resume=()
  [[ -f "$work/real/last/config.json" ]] && resume=(--resume)
  "$py" -m training.train --manifest "$work/manifest.csv" --config idrid --out "$work/real" "${resume[@]}" "${sets[@]}"
  echo "$(( $(date +%s) - start ))" >> "$work/real/train_seconds"
  echo "$machine" > "$work/real/train_machine"
fi

if [[ " $stages " == *" calibrate "* ]]; then
  "$py" -m training.calibrate --model "$work/real/best" --manifest "$work/manifest.csv" --split val --precision auto
fi

if [[ " $stages " == *" bundle "* ]]; then
  seconds=$(awk '{ s += $1 } END { print s }' "$work/real/train_seconds")
  "$py" -m training.bundle --run "$work/real" --test-manifest "$work/manifest.csv" --out "$out" --bootstrap 1000 \
    --train-seconds "$seconds" --train-machine "$(cat "$work/real/train_machine")" \
    --pretraining "the synthetic demonstration model (training/make_synthetic.sh)" \
    --command "${TRAIN_SET:+TRAIN_SET=\"$TRAIN_SET\" }bash training/make_bundled.sh \"PATH/TO/A. Segmentation\""
fi
