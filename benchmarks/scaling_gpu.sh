#!/bin/bash
# Issue 11's scaling study on a lent GPU host, in one device call (run from the repository root there, with the
# wheels the image lacks in .whl/: mujoco, pyzmq, gymnasium, minari, mcap and their small needs):
#   collect the study's data there (1,500 state episodes are 233 MB, over the 64 MiB a call carries), train PAC
#   at XS, S and M side by side on the one GPU (same steps and batch: a fixed budget), export, evaluate closed
#   loop on its CPUs (onnxruntime there is the CPU build), then learning_study --report; results land in $OUT.
# Every stage has a deadline (END seconds after the start) so what finished comes back when a later stage does not.
# Measured on an H100 host (16 cores), session 25: collection 180 s, training 1,500 x 256 took XS/S ~130 s and M
# ~190 s side by side, XS's 100 episodes 136 s; S (100 episodes, 6 workers) reached 78 and M (24, 8 workers) had
# not finished by END=548: give the evaluations a second call, or fewer episodes. Locally: LOCAL=1 PY=.venv/bin/python.
# Session 27, an H200 host (16 cores): collection took 225 s, past the old 230 s limit once writing was counted: the
# limit is 330 s, and a collection cut short is never reused (it was: metadata.json is written before the data).
DEFAULT_END=560; source "$(dirname "$0")/device_host.sh"
EP=${EP:-1500} STEPS=${STEPS:-1500} BATCH=${BATCH:-256} W=${W:-16}
G=${G:-/tmp/g}
D=$G/data S=$G/study
# REUSE=1: keep a dataset an earlier call on the same warm machine finished (sealed: its metadata holds the file CRC).
if [ -n "$REUSE" ] && grep -qs pac_file_crc32 $D/pac/sawyer-stack-rl_like-v0/data/metadata.json; then
  el "reusing $D"
else
  el "collect $EP episodes, $W workers"
  timeout ${TC:-330} $PY -m policies.data.collect --robot sawyer --task stack --quality rl_like --episodes $EP \
    --cameras none --out $D --workers $W >$OUT/collect.log 2>&1 || { el "collect failed"; tail -c 2000 $OUT/collect.log; exit 1; }
fi
el "collected"; tail -c 600 $OUT/collect.log | tr '\r' '\n' | tail -4
for size in M S XS; do
  case $size in XS) E=${E_XS:-100} WK=3 ;; S) E=${E_S:-100} WK=6 ;; M) E=${E_M:-24} WK=8 ;; esac
  timeout $(left) $PY -m benchmarks.learning_study --dataset $D/pac/sawyer-stack-rl_like-v0 --out $S --algos pac \
    --seeds 0 --size $size --steps $STEPS --batch-size $BATCH --episodes $E --workers $WK --curve 1 \
    --decode sample_median $STUDY_SET >$OUT/study_$size.log 2>&1 &
done
while [ -n "$(jobs -r)" ]; do
  sleep 30
  el "$(for r in $S/runs/*; do echo -n "$(basename $r): $(tail -n1 $r/metrics.csv 2>/dev/null | cut -c1-60) | "; done)"
done
el "studies done"
$PY -m benchmarks.learning_study --out $S --report >$OUT/report.txt 2>&1
cat $OUT/report.txt
tar czf $OUT/study.tgz --exclude='*.onnx' --exclude='*.onnx.data' --exclude='*.safetensors' -C $G study
cp $S/runs/pac_XS_s0/export/step_*.onnx $OUT/ 2>/dev/null
el "end"; ls -la $OUT
