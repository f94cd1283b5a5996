# Sourced by the make_*.sh scripts (needs $py): sets `machine_settings` (loader workers and
# threads for `training.train --set`) and `machine` (the training machine named in the card,
# MACHINE overrides it) for a GPU or a CPU-only machine.
cores=$(nproc)
if "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  gpu=$("$py" -c "import torch; print(torch.cuda.get_device_name(0))")
  # The GPU waits on augmentation: every core but one decodes and augments.
  machine_settings="num_workers=$(( cores > 2 ? cores - 1 : 1 )) threads=0"
  machine=${MACHINE:-"one $gpu GPU with $cores CPU cores"}
else
  # One loader worker (cache read, CLAHE and a warp of a 576 px window: ~12 ms per sample)
  # beside a main process with one thread per core: 1.8 s per step of 16 on 2 cores, against
  # 2.3 s with one thread.
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cores}
  machine_settings="num_workers=1 threads=$cores"
  machine=${MACHINE:-"a $cores-core x86_64 CPU (no GPU)"}
fi
