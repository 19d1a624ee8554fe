# One venv in .venv; CPU torch is installed first so the torch range in pyproject.toml does not pull CUDA.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: setup test demo demo-sim demo-pipeline bench bench-model bench-runtime lint clean

setup: $(BIN)/pac-sim

$(BIN)/pac-sim: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q "torch>=2.4,<2.15"; \
	else \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

DEMO := out/demo
DEMO_POLICY := models/sawyer_stack_XS.onnx  # trained by the project's pipeline: models/README.md
DEMO_DECODE := sample_median  # motion drawn from the policy, gripper by its median (models/README.md, RESULTS "Session 28")
demo: setup  # the shipped trained policy stacks in the sim: success over 20 held-out episodes, then 10 s of pac-run
	$(BIN)/pac-eval --policy $(DEMO_POLICY) --robot sawyer --task stack --episodes 20 --workers 2 \
		--decode $(DEMO_DECODE) --out $(DEMO)/eval
	$(BIN)/pac-run --robot sawyer --policy $(DEMO_POLICY) --sim --duration 10 --decode $(DEMO_DECODE) --record $(DEMO)/run

S_POLICY := $(DEMO)/pac_S_sawyer.int8.onnx
$(S_POLICY): | setup  # an untrained S policy (int8): the latency benchmark's reference load
	$(BIN)/pac-export --robot sawyer --size S --out $(DEMO)/pac_S_sawyer.onnx --variants fp32,int8

demo-sim: setup  # the driver alone: a scripted square on both arms through the contract, PNGs in out/demo/
	$(BIN)/python -m robots.sim.demo

PIPELINE := out/pipeline
demo-pipeline: setup  # collect → train → export → evaluate, at small scale (about 10 minutes on 2 cores)
	rm -rf $(PIPELINE)
	$(BIN)/pac-collect --robot sawyer --task stack --quality rl_like --episodes 100 --cameras none \
		--out $(PIPELINE)/data --workers 2
	$(BIN)/pac-train --dataset $(PIPELINE)/data/pac/sawyer-stack-rl_like-v0 --size XS --algo pac \
		--steps 600 --batch-size 64 --set warmup_steps=100 --out $(PIPELINE)/run
	$(BIN)/pac-export --checkpoint $(PIPELINE)/run --variants fp32,int8
	$(BIN)/pac-eval --policy $(PIPELINE)/run/export/pac_XS_sawyer.onnx --robot sawyer --task stack \
		--episodes 20 --workers 2 --decode mean --out $(PIPELINE)/eval

bench: setup
	$(BIN)/python -m benchmarks.sim_speed

BENCH := benchmarks/results/bench
BENCH_S ?= 60
# RESULTS.md's figures: make bench-runtime BENCH_FLAGS="--spin --rt-priority 20" (FIFO needs root, CAP_SYS_NICE or rtprio)
BENCH_FLAGS ?=
bench-runtime: setup $(S_POLICY)  # pac-bench end to end, S int8 and S fp32 (make bench-runtime BENCH_S=600 for a soak)
	$(BIN)/pac-bench --policy $(S_POLICY) --backends ort --no-sweep --duration 10 --e2e --e2e-duration $(BENCH_S) \
		$(BENCH_FLAGS) --json $(BENCH)/S_int8_e2e.json --plot $(BENCH)/S_int8_e2e.png
	$(BIN)/pac-bench --policy $(DEMO)/pac_S_sawyer.onnx --backends ort --no-sweep --duration 10 --e2e \
		--e2e-duration $(BENCH_S) $(BENCH_FLAGS) --json $(BENCH)/S_fp32_e2e.json --plot $(BENCH)/S_fp32_e2e.png

$(DEMO)/pac_%_sawyer.onnx: | setup  # untrained policies of each size (fp32 and int8): latency needs no training
	$(BIN)/pac-export --robot sawyer --size $* --out $@ --variants fp32,int8

BENCH_MODEL_FLAGS ?=  # RESULTS.md's S table: BENCH_MODEL_FLAGS="--rt-priority 20"
bench-model: setup $(DEMO)/pac_S_sawyer.onnx $(DEMO)/pac_M_sawyer.onnx $(DEMO)/pac_L_sawyer.onnx  # pac-bench per size
	for size in S M L; do \
		$(BIN)/pac-bench --policy $(DEMO)/pac_$${size}_sawyer.onnx --duration 60 $(BENCH_MODEL_FLAGS) \
			--json $(BENCH)/$${size}.json --plot $(BENCH)/$${size}.png || true; \
	done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layering contracts in pyproject.toml: no import points up

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info .import_linter_cache
