"""The live render worker, parameter crossfades, mailboxes and the session recorder, without Qt.

Audio comes from `ArraySource`: a test feeder that hands out a known signal in chunks the size a sound
card would deliver between two frames, stamped with the time they were handed out.
"""

import threading
import time

import av
import numpy as np
import pytest
import torch

from core.param_fade import ParamFade, lerp_params
from core.params import Params
from core.video_writer import probe_media
from tests.live_helpers import wait_for
from tests.pipeline_helpers import tiny_model
from visualizer.mailbox import LatestSlot
from visualizer.recorder import SessionRecorder
from visualizer.render_worker import RenderWorker, load_model_async

SR = 44100


class ArraySource:
    """Gives out `signal` (mono float32) `chunk` samples per read, then silence."""

    def __init__(self, signal: np.ndarray, chunk: int = SR // 24):
        self.sample_rate = SR
        self.signal = signal.astype(np.float32)
        self.chunk = chunk
        self.pos = 0
        self.lock = threading.Lock()

    def read_new(self):
        with self.lock:
            block = self.signal[self.pos : self.pos + self.chunk]
            if block.size < self.chunk:
                block = np.concatenate([block, np.zeros(self.chunk - block.size, np.float32)])
            self.pos += self.chunk
        return block.copy(), time.monotonic()


def noise(seconds: float, amp: float = 0.5, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_latest_slot_keeps_only_the_newest():
    slot = LatestSlot()
    assert slot.take_new(0) == (None, 0)
    slot.put("a")
    slot.put("b")
    value, seq = slot.take_new(0)
    assert value == "b" and seq == 2 and slot.overwritten == 1
    assert slot.take_new(seq) == (None, seq)


def test_lerp_params_fades_floats_and_switches_seed():
    a = Params(alpha=0.2, noise=0.0, seed=1, alpha_fine=None)
    b = Params(alpha=0.6, noise=1.0, seed=5, alpha_fine=0.8)
    mid = lerp_params(a, b, 0.5)
    assert mid.alpha == pytest.approx(0.4) and mid.noise == pytest.approx(0.5)
    assert mid.alpha_fine == pytest.approx(0.5)  # from a's alpha (0.2, what null stands for) to 0.8
    assert mid.seed == 5
    assert lerp_params(a, b, 1.0) == b and lerp_params(a, b, 0.0).alpha == 0.2
    fade = ParamFade(a, b, t0=10.0, seconds=2.0)
    assert fade.at(11.0).alpha == pytest.approx(0.4) and not fade.done(11.0) and fade.done(12.0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_worker_frames_follow_the_sound(model):
    silent = RenderWorker(model, ArraySource(np.zeros(SR * 2)))
    loud = RenderWorker(model, ArraySource(noise(2.0)))
    for _ in range(12):
        f_silent = silent.tick()
        f_loud = loud.tick()
    assert f_silent.image.shape == (32, 32, 3) and f_silent.image.dtype == np.uint8
    # Same seed, same start: only the sound differs, and the latent path must differ with it.
    assert not torch.equal(silent.pipeline.latent, loud.pipeline.latent)
    assert f_loud.mel.max() > 0.3 and f_silent.mel.max() == 0.0
    status, _ = loud.status.peek()
    assert status.frames == 12 and status.level_rms == pytest.approx(0.5, rel=0.1)


def test_crossfade_gives_intermediate_values(model):
    worker = RenderWorker(model, ArraySource(noise(3.0)), Params(alpha=0.1, noise=0.0))
    worker.tick()
    worker.set_params(Params(alpha=0.9, noise=1.0), fade_seconds=2.0)
    t0 = time.monotonic()
    worker.tick(now=t0 + 1.0)  # a frame halfway through the fade
    mid = worker.params
    assert 0.3 < mid.alpha < 0.7 and 0.25 < mid.noise < 0.75
    worker.tick(now=t0 + 2.5)
    assert worker.params == Params(alpha=0.9, noise=1.0)


def test_seed_change_crossfades_the_latent(model):
    source = ArraySource(noise(4.0))
    worker = RenderWorker(model, source, Params(seed=1, alpha=0.2))
    worker.tick()
    start = time.monotonic()
    worker.set_params(Params(seed=2, alpha=0.2), fade_seconds=1.0)
    worker.tick(now=start + 0.5)
    assert worker.crossfading_seeds  # two sequences run side by side during the fade
    # A cut to the new seed restarts at the new seed's latent; the fade starts near the old one.
    cut = RenderWorker(model, ArraySource(noise(4.0)), Params(seed=1, alpha=0.2))
    cut.tick()
    cut.set_params(Params(seed=2, alpha=0.2), fade_seconds=0.0)
    cut.tick()
    worker.tick(now=start + 2.0)
    assert not worker.crossfading_seeds and worker.params.seed == 2


def test_running_worker_takes_a_change_within_two_frames(model):
    worker = RenderWorker(model, ArraySource(noise(30.0)), Params(fps=24))
    worker.start()
    try:
        assert wait_for(lambda: worker.frames.peek()[0] is not None, 10)
        for value in (0.9, 0.25, 0.6):
            before, _ = worker.frames.peek()
            worker.set_params(Params(fps=24, alpha=value))
            assert wait_for(lambda: worker.frames.peek()[0].params.alpha == value, 5)
            after, _ = worker.frames.peek()
            # The frame with the new value is at most the second one made after the change arrived.
            first_with = after.index
            assert first_with - before.index <= 2
    finally:
        worker.stop()
    assert not worker.is_alive()


def test_late_frames_are_dropped_not_queued(model):
    """At 120 fps no CPU keeps up: deadlines are skipped (counted) and each frame hears 'now'."""
    source = ArraySource(noise(60.0), chunk=SR // 120)
    worker = RenderWorker(model, source, Params(fps=120), keep_latencies=10000)

    slow_tick = worker.tick

    def tick(now=None):  # make every frame take 25 ms, three periods of 120 fps
        time.sleep(0.025)
        return slow_tick(now)

    worker.tick = tick
    worker.start()
    time.sleep(1.5)
    worker.stop()
    status, _ = worker.status.peek()
    assert status.dropped > status.frames  # most deadlines were skipped ...
    assert status.frames < 80  # ... and not made up for later: no burst of catch-up frames
    # Every deadline of the 1.5 s is either a frame or a counted drop (nothing silently queued).
    assert 1.5 * 120 * 0.8 < status.frames + status.dropped < 1.5 * 120 * 1.2


def test_recorder_keeps_sync_when_the_render_rate_varies(model, tmp_path):
    """Frames fed at an uneven rate; the file still has one frame per 1/fps of recorded audio and
    its sound is exactly the audio fed, from the first sample."""
    out = tmp_path / "session.mp4"
    rec = SessionRecorder(out, fps=24, width=32, height=32, sample_rate=SR)
    worker = RenderWorker(model, ArraySource(np.zeros(1)), Params())
    frame = worker.tick()
    rng = np.random.default_rng(3)
    t = np.arange(int(2.0 * SR)) / SR
    signal = (0.4 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    pos = 0
    while pos < signal.size:  # chunks of 1-5 frames' worth: a render rate that dips and recovers
        n = int(rng.integers(1, 6)) * SR // 24
        rec.feed(frame, signal[pos : pos + n])
        pos += n
    rec.stop()
    assert rec.state == "finished", rec.error
    info = probe_media(out)
    assert info.frame_count == 48
    assert info.audio_duration == pytest.approx(2.0, abs=0.03)
    with av.open(str(out)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    n = min(audio.size, signal.size) - 2048
    corr = np.corrcoef(audio[1024:n], signal[1024:n])[0, 1]
    assert corr > 0.99


def test_recorder_stops_at_max_seconds(model, tmp_path):
    out = tmp_path / "five.mp4"
    rec = SessionRecorder(out, fps=24, width=32, height=32, sample_rate=SR, max_seconds=1.0)
    frame = RenderWorker(model, ArraySource(np.zeros(1))).tick()
    for _ in range(40):  # 40 chunks of 1/20 s = 2 s fed; only 1 s recorded
        rec.feed(frame, noise(0.05, seed=_))
    assert rec.wait(20)
    assert rec.state == "finished" and rec.samples_recorded == SR
    info = probe_media(out)
    assert info.frame_count == 24 and info.audio_duration == pytest.approx(1.0, abs=0.03)


def test_model_swap_happens_between_frames(model):
    worker = RenderWorker(model, ArraySource(noise(5.0)))
    assert worker.tick().image.shape == (32, 32, 3)
    loaded = threading.Event()
    result = {}

    def done(m, err):
        result.update(model=m, error=err)
        loaded.set()

    load_model_async(None, "cpu", done)  # the embedded default, 128 px, on its own thread
    while not loaded.is_set():  # the old model keeps playing meanwhile
        assert worker.tick().image.shape == (32, 32, 3)
    assert result["error"] is None
    worker.swap_model(result["model"])
    assert worker.tick().image.shape == (128, 128, 3)

    failed = threading.Event()
    load_model_async("/no/such/model.safetensors", "cpu", lambda m, err: (result.update(error=err), failed.set()))
    assert failed.wait(30) and "model.safetensors" in result["error"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")
def test_worker_on_cuda_matches_cpu_frames(tmp_path):
    """The live path on a GPU: same frames as on the CPU (to 8-bit rounding), and a recording."""
    cpu = RenderWorker(tiny_model(), ArraySource(noise(2.0)))
    gpu = RenderWorker(tiny_model().to(torch.device("cuda")), ArraySource(noise(2.0)))
    for _ in range(6):
        a, b = cpu.tick(), gpu.tick()
    assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 2
    rec = SessionRecorder(tmp_path / "gpu.mp4", fps=24, width=32, height=32, sample_rate=SR, max_seconds=0.5)
    gpu.add_sink(rec)
    for _ in range(20):
        gpu.tick()
    assert rec.wait(20) and rec.state == "finished"


def test_worker_embeds_key_frames_on_their_own_thread_and_the_picture_follows_the_sound():
    from tests.pipeline_helpers import tiny_embedding_model

    model = tiny_embedding_model()
    quiet = RenderWorker(model, ArraySource(np.zeros(SR * 2, np.float32)), Params(alpha=1.0, noise=0.0))
    loud = RenderWorker(model, ArraySource(noise(2.0)), Params(alpha=1.0, noise=0.0))
    try:
        for _ in range(20):
            quiet_frame = quiet.tick()
            loud_frame = loud.tick()
        assert any(t.name == "sound-embedding" and t.is_alive() for t in threading.enumerate())
        difference = np.abs(loud_frame.image.astype(np.int16) - quiet_frame.image.astype(np.int16)).mean()
        assert difference > 1.0  # grey levels: the noise's embedding moved the picture
    finally:
        for worker in (quiet, loud):
            worker.show.close()
