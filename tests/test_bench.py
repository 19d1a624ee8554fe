"""pac-bench: its numbers come from real timed calls, unavailable backends are said so, the exit code follows
the budget, and the recommendation follows the budget too."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.bench import cli
from runtime.bench.backends import Opened, PolicyFile, Setting, Unavailable, open_setting, settings_for, thread_counts
from runtime.bench.inference import Plan, interleaved, paced
from runtime.bench.probes import MachinePeaks
from runtime.bench.report import e2e_table, measured_from
from runtime.bench.stats import latency_stats
from runtime.bench.verdict import Budget, Row, judge, recommend


def _opened(label_backend: str, run, threads: int = 1) -> Opened:
    return Opened(Setting(label_backend, threads), run, "test", "fp32", 4_000_000, 0.0, 0.0)


@pytest.mark.parametrize(
    "samples, p50, p99, maximum",
    [
        ([5.0] * 100, 5.0, 5.0, 5.0),
        (list(range(1, 101)), 50.5, 99.01, 100.0),
        ([1.0] * 99 + [50.0], 1.0, 1.49, 50.0),
    ],
)
def test_latency_stats_are_the_percentiles_of_the_samples(samples, p50, p99, maximum):
    s = latency_stats(samples)
    assert (s.n, s.p50_ms, s.max_ms) == (len(samples), p50, maximum)
    assert s.p99_ms == pytest.approx(p99)
    assert s.jitter_ms == pytest.approx(p99 - p50)


def test_no_samples_are_nan_not_zero():
    s = latency_stats([])
    assert s.n == 0 and np.isnan(s.p50_ms)


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def delay(self, ms: float):
        def run() -> None:
            self.ns += round(ms * 1e6)

        return run


def test_interleaved_rounds_measure_each_setting_exactly_on_a_fake_clock():
    clock = FakeClock()
    fast, slow = _opened("ort", clock.delay(2.0)), _opened("torch", clock.delay(7.5))
    samples = interleaved([fast, slow], Plan(seconds=1.0, rounds=4, min_calls=8), clock=clock, progress=False)
    assert set(np.unique(samples["ort 1t"])) == {2.0}
    assert set(np.unique(samples["torch 1t"])) == {7.5}
    # each gets its share of each round (1 s / 4 rounds / 2 settings = 125 ms), at least min_calls in all
    assert samples["ort 1t"].size == 4 * 63  # 62 calls reach 124 ms, the 63rd crosses 125 ms
    assert samples["torch 1t"].size == 4 * 17


def test_a_model_with_a_known_delay_is_reported_at_that_delay():
    delay_s = 0.004
    took_ms: list[float] = []  # what each call really took, seen from inside it

    def delayed_model() -> None:  # busy, as inference is: a sleep would measure the scheduler instead
        start = time.perf_counter()
        end = start + delay_s
        while (now := time.perf_counter()) < end:
            pass
        took_ms.append((now - start) * 1e3)

    opened = _opened("ort", delayed_model)
    samples = interleaved([opened], Plan(seconds=0.6, rounds=3, min_calls=30), progress=False)
    peaks = MachinePeaks(matmul_flops=1e11, memory_bytes_per_s=1e10, threads=1)
    row = measured_from(opened, samples["ort 1t"], flops=2_000_000, peaks=peaks)
    assert row.stats.n >= 30 and row.stats.n == len(took_ms)
    # Never faster than the delay; slower only by what the calls really took (a busy host preempts the model, and
    # the model's own clock sees that too) plus the tool's own per-call cost, which is microseconds.
    assert delay_s * 1e3 <= row.stats.p50_ms <= float(np.median(took_ms)) + 0.5
    assert row.flop_bound_ms == pytest.approx(0.02)  # 2 MFLOP at 100 GFLOP/s
    assert row.weight_bound_ms == pytest.approx(0.4)  # 4 MB at 10 GB/s
    assert row.x_flop_bound == pytest.approx(row.stats.p50_ms / 0.02)


def test_thread_sweep_covers_one_to_all_cores():
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [1, 2]
    assert thread_counts(12) == [1, 2, 4, 8, 12]
    labels = [s.label for s in settings_for(["ort", "torch", "cuda"], 2, sweep=True)]
    assert labels == ["ort 1t", "ort 1t spin", "ort 2t", "ort 2t spin", "torch 1t", "torch 2t", "cuda"]
    assert [s.label for s in settings_for(["ort"], 8, sweep=False)] == ["ort 8t"]


ROWS = [
    Row("ort 1t", "fp32", 1, False, 8.0, flags="a"),
    Row("ort 2t", "fp32", 2, False, 5.0, flags="b"),
    Row("ort-int8 2t spin", "int8", 2, True, 2.0, flags="c"),
    Row("torch 2t", "fp32", 2, False, 1.0, servable=False),  # a reference: never recommended
]


@pytest.mark.parametrize(
    "total_ms, recommended",
    [(10.0, "ort 1t"), (7.0, "ort 2t"), (4.0, "ort-int8 2t spin"), (2.5, None)],
)
def test_the_recommendation_is_the_most_conservative_setting_that_fits_the_budget(total_ms, recommended):
    best = recommend(ROWS, Budget(total_ms, 1.0, True))
    assert (best.label if best else None) == recommended


def test_the_verdict_is_on_the_serving_setting():
    serving = ROWS[1]
    assert judge(ROWS, serving, Budget(10.0, 1.0, True)).passed
    failed = judge(ROWS, serving, Budget(5.5, 1.0, True))  # 5 ms + 1 ms overhead > 5.5 ms
    assert not failed.passed and failed.recommended.label == "ort-int8 2t spin"
    assert "FAIL" in failed.message and "recommended: ort-int8 2t spin" in failed.message
    assert not judge(ROWS, None, Budget(100.0, 1.0, True)).passed  # nothing served: never a pass


def test_a_gpu_backend_here_is_unavailable_with_its_reason_never_the_cpu(exported_policy):
    policy = PolicyFile.open(exported_policy("sawyer"))
    for backend in ("cuda", "tensorrt"):
        try:
            opened = open_setting(Setting(backend), policy)
        except Unavailable as exc:
            assert "GPU" in str(exc) or "onnxruntime" in str(exc)
        else:  # a machine with a GPU: then it really runs there
            assert opened.provider != "CPUExecutionProvider"
    with pytest.raises(Unavailable, match="int8"):
        open_setting(Setting("ort-int8", 1), policy)  # the fixture exports fp32 only


def _bench(policy, tmp_path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    argv = ["--policy", str(policy), "--duration", "0.4", "--rounds", "2", "--min-calls", "10", "--no-progress"]
    code = cli.main([*argv, "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def test_the_exit_code_follows_the_budget_and_the_report_names_what_could_not_run(exported_policy, tmp_path):
    policy = exported_policy("sawyer")
    code, report = _bench(policy, tmp_path, "--backends", "ort,cuda,ort-int8", "--threads", "1", "--budget-ms", "1000")
    assert code == cli.EXIT_PASS and report["verdict"]["passed"]
    (row,) = report["settings"]
    assert row["label"] == "ort 1t" and row["n"] >= 10 and row["p50_ms"] > 0
    assert row["provider"] == "CPUExecutionProvider" and row["golden_error"] <= 1e-4
    assert row["warmup"]["open_s"] > 0 and row["median_x_flop_bound"] > 0
    assert "int8" in report["unavailable"]["ort-int8"]
    assert "cuda" in report["unavailable"] or any(s["backend"] == "cuda" for s in report["settings"])

    tight = row["p50_ms"] / 10  # far under what the setting measured: it cannot pass
    code, report = _bench(policy, tmp_path, "--backends", "ort", "--threads", "1", "--budget-ms", f"{tight + 1.0}")
    assert code == cli.EXIT_FAIL and not report["verdict"]["passed"]
    assert "FAIL" in report["verdict"]["message"]


def test_a_file_that_is_no_policy_is_refused_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    assert cli.main(["--policy", str(bad), "--no-progress"]) == cli.EXIT_REFUSED
    assert "not a readable ONNX file" in capsys.readouterr().err


def test_end_to_end_mode_runs_the_real_loop_against_the_sim_and_measures_both_processes(exported_policy, tmp_path):
    from runtime.bench.e2e import run_e2e

    # The sim at nice 0: this checks the path and what it measures, on a CI host others may load (at pac-run's nice
    # 10 a busy host starves the sim out of real time, its overrun fault persists and the pre-flight refuses it).
    e = run_e2e(exported_policy("sawyer"), "sawyer", 3.0, tmp_path, threads=1, sim_nice=0)
    assert e.exit_code == 0 and e.ticks > 0 and e.provider == "CPUExecutionProvider"
    for stage in ("receive", "tokenize", "infer", "decode", "guard", "send", "overhead"):
        assert e.stages_ms[stage]["n"] > 0, stage
    assert e.obs_age_ms["n"] > 0 and e.decode_baseline.n > 0
    for usage in (e.pac_run, e.pac_sim):  # from the kernel's rusage of each child
        assert usage.cpu_s > 0 and usage.max_rss_mb > 50
    assert [b for b, _, _ in e.budgets()][0].startswith("loop overhead p99")
    tail = e.overhead_tail  # the overhead taken apart: its parts and the glue add up to it, tick by tick
    parts = ("receive", "tokenize", "decode", "guard", "send", "other")
    assert tail["ticks"] >= 1 and set(parts) < set(tail)
    assert sum(tail[p] for p in parts) >= e.stages_ms["overhead"]["p50"]  # the slowest ticks
    assert any("slowest" in line for line in e2e_table(e))


def test_paced_calls_come_one_per_period_and_the_verdict_judges_them():
    """A model that is fast back to back but slow after an idle gap (a CPU's sleeping thread pool): the paced
    p99 is the one the loop sees, and the verdict uses it."""
    clock = FakeClock()
    last_call = [-(10**12)]

    def run() -> None:  # 4 ms right after another call, 9 ms after 10 ms or more of idling
        idle = clock.ns - last_call[0]
        clock.ns += round((4.0 if idle < 10_000_000 else 9.0) * 1e6)
        last_call[0] = clock.ns

    def sleep(seconds: float) -> None:
        clock.ns += round(seconds * 1e9)

    opened = _opened("ort", run)
    back_to_back = interleaved([opened], Plan(seconds=0.2, rounds=2, min_calls=10), clock=clock, progress=False)
    start = clock.ns
    timed = paced([opened], 50_000_000, calls=12, rounds=3, clock=clock, sleep=sleep, progress=False)
    b2b = back_to_back["ort 1t"]
    assert b2b[0] == 9.0 and set(b2b[1:]) == {4.0}  # the first call followed the idle start
    assert list(timed["ort 1t"]) == [9.0] * 12
    assert clock.ns - start == 12 * 50_000_000 + round(9.0 * 1e6)  # one call per period on absolute deadlines

    peaks = MachinePeaks(matmul_flops=1e11, memory_bytes_per_s=1e10, threads=1)
    row = measured_from(opened, back_to_back["ort 1t"], 2_000_000, peaks, paced_ms=timed["ort 1t"])
    assert row.stats.p50_ms == 4.0 and row.loop_p99_ms == 9.0 and row.stats.p99_ms < 9.0
    verdict_row = cli._row(row, SimpleNamespace(path=Path("pac_S.onnx")))
    assert verdict_row.p99_ms == 9.0
    budget = Budget(total_ms=8.0, overhead_ms=1.0, overhead_measured=True)  # 7 ms for inference
    assert not judge([verdict_row], verdict_row, budget).passed  # 4 ms back to back would have passed


def test_at_real_time_priority_back_to_back_calls_rest_before_the_kernel_throttles_them():
    """A SCHED_FIFO process busy for 0.95 s of a second is stopped for the rest of it (a 50 ms call in the
    table): with `rest_s`, no stretch of back-to-back calls runs past 0.5 s, and the rest is not timed."""
    clock = FakeClock()
    rests: list[int] = []

    def sleep(seconds: float) -> None:
        rests.append(clock.ns)
        clock.ns += round(seconds * 1e9)

    opened = _opened("ort", clock.delay(10.0))
    samples = interleaved([opened], Plan(seconds=2.0, rounds=1, min_calls=1, rest_s=0.1), clock=clock, sleep=sleep)
    assert set(np.unique(samples["ort 1t"])) == {10.0}  # the rests are not in any call's time
    assert samples["ort 1t"].size == 200  # the slice keeps its 2 s of calls: rests are added, not taken
    assert rests == [500_000_000, 1_100_000_000, 1_700_000_000, 2_300_000_000]  # each after 0.5 s of calls
