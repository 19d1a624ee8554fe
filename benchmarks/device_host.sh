# Sourced by the scripts a lent device host runs (scaling_gpu.sh, eval_gpu_host.sh, train_gpu_host.sh), from the
# repository root: stage timing against a deadline (END seconds after the start, default DEFAULT_END), unbuffered
# Python, and the wheels the image lacks installed from the carried .whl/ (mujoco, pyzmq, gymnasium, minari, mcap and
# their small needs); LOCAL=1 skips the install for a run here (with PY=.venv/bin/python).
T0=$(date +%s)
el() { echo "[$(($(date +%s) - T0)) s] $*"; }
left() { echo $((${END:-${DEFAULT_END:-500}} - ($(date +%s) - T0))); }
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable}
PY=${PY:-python3}
# The learning study's recipe (RESULTS.md, "Session 28"), passed to every run the device scripts train.
STUDY_SET="--set reward=shaped --set n_step=20 --set target_period=50 --set lr_peak=0.001 --set warmup_steps=200"
STUDY_SET="$STUDY_SET --set eta=0.3 --set critic_horizon=20"
# A second call on the same warm machine keeps what the first installed (a call carries 64 MiB: the wheels can
# travel in one call and the data in the next); WHEELS names the folder they travel in.
if [ -z "$LOCAL" ]; then
  if [ ! -f /tmp/site/.installed ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "${WHEELS:-.whl}"/*.whl && touch /tmp/site/.installed || exit 1
  fi
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  lscpu | grep -E "Model name|^CPU\(s\)"
fi
