"""The ops backend chosen by measurement: the rule, the budget, the cache, and the hooks that run it."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from core.cli import main
from core.stylegan3.ops import backend, backend_choice, cpp_kernel
from tests.parity_fixtures import fixture_generator


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache directory and the backend module's state restored afterwards."""
    monkeypatch.setenv("SOUNDVJ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SOUNDVJ_OPS", raising=False)
    saved = {k: getattr(backend, k) for k in ("_requested", "_measured", "_provisional", "_env_note", "_forced_by_env")}
    backend.set_backend("auto")
    backend._measured = backend._provisional = None
    yield
    for k, v in saved.items():
        setattr(backend, k, v)


@pytest.fixture
def tiny_G(sg3_fixtures):
    return fixture_generator(sg3_fixtures["t64"]).requires_grad_(False)


class FakeClock:
    """time.perf_counter for backend_choice: fake ops advance it by their cost, nothing else does."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_ops(monkeypatch, cost_per_call: dict[str, float]) -> FakeClock:
    """Replace the implementations by ones that 'take' cost_per_call[name] seconds on the fake clock."""
    clock = FakeClock()
    calls: dict[str, int] = {name: 0 for name in cost_per_call}

    def implementation(name):
        def run(x, **kwargs):
            calls[name] += 1
            clock.now += cost_per_call[name]
        return run

    monkeypatch.setattr(backend_choice.time, "perf_counter", clock)
    monkeypatch.setattr(backend_choice, "_implementation", implementation)
    clock.calls = calls
    return clock


def test_measure_picks_the_fastest_and_stops_the_slow_ones_early(monkeypatch, tiny_G):
    clock = fake_ops(monkeypatch, {"fast": 0.004, "fast-torch": 0.001, "reference": 0.050})
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch", "reference"])
    n = len(tiny_G.synthesis.layers())
    assert m.backend == "fast-torch"
    assert m.ms["fast-torch"] == pytest.approx(n * 1.0) and "fast-torch" not in m.stopped
    # Stopped once over 2x the leader, 10 ms behind it and slower on most of at least two calls:
    # reference after two calls, fast after four (3 ms behind per call); their times are lower bounds.
    assert set(m.stopped) == {"fast", "reference"}
    assert m.ms["fast"] == pytest.approx(16.0) and m.ms["reference"] == pytest.approx(100.0)
    assert clock.calls == {"fast": 2 * 4, "fast-torch": 2 * n, "reference": 2 * 2}  # two runs per call
    assert m.seconds <= backend_choice.BUDGET_SECONDS


def test_close_candidates_get_more_rounds_within_the_budget(monkeypatch, tiny_G):
    fake_ops(monkeypatch, {"fast": 0.0010, "fast-torch": 0.0011})
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch"])
    assert m.backend == "fast" and m.stopped == ()
    assert m.rounds == backend_choice.MAX_ROUNDS
    assert m.seconds <= backend_choice.BUDGET_SECONDS


def test_a_model_too_slow_for_the_budget_is_still_decided_in_time(monkeypatch, tiny_G):
    """Each call costs most of the budget: every candidate times its first call, and no more calls
    start that would end past the budget."""
    budget = backend_choice.BUDGET_SECONDS
    clock = fake_ops(monkeypatch, {"fast": budget * 0.6, "fast-torch": budget * 0.5, "reference": budget * 2})
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch", "reference"])
    assert m.backend == "fast-torch"  # cheapest on the calls every candidate timed
    assert set(m.stopped) == {"fast", "fast-torch", "reference"}
    assert clock.calls == {"fast": 1, "fast-torch": 1, "reference": 1}  # long calls are not repeated


def test_one_stalled_call_does_not_stop_the_fastest(monkeypatch, tiny_G):
    """A busy machine stalls one run for 0.5 s: the stalled candidate still wins (each call runs
    twice in the first round and counts its faster run)."""
    clock = FakeClock()
    stalls = iter([0.5])  # the first run of fast's first call
    monkeypatch.setattr(backend_choice.time, "perf_counter", clock)

    def implementation(name):
        def run(x, **kwargs):
            clock.now += next(stalls, 0.001) if name == "fast" else 0.003
        return run

    monkeypatch.setattr(backend_choice, "_implementation", implementation)
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch"])
    assert m.backend == "fast" and "fast" not in m.stopped
    assert m.relative["fast-torch"] == pytest.approx(3.0)


def test_a_hopeless_candidate_is_let_go_when_time_runs_short(monkeypatch, tiny_G):
    """The reference eats half the budget on the first call: it is dropped, the others finish."""
    fake_ops(monkeypatch, {"fast": 0.005, "fast-torch": 0.008, "reference": 0.5})
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch", "reference"])
    n = len(tiny_G.synthesis.layers())
    assert m.backend == "fast" and "reference" in m.stopped and m.calls == (n, n)
    assert m.seconds <= backend_choice.BUDGET_SECONDS


def test_a_busy_machine_does_not_run_past_the_budget(monkeypatch, tiny_G):
    """Calls of 0.3-0.9 s (a 256 px model on a loaded machine): no call starts that would end past
    the budget, and the fastest candidate on the calls all of them timed wins."""
    clock = fake_ops(monkeypatch, {"fast": 0.3, "fast-torch": 0.4, "reference": 0.9})
    m = backend_choice.measure(tiny_G, ["fast", "fast-torch", "reference"])
    assert m.backend == "fast" and set(m.stopped) == {"fast", "fast-torch", "reference"}
    assert m.seconds <= backend_choice.BUDGET_SECONDS
    assert clock.calls == {"fast": 1, "fast-torch": 1, "reference": 1}


def test_real_measurement_on_a_small_generator(tiny_G):
    """No fakes: every candidate runs on the fixture generator's calls and gets a time."""
    names = backend_choice.candidates(torch.device("cpu"))
    assert names[-2:] == ["fast-torch", "reference"]
    assert ("fast" in names) == (cpp_kernel.load() is not None)
    m = backend_choice.measure(tiny_G, names)
    assert m.backend in names and set(m.ms) == set(names)
    assert all(v > 0 for v in m.ms.values())
    assert m.relative[m.backend] == 1.0 and all(v > 0 for v in m.relative.values())
    finished = [n for n in names if n not in m.stopped]  # empty if the budget ran out on a busy machine
    assert not finished or m.ms[m.backend] == min(m.ms[n] for n in finished)
    print(m.describe())


def test_layer_calls_have_the_shapes_and_arguments_synthesis_uses(tiny_G, monkeypatch):
    seen = []
    real = backend_choice.filtered_lrelu_fast

    from core.stylegan3 import ops

    monkeypatch.setattr(ops, "filtered_lrelu", lambda x, **kw: (seen.append((x.shape, kw)), real(x, **kw))[1])
    with torch.no_grad():
        tiny_G.synthesis(tiny_G.mapping(torch.randn(1, tiny_G.z_dim), None), noise_mode="const", force_fp32=True)
    calls = backend_choice.layer_calls(tiny_G)
    assert len(calls) == len(seen)
    for (shape, kw), (want_shape, want) in zip(calls, seen):
        x = backend_choice.make_input(shape, torch.device("cpu"))
        assert x.shape == want_shape and x.is_contiguous(memory_format=torch.channels_last)
        assert -1 <= x.min() < x.max() <= 1
        assert kw.keys() == want.keys()
        for k in kw:
            same = torch.equal(kw[k], want[k]) if isinstance(kw[k], torch.Tensor) else kw[k] == want[k]
            assert same, k


def test_choice_is_cached_and_reused(monkeypatch, tiny_G, tmp_path):
    fake_ops(monkeypatch, {"fast": 0.002, "fast-torch": 0.001, "reference": 0.01})
    monkeypatch.setattr(backend_choice, "candidates", lambda device: ["fast", "fast-torch", "reference"])
    first = backend_choice.choose(tiny_G)
    assert not first.from_cache and first.backend == "fast-torch"
    path = tmp_path / "cache" / backend_choice.CACHE_FILE
    assert path == backend_choice.cache_path() and path.exists()
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again despite a cached choice")

    monkeypatch.setattr(backend_choice, "measure", no_measuring)
    again = backend_choice.choose(tiny_G)
    assert again.from_cache and again.backend == "fast-torch" and again.ms == first.ms
    assert "cached from" in again.describe() and "chose fast-torch" in again.describe()


def test_cache_key_covers_model_threads_cpu_source_and_candidates(monkeypatch, tiny_G, sg3_fixtures):
    key = backend_choice.choice_key(tiny_G)
    assert backend_choice.choice_key(tiny_G) == key
    other = fixture_generator(sg3_fixtures["r64"])
    assert backend_choice.choice_key(other) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)
        assert backend_choice.choice_key(tiny_G) != key
    finally:
        torch.set_num_threads(threads)
    for target, name, fake in ((cpp_kernel, "cpu_flags", lambda: "fpu sse2"),
                               (backend_choice, "_ops_source_digest", lambda: "edited"),
                               (backend_choice, "candidates", lambda device: ["fast-torch"])):  # no compiler yet
        with monkeypatch.context() as patch:
            patch.setattr(target, name, fake)
            assert backend_choice.choice_key(tiny_G) != key, name
    assert backend_choice.choice_key(tiny_G) == key


def test_the_description_gives_relative_times_and_a_budget_cut(monkeypatch, tiny_G):
    fake_ops(monkeypatch, {"fast": 0.3, "fast-torch": 0.4, "reference": 0.9})
    text = backend_choice.measure(tiny_G, ["fast", "fast-torch", "reference"]).describe()
    n = len(tiny_G.synthesis.layers())
    assert "chose fast for 64 px" in text and f"300.0 ms per frame on the first 1 of {n} calls (time budget)" in text
    assert "fast-torch 1.33x, reference 3.00x" in text


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"format": 2, "choices": []}',
                                     b'{"format": 2, "choices": {"KEY": {"backend": "fast"}}}',
                                     b'{"format": 2, "choices": {"KEY": {"backend": 3, "ms": 5}}}',
                                     b"\xff\xfe\x00garbage"])
def test_a_corrupt_cache_is_ignored_and_rewritten(monkeypatch, tiny_G, content):
    key = backend_choice.choice_key(tiny_G)
    path = backend_choice.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b"KEY", key.encode()))
    fake_ops(monkeypatch, {"fast": 0.002, "fast-torch": 0.001, "reference": 0.01})
    monkeypatch.setattr(backend_choice, "candidates", lambda device: ["fast", "fast-torch", "reference"])
    m = backend_choice.choose(tiny_G)
    assert not m.from_cache and m.backend == "fast-torch"
    data = json.loads(path.read_text())
    assert data["choices"][key]["backend"] == "fast-torch"
    assert backend_choice.choose(tiny_G).from_cache


def test_an_unwritable_cache_is_not_an_error(monkeypatch, tiny_G, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SOUNDVJ_CACHE_DIR", str(blocker / "cache"))  # a directory under a file: cannot exist
    fake_ops(monkeypatch, {"fast": 0.002, "fast-torch": 0.001, "reference": 0.01})
    monkeypatch.setattr(backend_choice, "candidates", lambda device: ["fast", "fast-torch", "reference"])
    assert backend_choice.choose(tiny_G).backend == "fast-torch"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    assert backend_choice.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SOUNDVJ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backend_choice.cache_dir() == tmp_path / "xdg" / "soundvj"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert backend_choice.cache_dir() == tmp_path / "home" / ".cache" / "soundvj"


def test_choose_for_model_switches_the_active_backend(monkeypatch, tiny_G):
    fake_ops(monkeypatch, {"fast": 0.002, "fast-torch": 0.001, "reference": 0.01})
    monkeypatch.setattr(backend_choice, "candidates", lambda device: ["fast", "fast-torch", "reference"])
    assert backend.active_backend() == backend.UNMEASURED
    m = backend.choose_for_model(tiny_G, wait_for_kernel=True)
    assert m is not None and backend.active_backend() == "fast-torch" and backend.measurement() is m
    described = backend.describe_backend(tiny_G)
    assert "(auto)" in described and "chose fast-torch" in described
    assert "filtered_lrelu 15.0 ms per frame" in described and "fast 2.00x" in described


def test_a_forced_backend_is_never_measured(monkeypatch, tiny_G):
    monkeypatch.setattr(backend_choice, "measure", lambda *a, **k: pytest.fail("measured a forced backend"))
    backend.set_backend("reference")
    assert backend.choose_for_model(tiny_G) is None and backend.active_backend() == "reference"
    assert "forced at run time" in backend.describe_backend(tiny_G)
    backend._requested, backend._forced_by_env = "fast-torch", True  # as SOUNDVJ_OPS at import (restored)
    assert backend.choose_for_model(tiny_G) is None and backend.active_backend() == "fast-torch"
    assert "forced by SOUNDVJ_OPS" in backend.describe_backend(tiny_G)


def test_while_the_kernel_builds_fast_runs_and_prepare_measures_later(monkeypatch, tiny_G):
    """The live app does not wait for a first C++ build: `fast` runs (PyTorch until the kernel lands),
    nothing is cached; an offline render's prepare(wait=True) measures once the build is done."""
    gate = threading.Event()
    building = threading.Thread(target=gate.wait, daemon=True)
    building.start()
    monkeypatch.setattr(cpp_kernel, "_op", None)
    monkeypatch.setattr(cpp_kernel, "_thread", building)
    assert backend.choose_for_model(tiny_G) is None
    assert backend.active_backend() == "fast" and backend.measurement() is None
    assert not backend_choice.cache_path().exists()
    gate.set()
    building.join()
    monkeypatch.setattr(cpp_kernel, "_status", "C++ kernel not built: test")
    backend.prepare("cpu", wait=True)
    m = backend.measurement()
    assert m is not None and "fast" not in m.ms  # the kernel did not come: not a candidate
    assert backend_choice.cache_path().exists()


def test_load_model_chooses_the_backend(monkeypatch):
    from core.model import load_model

    seen = []
    monkeypatch.setattr(backend, "choose_for_model", lambda G, **kw: seen.append(G))
    model = load_model(None, device="cpu")
    assert seen == [model.generator]


def test_info_backend_prints_the_times_and_the_choice(capsys):
    assert main(["info", "--backend"]) == 0
    out = capsys.readouterr().out
    assert "(auto)" in out and "filtered_lrelu" in out and "ms per frame" in out and "chose " in out
    assert "reference" in out and "fast-torch" in out
    assert backend_choice.cache_path().exists()
    assert main(["info", "--backend"]) == 0
    assert "cached from" in capsys.readouterr().out
