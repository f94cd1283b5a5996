#!/usr/bin/env bash
# Reproduce the bundled model in weights/ from the IDRiD release, stage by stage:
#   bash training/make_bundled.sh PATH/TO/IDRiD [WORKDIR]
# IDRiD holds the release's "A. Segmentation" and "B. Disease Grading" folders.
#
# Stages (STAGES, default "pretrain data train refine normals calibrate bundle"):
#   pretrain   the synthetic demonstration model the fine-tuning starts from
#              (training/make_synthetic.sh into WORKDIR/synthetic; hours on a CPU). Skipped
#              when INIT names a checkpoint folder or WORKDIR/synthetic/weights exists.
#   data       `training.prepare --idrid`: IDRiD's 27 official test photos are the test split;
#              10 of the 54 training photos, stratified by which lesions they show (soft
#              exudates included), are the validation split for model selection, thresholds
#              and calibration; the other 44 train (WORKDIR/manifest.csv). The same plus 60
#              photos of the grading part graded retinopathy 0 and macular-edema risk 0, as
#              lesion-free photos, 50 train / 10 validation (WORKDIR/manifest_normals.csv). And
#              the grading part's test photos graded 0 and 0, all in the test split, to score
#              what the model marks on healthy eyes (WORKDIR/manifest_test_normals.csv).
#   train      `training.train --config idrid` from the pretrained weights into WORKDIR/real,
#              stopped after epoch 9 of its 40-epoch schedule (TRAIN_STOP).
#   refine     from the best epoch of that: lesion-centred crops pick a lesion kind first
#              (`balanced_crops`: microaneurysms and soft exudates are centred as often as the
#              large kinds), photos with soft exudates drawn twice as often, lr 3e-4 decaying
#              over 16 epochs, stopped after epoch 7 (REFINE_STOP), into WORKDIR/refine.
#   normals    from refine's best epoch, with the lesion-free photos: training on them (about
#              a quarter of the draws) and choosing the epoch and thresholds with them, so that
#              a healthy eye stays clean; lr 2e-4 over 10 epochs, into WORKDIR/normals. The
#              training stages resume where they stopped: run the same command again.
#   calibrate  Platt scaling per lesion, and thresholds re-tuned on the flip-averaged
#              probabilities, on the validation photos at their original resolution
#              (`training.calibrate --tta`: the model then runs with flips by default),
#              haemorrhages also combined with a pass at half the input size
#              (SCALES; chosen on the validation photos), and hard exudates not marked within
#              1.2 % of the field's diameter from its edge (EDGE_MARGIN; chosen there too).
#   bundle     fp16 weights, test metrics on the 27 official test photos with bootstrap
#              intervals, the normal-eye check, the healthy eyes of the grading test set,
#              inference time and the model card -> OUT.
#
# Environment: PYTHON (default .venv/bin/python), INIT (pretrained checkpoint folder; default
# WORKDIR/synthetic/weights), OUT (default weights), TRAIN_SET and REFINE_SET (extra `--set
# key=value` pairs for the training stages, space-separated, e.g. "amp=bf16"), NORMALS_SET,
# TRAIN_STOP (default 9), REFINE_STOP (default 7), SCALES (input sizes per lesion for the
# test-time augmentation, as `training.calibrate --scales`), EDGE_MARGIN (lesions cleared along the
# field of view's edge, as `training.calibrate --edge-margin`; default EX=0.012, empty for none),
# MACHINE (the training machine named in the card; default: read from this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: bash training/make_bundled.sh PATH/TO/IDRiD [WORKDIR]" >&2
  exit 2
fi
idrid=$1
work=${2:-runs/idrid}
py=${PYTHON:-.venv/bin/python}
stages=${STAGES:-pretrain data train refine normals calibrate bundle}
init=${INIT:-$work/synthetic/weights}
out=${OUT:-weights}
export NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$work"

source training/machine.sh

if [[ " $stages " == *" pretrain "* && ! -f "$init/config.json" ]]; then
  OUT="$work/synthetic/weights" bash training/make_synthetic.sh "$work/synthetic"
  init=$work/synthetic/weights
fi

if [[ " $stages " == *" data "* ]]; then
  "$py" -m training.prepare --idrid "$idrid" --out "$work/manifest.csv" --val-fraction 0.17
  "$py" -m training.prepare --idrid "$idrid" --idrid-normals "$idrid" --normals 60 --out "$work/manifest_normals.csv" \
    --val-fraction 0.17
  "$py" -m training.prepare --idrid-normals "$idrid" --normals-from test --out "$work/manifest_test_normals.csv"
fi

# stage NAME MANIFEST EXTRA_SETS SETTING...: `training.train --config idrid` into $work/NAME with the
# stage's settings, then the machine's and EXTRA_SETS; resumes a run that stopped part way.
stage() {
  local name=$1 manifest=$2 extra=$3 sets=() kv start resume=()
  shift 3
  for kv in "$@" $machine_settings cache_dir="$work/cache" $extra; do sets+=(--set "$kv"); done
  [[ -f "$work/$name/last/training_state.json" ]] && resume=(--resume)
  start=$(date +%s)
  "$py" -m training.train --manifest "$work/$manifest" --config idrid --out "$work/$name" "${resume[@]}" "${sets[@]}"
  echo "$(( $(date +%s) - start ))" >> "$work/$name/train_seconds"
  echo "$machine" > "$work/$name/train_machine"
}

# epochs_done NAME: how many epochs the stage's run has finished (0 before it starts).
epochs_done() {
  local state=$work/$1/last/training_state.json
  if [[ -f "$state" ]]; then
    "$py" -c "import json, sys; print(json.load(open(sys.argv[1]))['epoch'] + 1)" "$state"
  else
    echo 0
  fi
}

if [[ " $stages " == *" train "* ]] && (( $(epochs_done real) < ${TRAIN_STOP:-9} )); then
  stage real manifest.csv "${TRAIN_SET:-}" init_weights="$init" stop_epoch="${TRAIN_STOP:-9}"
fi

if [[ " $stages " == *" refine "* ]] && (( $(epochs_done refine) < ${REFINE_STOP:-7} )); then
  stage refine manifest.csv "${REFINE_SET:-}" init_weights="$work/real/best" balanced_crops=true oversample=1,1,1,2 \
    lr=3e-4 warmup_epochs=0.5 epochs=16 stop_epoch="${REFINE_STOP:-7}"
fi

if [[ " $stages " == *" normals "* ]]; then
  stage normals manifest_normals.csv "${NORMALS_SET:-}" init_weights="$work/refine/best" balanced_crops=true \
    oversample=2,2,2,4 lr=2e-4 warmup_epochs=0.3 epochs=10 epoch_repeats=4
fi

final=$work/real
for name in refine normals; do
  [[ -d "$work/$name/best" ]] && final=$work/$name
done

if [[ " $stages " == *" calibrate "* ]]; then
  # Fitted on the validation photos only; the test photos are for the bundle stage alone.
  "$py" -m training.calibrate --model "$final/best" --manifest "$work/manifest_normals.csv" --split val --test-split "" \
    --precision auto --tta --scales "${SCALES:-EX=1 HE=0.5,1 MA=1 SE=1}" --edge-margin "${EDGE_MARGIN-EX=0.012}"
fi

if [[ " $stages " == *" bundle "* ]]; then
  seconds=0
  where=""
  for pair in "real:first stage" "refine:refining" "normals:with lesion-free photos"; do
    name=${pair%%:*}
    [[ -f "$work/$name/train_seconds" ]] || continue
    more=$(awk '{ s += $1 } END { print s }' "$work/$name/train_seconds")
    seconds=$(( seconds + more ))
    where="$where${where:+, then }$(cat "$work/$name/train_machine") ($(awk -v s="$more" 'BEGIN { printf "%.1f min", s / 60 }'), ${pair#*:})"
  done
  healthy=()
  [[ -f "$work/manifest_test_normals.csv" ]] && healthy=(--lesion-free "$work/manifest_test_normals.csv")
  "$py" -m training.bundle --run "$final" --test-manifest "$work/manifest.csv" --out "$out" --bootstrap 1000 "${healthy[@]}" \
    --train-seconds "$seconds" --train-machine "$where" \
    --pretraining "the synthetic demonstration model (training/make_synthetic.sh)" \
    --command "${TRAIN_SET:+TRAIN_SET=\"$TRAIN_SET\" }${REFINE_SET:+REFINE_SET=\"$REFINE_SET\" }${NORMALS_SET:+NORMALS_SET=\"$NORMALS_SET\" }bash training/make_bundled.sh PATH/TO/IDRiD"
fi
