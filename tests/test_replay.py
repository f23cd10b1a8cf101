"""`soundvj replay`: a set log rendered again offline puts every change at its audio time, at the
set's frame rate or another; a live run replayed gives the live run's frames; two replays are
identical; the set's model is found by its hash or refused in one line.

The live runs are the real render worker and set logger, fed a real sound: either frame by frame
with the worker's fade clock on the sound's own time (then the replay must repeat the live run bit
for bit), or by a sound card clocked by wall time on its own thread (then the fades run on different
clocks, and frames that came late heard two frames' sound at once)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.audio.windows import frame_end_sample
from core.control import Modulation, ModulationMatrix
from core.errors import SoundvjError
from core.model import load_model, save_full_model
from core.params import Params
from core.set_log import ModelIdentity, open_set_log
from core.replay import choose_models, replay
from core.show_control import CommandTaken, ParamCommand
from core.video_writer import probe_media, to_uint8_rgb
from tests.pipeline_helpers import tiny_model
from tests.set_log_helpers import SR, frame_time, sixteen_bit_noise, write_set
from visualizer.render_worker import RenderWorker
from visualizer.set_logger import SetLogger

FPS = 24.0


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _replayed(set_path: Path, model, out: Path, fps: float | None = None):
    """Replay `set_path` with `model` to `out`; returns (result, [(t, ShowFrame)])."""
    seen = []
    result = replay(open_set_log(set_path), out, lambda _identity: model, fps=fps, progress=False,
                    observe=lambda t, made: seen.append((t, made)))
    return result, seen


def _first_frame_with(seen, predicate) -> int:
    return next(i for i, (_t, made) in enumerate(seen) if predicate(made.base))


def test_a_preset_switch_at_two_seconds_shows_at_frame_round_2_fps_at_either_rate(model, tmp_path):
    bright, dark = Params(psi=1.2, noise=0.9), Params(psi=0.2, noise=0.9)
    events = [(2.0, CommandTaken(ParamCommand(bright, 0.0, "bright"))),
              (2.4, CommandTaken(ParamCommand(dark, 0.5, "dark")))]  # a fade from 2.4 to 2.9 s
    path = write_set(tmp_path / "switch.soundvjset", sixteen_bit_noise(3.0), events)
    for fps in (FPS, 2 * FPS):
        result, seen = _replayed(path, model, tmp_path / f"switch{fps:g}.mp4", fps=fps)
        assert result.frames == len(seen) == round(3.0 * fps)
        assert probe_media(result.path).frame_count == result.frames
        switch = _first_frame_with(seen, lambda p: p.psi == 1.2)
        assert abs(switch - round(2.0 * fps)) <= 1
        assert all(made.base.psi == 0.7 for _t, made in seen[:switch])  # the default's until then
        # Through the fade psi follows the sound's time, whatever the frame rate (1.2 to 0.2 in 0.5 s).
        t, halfway = min(seen, key=lambda item: abs(item[0] - 2.65))
        assert halfway.base.psi == pytest.approx(1.2 - (t - 2.4) / 0.5 * 1.0, abs=1e-9)
        assert seen[-1][1].base.psi == pytest.approx(0.2) and all(m.params.fps == fps for _t, m in seen)


class FrameByFrameSound:
    """A sound card that hands the render worker exactly the next video frame's samples on each read
    (frame 0 hears none), and whose clock is that sound's time: the worker's frames then sit on the
    replay's frame grid, and its crossfades run on audio time as a replay's do."""

    def __init__(self, signal: np.ndarray, fps: float = FPS) -> None:
        self.sample_rate, self.signal, self.fps = SR, signal, fps
        self.frame = -1
        self.end = 0

    def read_new(self):
        self.frame += 1
        end = frame_end_sample(self.frame, SR, self.fps)
        block, self.end = self.signal[self.end : end], end
        return block.copy(), time.monotonic()

    def clock(self) -> float:
        return self.end / SR


def _play_a_set(worker: RenderWorker, seconds: float) -> list:
    """Tick `worker` frame by frame through `seconds` of sound while a performer works the controls;
    returns the published frames."""
    noon = Params(alpha=0.3, noise=0.4)
    frames = []
    for k in range(round(seconds * FPS)):
        if k == 6:
            worker.set_modulations(ModulationMatrix((Modulation("noise", "low", 0.5), Modulation("psi", "onset", 0.3),
                                                     Modulation("rotate_deg", "sine", 30.0, beats=2.0))))
        if k == 10:
            worker.set_params(noon.replace(psi=1.1), 1.0, "bright")  # a preset with a one-second fade
        if k == 18:
            worker.set_params(noon.replace(psi=1.1, pan_x=0.2), only=["pan_x"])  # a knob during the fade
        if k in (22, 32, 42):
            worker.tap()  # three taps: a tempo for the sine
        if k == 46:
            worker.set_params(noon.replace(psi=0.5, seed=9), 0.5, "other seed")  # the latents crossfade
        if k == 62:
            worker.frozen.set()
        if k == 68:
            worker.frozen.clear()
        frames.append(worker.tick())
    return frames


def test_replaying_a_live_run_gives_its_frames_bit_for_bit_and_twice_the_rate_keeps_the_times(model, tmp_path):
    sound = sixteen_bit_noise(3.0, seed=3)
    source = FrameByFrameSound(sound)
    worker = RenderWorker(model, source, Params(fps=FPS), clock=source.clock)
    log = SetLogger(tmp_path / "live.soundvjset", SR)
    worker.add_sink(log)
    live = _play_a_set(worker, 3.0)
    log.stop()
    assert log.state == "finished", log.error
    set_log = open_set_log(log.path)
    assert set_log.meta.sound_samples == source.end and len(set_log.events) >= 8

    result, seen = _replayed(log.path, model, tmp_path / "replay.mp4")
    assert result.frames == round(set_log.meta.seconds * FPS) == len(live) - 1  # the last frame ends the sound
    for k, (t, made) in enumerate(seen):
        shown = live[k]
        assert t == frame_time(k, FPS)
        assert made.params == shown.params, (k, made.params.diff(shown.params))
        assert made.base == shown.base_params
        if made.image is not None:
            assert np.array_equal(to_uint8_rgb(made.image).numpy(), shown.image), k
    assert any(made.image is None for _t, made in seen[62:68])  # frozen frames repeat the one before

    # Two replays make the same frames, bit for bit. (Not the same mp4 bytes: libx264's threads
    # make its output vary a little from run to run, whatever frames it is given.)
    _again, again = _replayed(log.path, model, tmp_path / "again.mp4")
    assert [a.image is None for _t, a in seen] == [b.image is None for _t, b in again]
    assert all(torch.equal(a.image, b.image) for (_t, a), (_u, b) in zip(seen, again) if a.image is not None)

    # Twice the rate: every change at the same moment of the sound; frame 2k is frame k's moment.
    twice, seen2 = _replayed(log.path, model, tmp_path / "twice.mp4", fps=2 * FPS)
    assert twice.frames == round(set_log.meta.seconds * 2 * FPS)
    for k, (_t, made) in enumerate(seen):
        assert seen2[2 * k][1].base == made.base.replace(fps=2 * FPS), k


def test_a_set_log_started_mid_show_continues_the_running_fade(model, tmp_path):
    source = FrameByFrameSound(sixteen_bit_noise(4.0, seed=5))
    worker = RenderWorker(model, source, Params(fps=FPS), clock=source.clock)
    worker.set_modulations(ModulationMatrix((Modulation("pan_x", "sine", 0.3),)))
    for k in range(30):
        if k == 20:
            worker.set_params(Params(fps=FPS, psi=1.3, alpha=0.8, window_seconds=0.5), 2.0, "slow")  # to frame 68
        worker.tick()
    log = SetLogger(tmp_path / "late.soundvjset", SR)
    worker.add_sink(log)  # the Record button pressed mid-fade
    live = [worker.tick() for _ in range(40)]
    log.stop()
    assert log.state == "finished", log.error
    start = open_set_log(log.path).meta.start
    assert start.look == "slow" and start.fade_from is not None and start.fade_elapsed == pytest.approx(10 / FPS)
    _result, seen = _replayed(log.path, model, tmp_path / "late.mp4")
    # The set's sound starts with the first logged frame's sound, so that frame is the replay's
    # frame 1 (frame 0 hears nothing yet), and the frame grids agree to a sample from there on.
    for k, shown in enumerate(live[:-1], start=1):
        made = seen[k][1]
        assert made.base.psi == pytest.approx(shown.base_params.psi, abs=1e-4), k
        assert made.base.alpha == pytest.approx(shown.base_params.alpha, abs=1e-4), k
        assert made.params.pan_x == pytest.approx(shown.params.pan_x, abs=1e-3), k  # the matrix carried over
        assert made.mel.shape == shown.mel.shape, k  # the window's length follows the fade from the start
    assert 0.8 < seen[1][1].base.psi < 1.3  # mid-fade, not restarted


class WallClockSound:
    """A sound card on wall time whose blocks end on the video frame grid: each read gets every
    whole frame's samples due by now. A frame that came late hears two frames' sound at once."""

    def __init__(self, signal: np.ndarray) -> None:
        self.sample_rate, self.signal = SR, signal
        self.started: float | None = None
        self.end = 0
        self.frames = math.floor(signal.size * FPS / SR)

    def read_new(self):
        now = time.monotonic()
        if self.started is None:
            self.started = now
        due = min(self.frames, math.floor((now - self.started) * FPS))
        end = frame_end_sample(due, SR, FPS)
        block, self.end = self.signal[self.end : end], max(self.end, end)
        return block.copy(), now


class Keeper:
    """A frame sink that keeps each frame with the sound it heard (the test's view of the live run)."""

    def __init__(self) -> None:
        self.frames: list = []
        self.heard = 0

    def feed(self, frame, audio) -> None:
        start, self.heard = self.heard, self.heard + audio.size
        self.frames.append((start, self.heard, frame))


def test_a_real_time_run_replays_to_the_frames_it_made_where_it_dropped_nothing(model, tmp_path):
    """Where the live run made a frame from exactly one frame's sound and no crossfade ran, the
    replay's frame at that moment has the live frame's parameters (the base exactly, the modulated
    ones to float rounding). In a crossfade they agree to within the wall clock's drift from the
    sound's clock: live fades run on time.monotonic(), replayed ones on the sound's time."""
    seconds = 5.0
    sound = WallClockSound(sixteen_bit_noise(seconds, seed=7))
    worker = RenderWorker(model, sound, Params(fps=FPS))
    log, keeper = SetLogger(tmp_path / "realtime.soundvjset", SR), Keeper()
    worker.add_sink(log)
    worker.add_sink(keeper)
    base = Params(fps=FPS, alpha=0.3)
    script = [
        (0.5, lambda: worker.set_modulations(ModulationMatrix((Modulation("noise", "envelope", 0.6),
                                                               Modulation("rotate_deg", "sine", 20.0))))),
        (1.0, lambda: worker.set_params(base.replace(psi=1.1, noise=0.8), 1.0, "up")),
        (2.5, lambda: worker.set_params(base.replace(psi=1.1, noise=0.8, pan_x=0.3), only=["pan_x"])),
        (3.2, lambda: worker.set_params(base.replace(psi=0.4, noise=0.1, seed=4), 0.5, "down")),
    ]
    worker.start()
    t0 = time.monotonic()
    for at, act in script:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        act()
    while keeper.heard < frame_end_sample(sound.frames, SR, FPS) and time.monotonic() < t0 + seconds + 20:
        time.sleep(0.05)
    worker.stop()
    log.stop()
    assert log.state == "finished", log.error
    set_log = open_set_log(log.path)
    _result, seen = _replayed(log.path, model, tmp_path / "realtime.mp4")
    assert len(seen) == round(set_log.meta.seconds * FPS)

    grid = {frame_end_sample(k, SR, FPS): k for k in range(len(seen) + 1)}
    exact = fading = 0
    for start, end, frame in keeper.frames:
        k = grid.get(end)
        if k is None or k >= len(seen) or grid.get(start) != k - 1:
            continue  # a late frame heard more than one frame's sound (or none): not comparable
        made = seen[k][1]
        live_fading = not frame.show.fade.done(frame.show.now)
        if live_fading or not made.state.fade.done(made.state.now):
            fading += 1
            fade = frame.show.fade if live_fading else made.state.fade
            for name in ("psi", "noise"):  # the clocks drift apart by well under three frames
                span = abs(getattr(fade.target, name) - getattr(fade.start, name))
                allowed = span * 3 / (FPS * fade.seconds) + 1e-9
                assert getattr(made.base, name) == pytest.approx(getattr(frame.base_params, name), abs=allowed), k
            continue
        exact += 1
        # Equal to float rounding: the envelope is a filter over every mel column so far, and a late
        # frame earlier had its columns' levels summed in a batch of another shape (last-bit changes).
        for name, (replayed, shown) in made.params.diff(frame.params).items():
            assert replayed == pytest.approx(shown, rel=1e-9, abs=1e-9), (k, name)
        assert made.base == frame.base_params, k
    print(f"real-time run: {len(keeper.frames)} frames shown, {worker.deadlines_dropped} deadlines dropped; "
          f"{exact} compared outside crossfades, {fading} in them")
    assert exact >= FPS and fading > 0  # at least a second's worth of frames compared exactly


def test_the_set_model_is_found_by_its_hash_or_refused_in_one_line(model, tmp_path):
    file_model = tmp_path / "a.safetensors"
    save_full_model(file_model, model, source="model a")
    loaded = load_model(file_model, device="cpu")
    identity = ModelIdentity.of(loaded)
    assert identity.sha256 and identity.file == str(file_model.absolute())
    path = write_set(tmp_path / "a.soundvjset", sixteen_bit_noise(1.0), [], model=identity)
    found = choose_models(open_set_log(path), None, "cpu")(identity)
    assert found.file == file_model.absolute() and found.source == "model a"

    file_model.rename(tmp_path / "moved.safetensors")
    with pytest.raises(SoundvjError) as caught:
        choose_models(open_set_log(path), None, "cpu")
    assert "no model file here has that sha256" in str(caught.value) and "\n" not in str(caught.value)

    warnings: list[str] = []
    chosen = choose_models(open_set_log(path), "random", "cpu", warnings.append)(identity)
    assert chosen.source == "embedded default (random weights)"
    assert len(warnings) == 1 and "not the set's model 'model a'" in warnings[0]

    random = ModelIdentity("embedded default (random weights)", None)  # the suite's default (conftest)
    played_random = write_set(tmp_path / "r.soundvjset", sixteen_bit_noise(1.0), [], model=random)
    assert choose_models(open_set_log(played_random), None, "cpu")(random).file is None
    in_memory = write_set(tmp_path / "m.soundvjset", sixteen_bit_noise(1.0), [])  # the tiny test model
    with pytest.raises(SoundvjError, match="which no file holds; pass --model FILE"):
        choose_models(open_set_log(in_memory), None, "cpu")


def test_an_opus_set_log_replays_at_its_length(model, tmp_path):
    events = [(1.0, CommandTaken(ParamCommand(Params(psi=1.2), 0.0, "bright")))]
    path = write_set(tmp_path / "small.soundvjset", sixteen_bit_noise(2.0), events, codec="opus")
    result, seen = _replayed(path, model, tmp_path / "opus.mp4")
    assert result.frames == round(2.0 * FPS)
    assert abs(_first_frame_with(seen, lambda p: p.psi == 1.2) - FPS) <= 1
    assert probe_media(result.path).audio_duration == pytest.approx(2.0, abs=0.05)


needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM")),
    reason="no display: run the tests through ./dev.sh test (it starts Xvfb)",
)


def _soundvj(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@needs_display
@pytest.mark.slow
def test_live_set_log_then_replay_at_twice_the_rate_from_the_command_line(tmp_path):
    from tests.live_helpers import write_wav

    wav = write_wav(tmp_path / "noise.wav", 6.0)
    set_path = tmp_path / "show.soundvjset"
    live = _soundvj("live", "--file", str(wav), "--duration", "3", "--set-log", str(set_path), "--preset", "calm")
    assert live.returncode == 0, live.stderr
    assert f"set log {set_path}" in live.stdout
    meta = open_set_log(set_path).meta
    assert meta.seconds == pytest.approx(3.0, abs=1e-9) and meta.start.look == "calm"
    out = tmp_path / "again.mp4"
    run = _soundvj("replay", str(set_path), "-o", str(out), "--fps", str(2 * meta.fps), "--quiet")
    assert run.returncode == 0, run.stderr
    assert probe_media(out).frame_count == round(3.0 * 2 * meta.fps)
    assert f"wrote {out} ({round(6 * meta.fps)} frames" in run.stdout


def test_feeding_the_set_logger_returns_at_once_while_its_thread_encodes(model, tmp_path):
    """The render thread's part is an append: 10 s of sound fed in 240 frames takes milliseconds."""
    source = FrameByFrameSound(sixteen_bit_noise(1.0))
    frame = RenderWorker(model, source, Params(fps=FPS), clock=source.clock).tick()
    log = SetLogger(tmp_path / "fast.soundvjset", SR)
    chunk = sixteen_bit_noise(10.0 / 240)
    started = time.perf_counter()
    for _ in range(240):
        log.feed(frame, chunk)
    fed = time.perf_counter() - started
    log.stop()
    assert log.state == "finished" and log.samples_logged == 240 * chunk.size
    assert fed < 0.05, f"feeding took {fed * 1000:.1f} ms"
