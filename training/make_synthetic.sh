#!/usr/bin/env bash
# The synthetic pretraining: the earlier bundled demonstration model, trained on synthetic data
# only, which `training/make_bundled.sh` fine-tunes on IDRiD. One command:
#   bash training/make_synthetic.sh [WORKDIR]
# Synthetic training data (generator seed 1; 10 % of it for validation) and a held-out test
# set (seed 1000, never used in training) -> manifests -> `training.train --config demo`
# (random init) -> a fine-tuning run from its best epoch -> a refining run from that one with
# images that contain soft exudates drawn 3x as often -> more of it at a lower learning rate
# with a quarter of the crops on the optic disc ("polish") -> the same with the Tversky index
# over the batch ("harden") -> the average of the polished and hardened weights -> calibration
# (Platt per lesion on 200 photos of generator seed 500, which no stage trained on; thresholds
# re-tuned on calibrated probabilities) -> training.bundle (fp16 weights, test metrics, second-generator
# metrics, real-photo check, model card) -> OUT (default WORKDIR/weights).
#
# Environment: STAGES (default "data train finetune refine polish harden average calibrate bundle"; the bundle
# stage measures inference speed, so run it on the CPU that the card should describe), PYTHON
# (default .venv/bin/python), OUT (the checkpoint folder to write), TRAIN_SET, FINETUNE_SET, REFINE_SET, POLISH_SET and HARDEN_SET
# (extra `--set key=value` pairs for the five training stages, space-separated),
# FINETUNE_EPOCHS (default 10), REFINE_EPOCHS (14), POLISH_EPOCHS (9), HARDEN_EPOCHS (12),
# N_TRAIN and N_TEST (images; 2000 and 120), MACHINE (the training machine named in the card;
# default: read from this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/synthetic}
out=${OUT:-$work/weights}
py=${PYTHON:-.venv/bin/python}
stages=${STAGES:-data train finetune refine polish harden average calibrate bundle}
export NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$work"

source training/machine.sh

if [[ " $stages " == *" data "* ]]; then
  "$py" -m training.synthetic --out "$work/train_data" --n "${N_TRAIN:-2000}" --seed 1 --size 1024 --splits train=1.0 --workers "$cores"
  "$py" -m training.synthetic --out "$work/test_data" --n "${N_TEST:-120}" --seed 1000 --size 1024 --splits test=1.0 --workers "$cores"
  "$py" -m training.prepare --synthetic "$work/train_data" --out "$work/train.csv" --val-fraction 0.1
  "$py" -m training.prepare --synthetic "$work/test_data" --out "$work/test.csv"
fi

# stage NAME EXTRA_SETS SETTING...: `training.train --config demo` into $work/NAME with the
# stage's settings, then the machine's and EXTRA_SETS (space-separated key=value pairs).
stage() {
  local name=$1 extra=$2 sets=() kv start
  shift 2
  # One cache of preprocessed squares for every stage (10 GB for 2000 photos).
  for kv in "$@" $machine_settings cache_dir="$work/cache" $extra; do sets+=(--set "$kv"); done
  start=$(date +%s)
  "$py" -m training.train --manifest "$work/train.csv" --config demo --out "$work/$name" "${sets[@]}"
  echo "$(( $(date +%s) - start ))" > "$work/$name/train_seconds"
  echo "$machine" > "$work/$name/train_machine"
}
# Soft exudates' false positives weighted up in every stage after the first (Tversky
# alpha/beta for SE 0.6/0.4: the first stage marked hard exudates as SE too).
se_fp="alpha=0.4,0.4,0.2,0.6 beta=0.6,0.6,0.8,0.4"

if [[ " $stages " == *" train "* ]]; then
  stage run "${TRAIN_SET:-}"  # random init
fi

if [[ " $stages " == *" finetune "* ]]; then
  # The best epoch at a lower, decaying learning rate.
  stage finetune "${FINETUNE_SET:-}" init_weights="$work/run/best" lr=3e-4 warmup_epochs=0.1 \
    epochs="${FINETUNE_EPOCHS:-10}" $se_fp
fi

if [[ " $stages " == *" refine "* ]]; then
  # Soft exudates stayed weak after fine-tuning (test AUPR 0.24), mostly marked as hard
  # exudates: refine with the images that have them drawn 3x as often (half of all draws),
  # gradients clipped (lr 5e-4 under bf16).
  init=$work/run/best
  [[ -d "$work/finetune/best" ]] && init=$work/finetune/best
  stage refine "${REFINE_SET:-}" init_weights="$init" lr=5e-4 warmup_epochs=0.5 epochs="${REFINE_EPOCHS:-14}" \
    oversample=1,1,1,3 grad_clip=1.0 $se_fp
fi

if [[ " $stages " == *" polish "* ]]; then
  # More of the refining recipe from its best epoch at a lower learning rate, with a quarter
  # of the crops centred on the optic disc: after refining, the model saw soft exudates on
  # the disc of the real photo in a second generator's test (training/crosscheck.py).
  stage polish "${POLISH_SET:-}" init_weights="$work/refine/best" lr=2e-4 warmup_epochs=0.2 \
    epochs="${POLISH_EPOCHS:-9}" disc_crop_p=0.25 oversample=1,1,1,3 grad_clip=1.0 $se_fp
fi

if [[ " $stages " == *" harden "* ]]; then
  # The polishing recipe with the Tversky index over the batch instead of per image: per
  # image, a false soft exudate in a crop without any saturates that image's term (no
  # gradient), and most false ones lay in such places (beside hard exudates, on the rim of
  # the field of view, on pale background spots).
  stage harden "${HARDEN_SET:-}" init_weights="$work/polish/best" lr=2e-4 warmup_epochs=0.2 \
    epochs="${HARDEN_EPOCHS:-12}" tversky_over=batch disc_crop_p=0.25 oversample=1,1,1,3 grad_clip=1.0 $se_fp
fi

if [[ " $stages " == *" average "* ]]; then
  # Hardening lifted soft exudates on this generator's photos but made them worse on the
  # second generator's (its blobs spill past the lesions there): ship the equal-weight average
  # of the polished and the hardened weights (WiSE-FT's weight-space ensembling), with
  # thresholds tuned on validation.
  start=$(date +%s)
  "$py" -m training.average --runs "$work/polish" "$work/harden" --weights 0.5,0.5 --manifest "$work/train.csv" \
    --out "$work/average"
  echo "$(( $(date +%s) - start ))" > "$work/average/train_seconds"
  echo "$machine" > "$work/average/train_machine"
fi

# The last stage that ran is what ships.
final=$work/run
for name in finetune refine polish harden average; do
  [[ -d "$work/$name/best" ]] && final=$work/$name
done

if [[ " $stages " == *" calibrate "* ]]; then
  # Calibration (docs/architecture.md#probabilities-and-calibration): raw probabilities of lesion pixels sit above 0.9999 and the tuned
  # thresholds at 0.99999; Platt scaling per lesion puts them where a slider can move them.
  "$py" -m training.synthetic --out "$work/calib_data" --n 200 --seed 500 --size 1024 --splits valid=1.0 --workers "$cores"
  "$py" -m training.prepare --synthetic "$work/calib_data" --out "$work/calib.csv"
  "$py" -m training.calibrate --model "$final/best" --manifest "$work/calib.csv" --split train,val \
    --test-manifest "$work/test.csv" --precision auto
fi

if [[ " $stages " == *" bundle "* ]]; then
  minutes() { awk -v s="$1" 'BEGIN { printf "%.1f min", s / 60 }'; }
  seconds=$(cat "$work/run/train_seconds")
  where="$(cat "$work/run/train_machine") ($(minutes "$seconds"), first stage)"
  # Each later stage that ran adds its time and machine; the last one is what ships.
  for pair in finetune:fine-tuning refine:refining polish:polishing harden:hardening average:averaging; do
    name=${pair%%:*}
    [[ -d "$work/$name/best" ]] || continue
    more=$(cat "$work/$name/train_seconds")
    seconds=$(( seconds + more ))
    where="$where, then $(cat "$work/$name/train_machine") ($(minutes "$more"), ${pair#*:})"
  done
  "$py" -m training.bundle --run "$final" --test-manifest "$work/test.csv" --out "$out" --bootstrap 0 \
    --train-seconds "$seconds" --train-machine "$where" \
    --command "${TRAIN_SET:+TRAIN_SET=\"$TRAIN_SET\" }${FINETUNE_SET:+FINETUNE_SET=\"$FINETUNE_SET\" }${REFINE_SET:+REFINE_SET=\"$REFINE_SET\" }${POLISH_SET:+POLISH_SET=\"$POLISH_SET\" }${HARDEN_SET:+HARDEN_SET=\"$HARDEN_SET\" }bash training/make_synthetic.sh"
fi
