"""A pretrained sound-effects embedding: mel window -> 512-d description of what the sound *is*.

The network is aiSFX's embedding CNN (Ma and Lerch, "Representation Learning for the Automatic
Indexing of Sound Effects Libraries", ISMIR 2022; weights CC-BY-4.0), trained on several commercial
sound-effects libraries, so it tells rain from wind from engines on recordings it never heard. Its
shape, written here from the checkpoint's tensors:

    log-mel [B, 1, T, 96] -> four blocks of (3x3 conv, batch norm, ReLU) x 2, each block but the
    last followed by 2x2 max pooling (64, 128, 256, 512 channels)
    -> mean over the mel axis -> max over time -> [B, 512]

The weights ship once, as half precision, in `core/assets/sound_embedding.safetensors` (converted
from the package's checkpoint by `training.import_sound_embedding`, never unpickled at run time). At
load, each batch norm is folded into the convolution before it, in float32.

Input scale. The network was trained on a 96-band HTK mel of 44.1 kHz sound (2048-sample Hann
frames, hop 1024, each band's weights summing to 1, power), compressed as log10(1e4 x + 1) / 9.4578,
of loudness-normalised files. soundvj's windows are its own dB scale (see `core.audio.mel`), so
`SoundEmbedding` converts them back to power, which is exact above the dB floor, and normalises the
loudness of each window (its mean band power to `LEVEL_TARGET_DB`, at most `MAX_GAIN_DB` louder) so
a quiet microphone and a loud file are described alike. Loudness stays a separate signal: the sound
features and modulators read it from the window itself.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio

from core.audio.mel import MelConfig
from core.errors import SoundvjError

EMBEDDING_FILE = Path(__file__).resolve().parent.parent / "assets" / "sound_embedding.safetensors"
# SHA-256 of the shipped tensors (`weights_digest`: names, dtypes, shapes and bytes; not the file, whose
# header order varies between writes). Changed weights are refused rather than silently used.
EMBEDDING_SHA256 = "ad7cd0e27a1560a0795363a2412b6c73fe45e0ec3e4d7414d44f7af2d9f7822c"

NAME = "aisfx-0.1.2"
EMBED_DIM = 512
CHANNELS = (64, 128, 256, 512)
# The mel the network was trained on, as soundvj's MelConfig. top_db 100 keeps what the network's
# log10(1e4 x + 1) scale still resolves of quiet bands after the loudness normalisation below.
MEL = MelConfig(sample_rate=44100, n_fft=2048, hop=1024, n_mels=96, top_db=100.0)
LOG_SCALE = 9.457798957824707  # the package's normalisation of log10(1e4 x + 1)
# Mean band power of a window after normalisation, dB re a full-scale sine: about the median of
# peak-normalised sound-effect recordings, the loudness the network learned from.
LEVEL_TARGET_DB = -30.0
MAX_GAIN_DB = 40.0  # quieter windows are lifted by at most this (noise floors stay low)
BN_EPS = 1e-5
CREDIT = ("aiSFX 0.1.2 sound-effects embedding (Alison Bernice Ma and Alexander Lerch, ISMIR 2022), "
          "CC-BY-4.0; shipped once in core/assets/sound_embedding.safetensors")


@dataclass(frozen=True)
class EmbeddingLevel:
    """What `SoundEmbedding` did to a window's loudness (for tests and diagnostics)."""

    level_db: float
    gain_db: float


def band_weight_sums(mel: MelConfig) -> torch.Tensor:
    """Sum of each band's triangle weights over the FFT bins, for triangles that peak at 1 (the
    project's mel). Dividing a band's power by it gives the unit-sum weighting the network expects."""
    fb = torchaudio.functional.melscale_fbanks(
        mel.n_fft // 2 + 1, 0.0, mel.sample_rate / 2, mel.n_mels, mel.sample_rate, norm=None, mel_scale="htk"
    )
    return fb.sum(dim=0).clamp_min(1e-12)


class EmbeddingBlock(torch.nn.Module):
    """Two 3x3 convolutions (batch norm folded in) with ReLU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels_out, channels_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class SoundEmbeddingNet(torch.nn.Module):
    """The CNN on the network's own log-mel scale: [B, T, 96] -> [B, 512]."""

    def __init__(self) -> None:
        super().__init__()
        ins = (1, *CHANNELS[:-1])
        self.blocks = torch.nn.ModuleList(EmbeddingBlock(i, o) for i, o in zip(ins, CHANNELS))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = log_mel.unsqueeze(1)
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k < len(self.blocks) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=3).amax(dim=2)


def fold_batch_norm(conv_weight: torch.Tensor, bn: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free conv followed by inference-mode batch norm, as one conv: (weight, bias)."""
    scale = bn["weight"].double() / torch.sqrt(bn["running_var"].double() + BN_EPS)
    weight = conv_weight.double() * scale[:, None, None, None]
    bias = bn["bias"].double() - bn["running_mean"].double() * scale
    return weight.float(), bias.float()


def folded_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The shipped tensors (`conv_block{k}.conv{j}.weight`, `conv_block{k}.bn{j}.*`) as
    `SoundEmbeddingNet` weights with batch norm folded into the convolutions."""
    state: dict[str, torch.Tensor] = {}
    for k in range(len(CHANNELS)):
        for j in (1, 2):
            prefix = f"conv_block{k + 1}"
            bn = {name: raw[f"{prefix}.bn{j}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")}
            weight, bias = fold_batch_norm(raw[f"{prefix}.conv{j}.weight"], bn)
            state[f"blocks.{k}.conv{j}.weight"] = weight
            state[f"blocks.{k}.conv{j}.bias"] = bias
    return state


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def read_embedding_weights(path: Path = EMBEDDING_FILE, sha256: str | None = EMBEDDING_SHA256) -> dict[str, torch.Tensor]:
    """The shipped tensors in float32, after checking their digest (None: do not check)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise SoundvjError(f"{path}: the sound embedding's weights are missing (expected soundvj's shipped file)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SoundvjError(f"{path}: not a readable safetensors file ({e})") from None
    if sha256 is not None and weights_digest(tensors) != sha256:
        raise SoundvjError(f"{path}: the sound embedding's weights are not the shipped ones (SHA-256 differs)")
    return {k: v.float() for k, v in tensors.items()}


class SoundEmbedding(torch.nn.Module):
    """Project mel window [B, 96, W] (dB scale of `MEL`) -> embedding [B, 512]; frozen, no gradients."""

    def __init__(self, state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.net = SoundEmbeddingNet()
        if state is not None:
            self.net.load_state_dict(state)
        self.register_buffer("band_sums", band_weight_sums(MEL), persistent=False)
        window_sum = float(torch.hann_window(MEL.n_fft).sum())
        self.full_scale_power = (window_sum / 2.0) ** 2  # the project mel's unit (see core.audio.mel)
        self._memo: dict[bytes, torch.Tensor] | None = None  # see `remember`
        self._memo_limit = 0
        self.eval().requires_grad_(False)

    def network_input(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's log-mel [B, W, 96] from project windows [B, 96, W], loudness-normalised;
        also the gain applied to each window, in dB [B]."""
        if mel.ndim != 3 or mel.shape[1] != MEL.n_mels:
            raise SoundvjError(f"sound embedding input: expected mel windows [batch, {MEL.n_mels}, frames], got {tuple(mel.shape)}")
        x = mel.to(self.band_sums.device, torch.float32)
        power = torch.where(x > 0, torch.pow(10.0, (x - 1.0) * (MEL.top_db / 10.0)), torch.zeros_like(x))
        level = power.mean(dim=(1, 2)).clamp_min(1e-30)  # full-scale-sine units
        gain_db = (LEVEL_TARGET_DB - 10.0 * torch.log10(level)).clamp(max=MAX_GAIN_DB)
        gain = torch.pow(10.0, gain_db / 10.0)
        raw = power * (gain * self.full_scale_power)[:, None, None] / self.band_sums[None, :, None]
        log_mel = torch.log10(raw * 1e4 + 1.0) / LOG_SCALE
        return log_mel.transpose(1, 2), gain_db

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if self._memo is None:
            log_mel, _ = self.network_input(mel)
            return self.net(log_mel)
        return self._remembered(mel)

    def remember(self, max_windows: int) -> None:
        """Keep the embeddings of up to `max_windows` distinct windows (by content) and answer repeats
        from memory: training stages see the same windows of the same clips epoch after epoch."""
        self._memo, self._memo_limit = {}, max_windows

    def _remembered(self, mel: torch.Tensor) -> torch.Tensor:
        cpu = mel.detach().to("cpu", torch.float32).contiguous()
        keys = [hashlib.blake2b(w.numpy().tobytes(), digest_size=16).digest() for w in cpu]
        found = {i: self._memo[k] for i, k in enumerate(keys) if k in self._memo}
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            log_mel, _ = self.network_input(mel[missing])
            for i, e in zip(missing, self.net(log_mel)):
                found[i] = e
                if len(self._memo) < self._memo_limit:  # a full memo keeps what it has
                    self._memo[keys[i]] = e
        return torch.stack([found[i] for i in range(len(keys))]).to(mel.device)


def mel_config_for(backbone: str) -> MelConfig:
    """The mel settings sound models with this backbone hear: the embedding's for "embedding", else
    the project's defaults (docs/method.md)."""
    return MEL if backbone == "embedding" else MelConfig()


_shared: dict[str, SoundEmbedding] = {}
_shared_lock = threading.Lock()


def shared_sound_embedding(device: torch.device | str = "cpu") -> SoundEmbedding:
    """The one frozen `SoundEmbedding` per device in this process, loaded from the shipped weights on
    first use. The sound models of every loaded model share it; it is never part of a model file."""
    key = str(torch.device(device))
    with _shared_lock:
        if key not in _shared:
            if not _shared:
                _shared["cpu"] = SoundEmbedding(folded_state(read_embedding_weights()))
            if key not in _shared:  # another device: the CPU copy's weights, moved
                _shared[key] = SoundEmbedding(_shared["cpu"].net.state_dict()).to(device)
        return _shared[key]
