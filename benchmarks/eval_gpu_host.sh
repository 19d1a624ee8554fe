#!/bin/bash
# Closed-loop evaluations on a lent device host's CPUs (16 cores there against 2 here), in one device call: every
# policy in EVAL_DIR (default .evalq/, carried: `run(carry=[".whl", ".evalq"])`) through pac-eval on EPISODES
# held-out seeds (pac-eval's default start, as learning_study evaluates) with W workers, once per decoding in DECODES.
# Each policy's summary.json, episodes.csv and log go to <name>_<decode>/ in one $OUT/evals.tgz (a call returns only
# a few files), with a line per evaluation printed at the end. Every evaluation has a deadline (END seconds after
# the start) so what finished comes back when a later one does not.
# The wheels the image lacks are in .whl/ (benchmarks/device_host.sh). Locally: LOCAL=1 PY=.venv/bin/python.
DEFAULT_END=500; source "$(dirname "$0")/device_host.sh"
EVAL_DIR=${EVAL_DIR:-.evalq} EPISODES=${EPISODES:-100} W=${W:-16} DECODES=${DECODES:-sample_median}
R=$(mktemp -d)
for policy in "$EVAL_DIR"/*.onnx; do
  name=$(basename "$policy" .onnx)
  for decode in ${DECODES//,/ }; do
    [ "$(left)" -gt 10 ] || { el "out of time before $name $decode"; break 2; }
    el "$name $decode: $EPISODES episodes"
    timeout "$(left)" $PY -m runtime.eval --policy "$policy" --robot sawyer --task stack --episodes "$EPISODES" \
      --workers "$W" --decode "$decode" --out "$R/${name}_$decode" \
      >"$R/${name}_$decode.log" 2>&1 || el "$name $decode did not finish"
  done
done
el "end"
tar czf "$OUT/evals.tgz" -C "$R" .
for summary in "$R"/*/summary.json; do
  $PY -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-2], \
    {k: s[k] for k in ('successes', 'episodes', 'success_ci95', 'mean_shaped_return', 'wall_s')})" "$summary"
done
