"""The pretrained sound embedding: the network against its authors' implementation, the shipped
weights' integrity, the loudness normalisation, and the key-frame schedule live and offline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.audio.windows import WindowConfig, mel_windows
from core.errors import SoundvjError
from core.sound.embedding_schedule import EmbeddingSchedule, at_once_frames, embedding_source_frame, period_frames
from core.sound.sound_embedding import (
    EMBEDDING_FILE,
    MEL,
    SoundEmbedding,
    fold_batch_norm,
    folded_state,
    read_embedding_weights,
    shared_sound_embedding,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sound_embedding_reference.safetensors"


def test_network_matches_the_authors_implementation():
    from safetensors.torch import load_file

    reference = load_file(str(FIXTURE))
    with torch.no_grad():
        ours = shared_sound_embedding().net(reference["log_mel"])
    expected = reference["embedding"]
    assert ours.shape == expected.shape == (3, 512)
    assert (ours - expected).abs().max().item() <= 1e-5 * expected.abs().max().item() + 1e-5


def test_folded_batch_norm_equals_convolution_then_batch_norm():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 4, 3, 3, generator=g)
    bn = {"weight": torch.rand(8, generator=g) + 0.5, "bias": torch.randn(8, generator=g),
          "running_mean": torch.randn(8, generator=g), "running_var": torch.rand(8, generator=g) + 0.1}
    x = torch.randn(2, 4, 10, 12, generator=g)
    expected = torch.nn.functional.batch_norm(torch.nn.functional.conv2d(x, weight, padding=1), bn["running_mean"],
                                              bn["running_var"], bn["weight"], bn["bias"], eps=1e-5)
    folded_w, folded_b = fold_batch_norm(weight, bn)
    assert torch.allclose(torch.nn.functional.conv2d(x, folded_w, folded_b, padding=1), expected, atol=1e-5)


def test_changed_weight_files_are_refused(tmp_path):
    data = bytearray(EMBEDDING_FILE.read_bytes())
    data[-100] ^= 0x01
    changed = tmp_path / "sound_embedding.safetensors"
    changed.write_bytes(bytes(data))
    with pytest.raises(SoundvjError, match="not the shipped ones"):
        read_embedding_weights(changed)
    with pytest.raises(SoundvjError, match="missing"):
        read_embedding_weights(tmp_path / "absent.safetensors")


def test_importer_takes_only_the_known_checkpoint(tmp_path):
    from training.import_sound_embedding import convert

    fake = tmp_path / "checkpoint.pth"
    torch.save({"embedding_net.conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}, fake)
    with pytest.raises(SoundvjError, match="not aisfx 0.1.2's checkpoint"):
        convert(fake, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def _birdsong_like(seconds: float, amplitude: float) -> torch.Tensor:
    """Chirps over a soft noise bed: a sound with structure, at a chosen level."""
    g = torch.Generator().manual_seed(3)
    t = torch.arange(int(seconds * MEL.sample_rate)) / MEL.sample_rate
    chirp = torch.sin(2 * math.pi * (3000 + 1500 * torch.sin(2 * math.pi * 7 * t)) * t)
    gate = (torch.sin(2 * math.pi * 3 * t) > 0.3).float()
    sound = chirp * gate + 0.05 * torch.randn(t.shape, generator=g)
    return amplitude * sound / sound.abs().max()


def test_loudness_does_not_change_the_description():
    embedding = shared_sound_embedding()
    loud = mel_windows(_birdsong_like(2.0, 0.5), MEL, WindowConfig(fps=4.0))[-2:]
    quiet = mel_windows(_birdsong_like(2.0, 0.5 * 10 ** (-20 / 20)), MEL, WindowConfig(fps=4.0))[-2:]
    _, loud_gain = embedding.network_input(loud)
    _, quiet_gain = embedding.network_input(quiet)
    assert torch.allclose(quiet_gain - loud_gain, torch.full_like(loud_gain, 20.0), atol=0.05)
    cos = torch.nn.functional.cosine_similarity(embedding(loud), embedding(quiet), dim=1)
    assert cos.min().item() > 0.999
    other = mel_windows(0.3 * torch.randn(2 * MEL.sample_rate, generator=torch.Generator().manual_seed(5)), MEL,
                        WindowConfig(fps=4.0))[-2:]
    assert torch.nn.functional.cosine_similarity(embedding(loud), embedding(other), dim=1).max().item() < 0.99


def test_silence_stays_silent():
    embedding = SoundEmbedding(folded_state(read_embedding_weights()))
    log_mel, _ = embedding.network_input(torch.zeros(1, MEL.n_mels, 42))
    assert log_mel.abs().max().item() == 0.0


def _indexed_windows(count: int) -> torch.Tensor:
    """Windows whose every value is their frame index, so an embedding of mean() names its window."""
    return torch.arange(count, dtype=torch.float32)[:, None, None].expand(count, 4, 3).clone()


def _frame_index_embedding(windows: torch.Tensor) -> torch.Tensor:
    return windows.mean(dim=(1, 2))[:, None]


@pytest.mark.parametrize("chunks", [[40], [1] * 40, [7, 1, 13, 19]])
def test_key_frames_answer_at_once_in_the_first_second_then_one_period_back(chunks):
    fps = 24.0
    period, at_once = period_frames(fps), at_once_frames(fps)
    assert (period, at_once) == (3, 24)
    schedule = EmbeddingSchedule(_frame_index_embedding)
    windows = _indexed_windows(sum(chunks))
    used, start = [], 0
    for size in chunks:
        used += schedule.embeddings(windows[start : start + size], fps)[:, 0].tolist()
        start += size
    assert used == [float(embedding_source_frame(f, fps)) for f in range(len(used))]
    # First second: each key frame's own window from the key frame on.
    assert used[:3] == [0.0] * 3 and used[3:6] == [3.0] * 3 and used[21:24] == [21.0] * 3
    # Then one period back: frame 24 still shows key frame 21, frame 27 shows key frame 24.
    assert used[24:27] == [21.0] * 3 and used[27:30] == [24.0] * 3 and used[38] == 33.0 and used[39] == 36.0


def test_live_schedule_embeds_on_its_own_thread_and_gives_the_same_embeddings():
    import threading

    threads: dict[int, str] = {}

    def embed(windows: torch.Tensor) -> torch.Tensor:
        for index in _frame_index_embedding(windows)[:, 0].tolist():
            threads[int(index)] = threading.current_thread().name
        return _frame_index_embedding(windows)

    offline = EmbeddingSchedule(_frame_index_embedding).embeddings(_indexed_windows(40), 24.0)
    live = EmbeddingSchedule(embed)
    live.run_in_background(True)
    try:
        frames = torch.cat([live.embeddings(w[None], 24.0) for w in _indexed_windows(40)])
    finally:
        live.close()
    assert torch.equal(frames, offline)
    here = threading.current_thread().name
    # The first second's key frames are used at once, so they are embedded in place; later ones
    # have a period to be ready and are embedded on the worker.
    assert {threads[k] for k in range(0, 24, 3)} == {here}
    assert {threads[k] for k in range(24, 40, 3)} == {"sound-embedding"}


def test_reset_starts_the_schedule_again():
    schedule = EmbeddingSchedule(_frame_index_embedding)
    first = schedule.embeddings(_indexed_windows(20), 24.0)
    schedule.reset()
    assert torch.equal(schedule.embeddings(_indexed_windows(20), 24.0), first)


def test_importing_the_package_checkpoint_gives_the_shipped_weights(tmp_path):
    aisfx = pytest.importorskip("aisfx", reason="aisfx is installed only to convert its checkpoint "
                                "(pip install --no-deps aisfx==0.1.2); soundvj ships the result")
    from safetensors.torch import load_file

    from core.sound.sound_embedding import EMBEDDING_SHA256, weights_digest
    from training.import_sound_embedding import convert

    checkpoint = Path(aisfx.__file__).parent / "models" / "checkpoint.pth"
    out = convert(checkpoint, tmp_path / "sound_embedding.safetensors")
    assert weights_digest(load_file(str(out))) == EMBEDDING_SHA256
