"""The models and the frame pipeline work where PyAV (`av`) is not installed.

PyAV is needed to decode audio files and write videos, and only there: a machine that only
synthesises frames (from the demo soundscape or a sound card) must not need it. A child process
whose import system refuses `av` loads the shipped default model and renders one frame.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys

    class RefusePyAV:
        def find_spec(self, name, path=None, target=None):
            if name == "av" or name.startswith("av."):
                raise ImportError("PyAV is refused in this process")
            return None

    sys.meta_path.insert(0, RefusePyAV())

    import torch

    import core
    import core.default_model
    import core.model_file
    import core.params
    import core.presets
    import core.sound
    import core.stylegan3
    from core.audio import demo_soundscape
    from core.model import load_model
    from core.pipeline import FramePipeline

    model = load_model("default", device="cpu")
    pipeline = FramePipeline(model)
    windower = pipeline.make_windower()
    sound = demo_soundscape(seconds=1.0, sample_rate=model.mel_config.sample_rate)
    windows = windower.push(sound)
    frame = pipeline.step(windows[0].mel)
    size = model.generator.img_resolution
    assert frame.shape == (3, size, size), frame.shape
    assert torch.isfinite(frame).all()
    assert "av" not in sys.modules
    print("frame", tuple(frame.shape), model.source)
    """
)


def test_default_model_renders_a_frame_without_pyav(tmp_path):
    env = dict(os.environ, SOUNDVJ_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    env.pop("SOUNDVJ_DEFAULT_MODEL", None)  # conftest pins the suite to the random weights; this is the shipped one
    run = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("frame (3, "), run.stdout
    assert "embedded default" in run.stdout, run.stdout
