"""Frozen configs for the three sound models, with JSON round-tripping for checkpoint metadata.

`num_ws` and `w_dim` are never guessed here: build them from the generator (`G.num_ws`, `G.w_dim`),
e.g. with `SoundModelsConfig.for_generator(...)`. The defaults match the paper's 1024-px StyleGAN3
(num_ws=16, w_dim=512) and a full-width ResNet-18 (width=64).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from core.errors import SoundvjError


def _check_int(owner: str, name: str, value: Any, lo: int, hi: int) -> None:
    # bool is an int subclass; `width: true` in a JSON file is a typo, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SoundvjError(f"{owner}.{name}: expected an integer in [{lo}, {hi}], got {value!r}")


def _check_float(owner: str, name: str, value: Any, lo: float, hi: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= float(value) <= hi:
        raise SoundvjError(f"{owner}.{name}: expected a number in [{lo:g}, {hi:g}], got {value!r}")


def _check_blocks(owner: str, value: Any, lo: int = 1, hi: int = 16) -> None:
    ok = isinstance(value, tuple) and len(value) == 4
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value)
    if not ok:
        raise SoundvjError(
            f"{owner}.blocks_per_stage: expected 4 integers in [{lo}, {hi}] (one per ResNet stage), got {value!r}"
        )


EMBEDDING_N_MELS = 96  # the pretrained sound embedding's mel bands (core.sound.sound_embedding.MEL)
BACKBONES = ("resnet", "embedding")  # E_A / E_I over the mel window, or heads over the sound embedding


def _check_backbone(owner: str, value: Any) -> None:
    if value not in BACKBONES:
        raise SoundvjError(f"{owner}.backbone: expected one of {list(BACKBONES)}, got {value!r}")


_Config = TypeVar("_Config", bound="_DictMixin")


class _DictMixin:
    """to_dict()/from_dict() for the flat configs; from_dict rejects unknown keys, fills missing ones with defaults."""

    section: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value  # JSON has no tuples
        return out

    @classmethod
    def from_dict(cls: type[_Config], data: Any) -> _Config:
        if not isinstance(data, dict):
            raise SoundvjError(f"{cls.section}: expected a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise SoundvjError(f"{cls.section}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class AudioEncoderConfig(_DictMixin):
    """E_A: ResNet-18 over a mel window -> L2-normalised embedding (CLIP-space, hence 512-d)."""

    section: ClassVar[str] = "audio_encoder"

    n_mels: int = 128
    width: int = 64  # base channels; 64 is the real ResNet-18, 16 runs fast on CPU
    embed_dim: int = 512
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)  # (2, 2, 2, 2) is ResNet-18
    # "embedding": a small head over the pretrained sound embedding (core.sound.sound_embedding)
    # instead of the ResNet; width and blocks_per_stage are then unused, head_hidden sizes the head.
    backbone: str = "resnet"
    head_hidden: int = 512

    def __post_init__(self) -> None:
        _check_int(self.section, "n_mels", self.n_mels, 16, 1024)
        _check_int(self.section, "width", self.width, 4, 256)
        _check_int(self.section, "embed_dim", self.embed_dim, 1, 4096)
        _check_blocks(self.section, self.blocks_per_stage)
        _check_backbone(self.section, self.backbone)
        _check_int(self.section, "head_hidden", self.head_hidden, 1, 8192)


@dataclass(frozen=True)
class InversionEncoderConfig(_DictMixin):
    """E_I: pSp-style encoder, mel window -> offsets from w_avg for every style vector."""

    section: ClassVar[str] = "inversion_encoder"

    num_ws: int = 16  # from the generator
    w_dim: int = 512  # from the generator
    n_mels: int = 128
    width: int = 64  # base channels of the backbone; the pyramid has 8 * width channels
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    # Std of each offset entry for an untrained encoder. StyleGAN w entries are O(1), so 0.25 keeps
    # untrained latents near w_avg while still visibly sound-dependent.
    offset_init_std: float = 0.25
    backbone: str = "resnet"  # as AudioEncoderConfig.backbone
    head_hidden: int = 512
    # Kinds of scene E_I chooses among (backbone "embedding" only; 0: none). With P > 0 the head also
    # classifies the sound into P kinds and adds the softmax-weighted mix of P learned offsets (one
    # scene per kind) to its own: the picture then lands on a kind's scene as surely as a linear
    # classifier on the embedding tells the kinds apart, also on recordings of other sources.
    prototypes: int = 0

    def __post_init__(self) -> None:
        _check_int(self.section, "num_ws", self.num_ws, 3, 64)
        _check_int(self.section, "w_dim", self.w_dim, 1, 4096)
        _check_int(self.section, "n_mels", self.n_mels, 16, 1024)
        _check_int(self.section, "width", self.width, 4, 256)
        _check_blocks(self.section, self.blocks_per_stage)
        _check_float(self.section, "offset_init_std", self.offset_init_std, 0.0, 10.0)
        _check_backbone(self.section, self.backbone)
        _check_int(self.section, "head_hidden", self.head_hidden, 1, 8192)
        _check_int(self.section, "prototypes", self.prototypes, 0, 1024)
        if self.prototypes and self.backbone != "embedding":
            raise SoundvjError(f"{self.section}.prototypes: needs backbone 'embedding', got {self.backbone!r}")


@dataclass(frozen=True)
class LatentStepperConfig(_DictMixin):
    """The paper's sound-based frame generator: a causal GRU stack proposing the next w."""

    section: ClassVar[str] = "latent_stepper"

    num_ws: int = 16  # from the generator
    w_dim: int = 512  # from the generator
    hidden: int = 512
    num_layers: int = 5
    embed_dim: int = 512  # must equal the audio encoder's embed_dim
    noise_dim: int = 512
    # Std of each d_t entry for an untrained stepper, relative to a unit-RMS FC input: small, so
    # untrained, w_tilde stays close to the inversion encoder's w_hat.
    delta_init_std: float = 0.05

    def __post_init__(self) -> None:
        _check_int(self.section, "num_ws", self.num_ws, 3, 64)
        _check_int(self.section, "w_dim", self.w_dim, 1, 4096)
        _check_int(self.section, "hidden", self.hidden, 1, 4096)
        _check_int(self.section, "num_layers", self.num_layers, 1, 16)
        _check_int(self.section, "embed_dim", self.embed_dim, 1, 4096)
        _check_int(self.section, "noise_dim", self.noise_dim, 0, 4096)
        _check_float(self.section, "delta_init_std", self.delta_init_std, 0.0, 10.0)


@dataclass(frozen=True)
class SoundModelsConfig:
    """The three sound models together; checks that their shared sizes agree."""

    section: ClassVar[str] = "sound_models"
    _parts: ClassVar[dict[str, type]] = {
        "audio_encoder": AudioEncoderConfig,
        "inversion_encoder": InversionEncoderConfig,
        "latent_stepper": LatentStepperConfig,
    }

    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    inversion_encoder: InversionEncoderConfig = field(default_factory=InversionEncoderConfig)
    latent_stepper: LatentStepperConfig = field(default_factory=LatentStepperConfig)

    def __post_init__(self) -> None:
        for name, part_type in self._parts.items():
            if not isinstance(getattr(self, name), part_type):
                raise SoundvjError(f"{self.section}.{name}: expected a {part_type.__name__}")
        enc, inv, step = self.audio_encoder, self.inversion_encoder, self.latent_stepper
        # Each message names the field that has to follow the other one.
        if step.num_ws != inv.num_ws:
            raise SoundvjError(
                f"latent_stepper.num_ws: expected {inv.num_ws} (inversion_encoder.num_ws), got {step.num_ws}"
            )
        if step.w_dim != inv.w_dim:
            raise SoundvjError(
                f"latent_stepper.w_dim: expected {inv.w_dim} (inversion_encoder.w_dim), got {step.w_dim}"
            )
        if step.embed_dim != enc.embed_dim:
            raise SoundvjError(
                f"latent_stepper.embed_dim: expected {enc.embed_dim} (audio_encoder.embed_dim), got {step.embed_dim}"
            )
        if inv.backbone != enc.backbone:
            raise SoundvjError(
                f"inversion_encoder.backbone: expected {enc.backbone!r} (audio_encoder.backbone), got {inv.backbone!r}"
            )
        if inv.n_mels != enc.n_mels:
            raise SoundvjError(
                f"inversion_encoder.n_mels: expected {enc.n_mels} (audio_encoder.n_mels), got {inv.n_mels}"
            )
        if self.uses_sound_embedding and enc.n_mels != EMBEDDING_N_MELS:
            raise SoundvjError(
                f"audio_encoder.n_mels: expected {EMBEDDING_N_MELS} (the sound embedding's bands), got {enc.n_mels}"
            )

    @property
    def uses_sound_embedding(self) -> bool:
        """True when E_A and E_I are heads over the pretrained sound embedding."""
        return self.audio_encoder.backbone == "embedding"

    @classmethod
    def for_generator(
        cls, num_ws: int, w_dim: int, width: int = 64, hidden: int = 512, n_mels: int = 128
    ) -> SoundModelsConfig:
        """Default sound models sized for a generator with the given `num_ws` and `w_dim`."""
        return cls(
            audio_encoder=AudioEncoderConfig(n_mels=n_mels, width=width),
            inversion_encoder=InversionEncoderConfig(num_ws=num_ws, w_dim=w_dim, n_mels=n_mels, width=width),
            latent_stepper=LatentStepperConfig(num_ws=num_ws, w_dim=w_dim, hidden=hidden),
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in self._parts}

    @classmethod
    def from_dict(cls, data: Any) -> SoundModelsConfig:
        if not isinstance(data, dict):
            raise SoundvjError(f"{cls.section}: expected a mapping of settings, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in cls._parts)
        if unknown:
            raise SoundvjError(f"{cls.section}: unknown key(s) {unknown}; expected some of {sorted(cls._parts)}")
        return cls(**{name: cls._parts[name].from_dict(part) for name, part in data.items()})


def _three_way_split(num_ws: int, first_16ths: int, second_16ths: int) -> tuple[tuple[int, ...], ...]:
    """Split style ids 0..num_ws-1 at num_ws*first/16 and num_ws*second/16, rounded half up.

    Both cut points are then clamped so that every group keeps at least one id (num_ws >= 3).
    """
    if not isinstance(num_ws, int) or isinstance(num_ws, bool) or num_ws < 3:
        raise SoundvjError(f"num_ws: expected an integer >= 3 (three style groups), got {num_ws!r}")
    first = min(max((first_16ths * num_ws + 8) // 16, 1), num_ws - 2)
    second = min(max((second_16ths * num_ws + 8) // 16, first + 1), num_ws - 1)
    return tuple(range(first)), tuple(range(first, second)), tuple(range(second, num_ws))


def style_groups(num_ws: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(coarse, middle, fine) style ids read from E_I's coarse / middle / fine feature maps.

    pSp's split for 16 styles is 0-2 / 3-6 / 7-15; for other num_ws the cuts scale as
    round(3/16 * num_ws) and round(7/16 * num_ws), rounding halves up, each group non-empty.
    E.g. 12 -> 0-1 / 2-4 / 5-11, 14 -> 0-2 / 3-5 / 6-13, 18 -> 0-2 / 3-7 / 8-17.
    """
    return _three_way_split(num_ws, 3, 7)  # type: ignore[return-value]


def alpha_groups(num_ws: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(coarse, middle, fine) style ids for the stepper's three interpolation weights.

    The official code's three GRU groups for 16 styles are 0-3 / 4-7 / 8-15 (not E_I's split); for other
    num_ws the cuts scale as round(num_ws / 4) and round(num_ws / 2), halves up, each group non-empty.
    E.g. 12 -> 0-2 / 3-5 / 6-11, 14 -> 0-3 / 4-6 / 7-13, 18 -> 0-4 / 5-8 / 9-17.
    """
    return _three_way_split(num_ws, 4, 8)  # type: ignore[return-value]
