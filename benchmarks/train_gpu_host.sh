#!/bin/bash
# Issue 11's learning study: some of its runs trained on a lent GPU host, on the very bytes trained on here.
# The study's data (main_data.hdf5, 233 MB) travels as zstd with its metadata.json, in two calls (a call carries 64
# MiB, the wheels included), and is unpacked there. pac-train checks the file's CRC against the metadata and hashes
# it into each run.json, so a run trained there names the same dataset as one trained here. Session 29, here:
#   zstd -19 --long=27 -c DATA/main_data.hdf5 | split -b 20500000 -d -a 2 - .gpucarry/main_data.hdf5.zst.
#   (69.6 MB; .gpucarry/ in .git/info/exclude) then .gpucarry/a = the wheels of training (mujoco, pyzmq, gymnasium,
#   farama_notifications, minari, mcap, lz4, websockets, zstandard) + part 00; .gpucarry/b = parts 01.. + metadata.json
#   call 1, carry .gpucarry/a: mkdir -p /tmp/carry && cp .gpucarry/a/main_data* /tmp/carry/ && python3 -m pip install
#     -q --no-index --no-deps --target /tmp/site .gpucarry/a/*.whl && touch /tmp/site/.installed
#   call 2 at once (the machine stays warm 30 s), carry .gpucarry/b:
#     cp .gpucarry/b/* /tmp/carry/ && END=555 bash benchmarks/train_gpu_host.sh
# The runs are learning_study's own pac-train commands (RUNS: algo:seed ...; SET_<algo>: its --set-for ALGO:...),
# in fp32 (amp=none: no bf16, as on the CPU), side by side on the one card: BC and filtered BC, seeds 1 and 2, 12k
# steps x 64, took 381 s together on an H100 (session 29). Each finished run is exported there and comes back as
# $OUT/<run>.tgz (run.json, metrics.csv, summary.json, the final checkpoint's model, the exported actor): unpack it
# into the study's runs/ and `learning_study` evaluates and reports it with the rest. A run not finished by the
# deadline (END seconds after the start) is killed and left out: train it here. Locally: LOCAL=1
# PY=.venv/bin/python DATA=dir. DATASET names the carried data's Minari name (default the study's rl_like data;
# session 31's is sawyer-stack-rl_like_early_close-v0, carried the same way).
DEFAULT_END=540; source "$(dirname "$0")/device_host.sh"
DATA=${DATA:-/tmp/carry} RUNS=${RUNS:-"bc:1 bc:2 filtered_bc:1 filtered_bc:2"} STEPS=${STEPS:-12000} BATCH=${BATCH:-64}
G=${G:-/tmp/g}
D=$G/data/pac/${DATASET:-sawyer-stack-rl_like-v0} S=$G/study
mkdir -p $D/data $S/runs $S/logs
cat $DATA/main_data.hdf5.zst.* | $PY -c "import sys, zstandard
zstandard.ZstdDecompressor(max_window_size=2**27).copy_stream(sys.stdin.buffer, sys.stdout.buffer)" \
  >$D/data/main_data.hdf5 || { el "unpacking failed"; exit 1; }
cp $DATA/metadata.json $D/data/
el "data unpacked: $(sha256sum $D/data/main_data.hdf5 | cut -c1-16)"
# learning_study's command line: its checkpoint_every first, then the study's (device_host.sh's STUDY_SET).
SET="--set checkpoint_every=2000 $STUDY_SET --set checkpoint_every=2000 --set amp=none"
TS=$(( $(date +%s) - T0 ))
for r in $RUNS; do
  algo=${r%:*} seed=${r#*:}
  name=${algo}_XS_s$seed
  extra=SET_$algo  # learning_study's --set-for ALGO:..., e.g. SET_pac="--set alpha=1.0 --set alpha_gripper=0.5"
  timeout $(left) $PY -m policies.train.cli --dataset $D --size XS --algo $algo --steps $STEPS --batch-size $BATCH \
    --seed $seed --threads 1 $SET ${!extra} --out $S/runs/$name >$S/logs/$name.log 2>&1 &
done
step_of() { tail -n1 $S/runs/$1/metrics.csv 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }
sum() { awk '{s += $1} END {print s + 0}'; }
# After CHECK + 40 s, project the finish from the steps done so far (the card's throughput, shared by the runs): while it
# falls past the deadline, stop the last run (one finished run is worth more than several cut short).
names=($(for r in $RUNS; do echo ${r%:*}_XS_s${r#*:}; done))
sleep ${CHECK:-120}
before=$(for n in "${names[@]}"; do step_of $n; done | sum)
sleep 40  # the pace over these 40 s, past the runs' start-up (loading the data)
steps=$(( $(for n in "${names[@]}"; do step_of $n; done | sum) - before ))
k=${#names[@]}
while [ "$k" -gt 1 ] && [ "$steps" -gt 0 ]; do
  done_k=$(for n in "${names[@]:0:k}"; do step_of $n; done | sum)
  eta=$(( (k * STEPS - done_k) * 40 / steps ))
  el "$k runs: $eta s more at $steps steps in 40 s, $(left) s left"
  [ "$eta" -gt $(( $(left) - 60 )) ] || break
  k=$((k - 1))
  el "stopping ${names[k]}: not all would finish"; pkill -f -- "--out $S/runs/${names[k]}\$"
done
while [ -n "$(jobs -r)" ]; do
  sleep 30
  el "$(for n in "${names[@]}"; do echo -n "$n: $(step_of $n) | "; done)"
done
el "trained"
for run in $S/runs/*; do
  name=$(basename $run)
  [ -f $run/summary.json ] || { el "$name did not finish"; tail -c 1500 $S/logs/$name.log; continue; }
  step=$(ls $run/checkpoints | grep step_ | tail -1)
  n=$((10#${step#step_}))
  $PY -m policies.export.cli --checkpoint $run --step $n --out $run/export/step_$n.onnx --variants fp32 \
    >>$S/logs/$name.log 2>&1 || { el "$name export failed"; continue; }
  tar czf $OUT/$name.tgz -C $S/runs $name/run.json $name/metrics.csv $name/summary.json $name/export \
    $name/checkpoints/$step/model.safetensors $name/checkpoints/$step/progress.json
  el "$name: $(cat $run/summary.json | tr -d '\n' | cut -c1-200)"
done
tar czf $OUT/logs.tgz -C $S logs
el "end"; ls -la $OUT
