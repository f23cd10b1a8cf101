"""The recorded demo walk that `render --demo` plays (core/assets/demo_walk.opus)."""

from __future__ import annotations

import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.audio.demo_walk import demo_walk, demo_walk_sections
from core.render import load_render_audio

SR = 44100


def test_the_walk_holds_six_classes_in_turn():
    walk = demo_walk(SR)
    sections = demo_walk_sections()
    assert [s[0] for s in sections] == ["birds", "wind", "rain", "engine", "fire", "night"]
    assert abs(walk.shape[0] / SR - sections[-1][2]) < 0.1  # the file is as long as the list says
    front_end = MelSpectrogramFrontEnd(MelConfig())
    profiles = {}
    for name, start, end in sections:
        part = walk[int((start + 1) * SR) : int((end - 1) * SR)]  # inside the crossfades
        assert part.square().mean().sqrt() > 1e-3, f"{name} is silent"
        profiles[name] = front_end(part).mean(dim=1)  # the mean mel profile the models hear, in [0, 1]
    # Six different sounds: every two sections' mean profiles differ by over 2.4 dB a band on average
    names = list(profiles)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (profiles[a] - profiles[b]).abs().mean() > 0.03, (a, b)


def test_render_demo_plays_the_walk_and_loops_it():
    walk = demo_walk(SR)
    audio = load_render_audio(None, SR, start=40.0, seconds=6.0)
    assert audio.label.startswith("demo walk")
    got = torch.cat([piece for piece, _ in audio.open_pieces()])
    assert got.shape[0] == 6 * SR
    first = int(40.0 * SR)
    expected = torch.cat([walk[first:], walk[: 6 * SR - (walk.shape[0] - first)]])
    torch.testing.assert_close(got, expected)
