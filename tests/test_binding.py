"""The bound call a CUDA-graph session needs (runtime/inference/binding.py), on the CPU provider: the same IO
binding code path with device "cpu", so CI without a GPU checks what a GPU run relies on."""

import numpy as np
import onnxruntime as ort
import pytest

from runtime.inference.binding import BoundRun
from runtime.inference.loader import read_metadata
from runtime.inference.providers import CPU, CUDA, TRT, SessionConfig, _provider_entries, not_obtained, open_session


@pytest.fixture(scope="module")
def actor(exported_policy):
    path = exported_policy("sawyer")
    meta = read_metadata(path)
    (output,) = meta.signature()[1]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, meta, output


def _other_observation(feeds: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in feeds.items():
        if value.dtype == np.uint8:
            out[name] = rng.integers(0, 256, value.shape, dtype=np.uint8)
        elif value.dtype == np.int64:
            out[name] = rng.integers(1, 50, value.shape, dtype=np.int64)
        else:
            out[name] = rng.normal(size=value.shape).astype(value.dtype)
    return out


def test_a_bound_call_computes_what_session_run_computes_for_each_new_observation(actor):
    session, meta, output = actor
    golden = meta.golden.inputs
    bound = BoundRun.bind(session, golden, output, meta.golden.outputs[output].shape, "cpu")
    np.testing.assert_allclose(bound(golden), meta.golden.outputs[output], atol=meta.golden.atol)
    before = {k: v.copy() for k, v in golden.items()}
    first = bound(golden)
    kept = first.copy()
    for seed in range(3):  # the buffers are bound once and refilled in place: each call sees its own feeds
        feeds = _other_observation(golden, seed)
        np.testing.assert_allclose(bound(feeds), session.run([output], feeds)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first, kept)  # a result handed out is the caller's: later calls leave it alone
    for name, value in golden.items():  # the example it was bound with is the caller's, never refilled
        np.testing.assert_array_equal(value, before[name])


def test_a_feed_that_does_not_fit_the_bound_buffers_is_refused_not_rebound(actor):
    session, meta, output = actor
    golden = meta.golden.inputs
    bound = BoundRun.bind(session, golden, output, meta.golden.outputs[output].shape, "cpu")
    wrong_shape = {**golden, "proprio": np.zeros((1, golden["proprio"].shape[1] + 1), np.float32)}
    with pytest.raises(ValueError, match="proprio"):
        bound(wrong_shape)
    wrong_dtype = {**golden, "proprio": golden["proprio"].astype(np.float64)}
    with pytest.raises(ValueError, match="float64"):
        bound(wrong_dtype)
    with pytest.raises(ValueError, match="bound inputs"):
        bound({k: v for k, v in golden.items() if k != "proprio"})


def test_cuda_graphs_are_asked_of_the_cuda_provider_only_and_can_be_turned_off():
    entries = _provider_entries([CUDA, "CPUExecutionProvider"], SessionConfig(device="cuda"))
    assert entries[0] == (CUDA, {"enable_cuda_graph": "1"}) and entries[1] == "CPUExecutionProvider"
    assert _provider_entries([CUDA], SessionConfig(device="cuda", cuda_graph=False)) == [CUDA]


def test_a_cpu_session_is_called_through_plain_run_with_its_batch_axis(actor, exported_policy):
    _, meta, output = actor
    opened = open_session(exported_policy("sawyer"), SessionConfig(device="cpu", threads=1))
    assert not opened.cuda_graph
    run = opened.runner(output, meta.golden.inputs, meta.golden.outputs[output].shape)
    got = run(meta.golden.inputs)
    assert got.shape == meta.golden.outputs[output].shape
    np.testing.assert_allclose(got, meta.golden.outputs[output], atol=meta.golden.atol)


@pytest.fixture
def capture_fails(monkeypatch):
    """Only the claim "this session replays a CUDA graph" is faked: on a CPU session, binding to "cuda" fails at the
    first call as a refused capture would. Everything else is the real CPU provider."""
    import dataclasses

    from runtime.inference import providers

    real_open = providers.open_session

    def claims_a_graph(path, config):
        return dataclasses.replace(real_open(path, config), cuda_graph=config.cuda_graph)

    monkeypatch.setattr(providers, "open_session", claims_a_graph)


def test_a_graph_capture_that_fails_falls_back_to_plain_calls_on_the_same_provider_and_says_so(
    exported_policy, capture_fails, caplog
):
    """pac-run's loader: reopened without the graph, its golden check passed, and why logged."""
    from policies.spec import action_spec, observation_spec
    from robots.spec import load_spec
    from runtime.inference import loader

    arm = load_spec("sawyer")
    with caplog.at_level("WARNING", logger="runtime.inference.providers"):
        policy = loader.load_policy(
            exported_policy("sawyer"), observation_spec(arm), action_spec(arm), SessionConfig(device="cpu", threads=1)
        )
    assert policy.golden_error <= policy.metadata.golden.atol
    assert any("no CUDA graph" in r.getMessage() for r in caplog.records)


def test_pac_bench_shows_a_refused_capture_as_plain_calls_not_as_a_failed_backend(exported_policy, capture_fails):
    """pac-bench opens through the same open_runner: the setting runs, timed, with the reason in its note."""
    from runtime.bench.backends import PolicyFile, Setting, open_setting

    policy = PolicyFile.open(exported_policy("sawyer"))
    opened = open_setting(Setting("ort", 1), policy)
    try:
        assert "no CUDA graph" in opened.note and opened.provider == CPU
        assert opened.golden_error <= policy.metadata.golden.atol and opened.first_call_ms > 0
        (output,) = policy.metadata.signature()[1]
        assert opened.run().shape == policy.metadata.golden.outputs[output].shape
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("wanted", "got", "says"),
    [
        (CUDA, CPU, ["--device cpu", "--allow-cpu-fallback"]),
        (TRT, CPU, ["libnvinfer", "--device cpu"]),
        (TRT, CUDA, ["libnvinfer", "use --device cuda"]),  # the H200 of issue 13: CUDA up, TensorRT absent
    ],
)
def test_a_refused_provider_says_what_came_up_and_what_to_ask_for_instead(wanted, got, says):
    message = not_obtained(wanted, got, [TRT, CUDA, CPU])
    assert f"asked for {wanted}" in message and f"runs this model on {got}" in message
    assert all(s in message for s in says), message
    assert ("--device cpu" in message) == (got == CPU)
