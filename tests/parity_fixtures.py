"""The StyleGAN3 parity fixtures (tests/fixtures/sg3_tiny_*.pt): loading them, and our Generator with their weights.

The files hold NVIDIA's official outputs and the part of the official `state_dict()` that no random
number generator made (biases, constant buffers and the designed low-pass filters), and the Fourier
frequencies, which are drawn and then mapped by maths whose last bit differs between CPUs. The other
randomly drawn tensors (conv and affine weights, the mapping weights, the Fourier phases) are not
stored: `draw_official_random_tensors` draws them again from the fixture's seed, in the order and at
the scale the official constructor draws them. The assembled state dict must hash to the sha256 that
the official one had, so a drift in the draws fails loudly instead of testing against other weights.

The regeneration is written here, apart from core/stylegan3/networks.py, on purpose: the parity tests
compare our seeded Generator against the official weights, which must not come from our Generator.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.stylegan3.networks import Generator

FIXTURE_DIR = Path(__file__).parent / "fixtures"
VARIANTS = ("t64", "r64")

_LAYER_WEIGHT = re.compile(r"synthesis\.(L\d+_\d+_\d+)\.weight")
_MAPPING_WEIGHT = re.compile(r"mapping\.fc\d+\.weight")


def fixture_path(variant: str) -> Path:
    """Where the fixture of `variant` ("t64" or "r64") lives."""
    return FIXTURE_DIR / f"sg3_tiny_{variant}.pt"


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every entry's name, dtype, shape and raw bytes, in the dict's order.

    Bytes, not values: it tells -0.0 from 0.0, so "same hash" means bitwise the same tensors.
    """
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def draw_official_random_tensors(
    layout: Mapping[str, list[int]], fx: Mapping[str, Any], seed: int
) -> dict[str, torch.Tensor]:
    """The official constructor's random tensors, drawn again from `seed` (its `torch.manual_seed`).

    `layout` maps every state-dict name to its shape, in the official order. The official code builds
    the synthesis network before the mapping network. Its input layer draws the frequencies (normal,
    [C, 2]), the phases (uniform, [C]), its weight (normal) and its affine weight (normal, times the
    affine's weight_init of 0); every synthesis layer then draws its affine weight and its conv weight
    (normal, unscaled); last, each mapping layer draws its weight, stored divided by the mapping's
    lr_multiplier. Draws with a fresh generator, so the global RNG is left alone. The frequencies are
    drawn but not returned (see below): the fixtures store them.
    """
    if "mapping.embed.weight" in layout:
        raise NotImplementedError("conditional generators (c_dim > 0) have no fixture to check the draws against")
    rng = torch.Generator().manual_seed(seed)

    def normal(name: str) -> torch.Tensor:
        return torch.randn(layout[name], generator=rng)

    drawn: dict[str, torch.Tensor] = {}
    # Frequencies: drawn to keep the generator's order, but not returned. The official constructor
    # pushes them into a disc with exp and pow, whose last bit differs between CPUs (38 of 256 entries,
    # by at most 3.6e-7, on an Intel Xeon against the AMD EPYC that made the fixtures), so the files
    # store them with the kept entries.
    normal("synthesis.input.freqs")
    drawn["synthesis.input.phases"] = torch.rand(layout["synthesis.input.phases"], generator=rng) - 0.5
    drawn["synthesis.input.weight"] = normal("synthesis.input.weight")
    # Multiplied, not replaced by zeros: negative draws become -0.0, which the hash can tell apart.
    drawn["synthesis.input.affine.weight"] = normal("synthesis.input.affine.weight") * 0.0

    for name in layout:
        if layer := _LAYER_WEIGHT.fullmatch(name):
            affine = f"synthesis.{layer.group(1)}.affine.weight"
            drawn[affine] = normal(affine)
            drawn[name] = normal(name)

    lr_multiplier = fx["config"]["mapping_kwargs"].get(
        "lr_multiplier", fx["config_defaults"]["MappingNetwork"]["lr_multiplier"]
    )
    for name in layout:
        if _MAPPING_WEIGHT.fullmatch(name):
            drawn[name] = normal(name) * (1 / lr_multiplier)
    return drawn


def assemble_state_dict(fx: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The official state dict of a slim fixture: stored tensors plus the redrawn ones, checked by hash."""
    layout = dict(fx["G_state_dict_layout"])
    drawn = draw_official_random_tensors(layout, fx, fx["init_seed"])
    kept = fx["G_state_dict_kept"]
    overlap, missing = set(drawn) & set(kept), set(layout) - set(drawn) - set(kept)
    if overlap or missing or len(drawn) + len(kept) != len(layout):
        raise RuntimeError(f"parity fixture: drawn and stored tensors do not tile the state dict "
                           f"(both: {sorted(overlap)}, neither: {sorted(missing)})")
    state = {name: drawn[name] if name in drawn else kept[name] for name in layout}
    got = state_dict_sha256(state)
    if got != fx["G_state_dict_sha256"]:
        raise RuntimeError(
            f"parity fixture ({fx['meta']['variant']}): the weights drawn from seed {fx['init_seed']} "
            f"hash to {got}, not to the official {fx['G_state_dict_sha256']}; the random draws changed "
            "(torch version or draw order), so these are not NVIDIA's weights and the parity tests "
            "cannot run on them"
        )
    return state


def load_parity_fixture(variant: str) -> dict[str, Any]:
    """A fixture as the tests use it: the file's contents plus the full official `G_state_dict`."""
    fx = torch.load(fixture_path(variant), weights_only=True, map_location="cpu")
    fx["G_state_dict"] = assemble_state_dict(fx)
    return fx


def slim_fixture(full: Mapping[str, Any]) -> dict[str, Any]:
    """A fixture with a full `G_state_dict` turned into the stored form (drawn tensors left out).

    Refuses unless the redrawn tensors are bitwise the official ones, so nothing is dropped that the
    seed would not give back.
    """
    official = full["G_state_dict"]
    layout = [(name, list(tensor.shape)) for name, tensor in official.items()]
    drawn = draw_official_random_tensors(dict(layout), full, full["init_seed"])
    for name, tensor in drawn.items():
        if state_dict_sha256({name: tensor}) != state_dict_sha256({name: official[name]}):
            raise ValueError(f"redrawn {name} is not bitwise the official tensor; keep the full fixture")
    slim = {key: value for key, value in full.items() if key != "G_state_dict"}
    slim["G_state_dict_layout"] = layout
    slim["G_state_dict_kept"] = {name: t.clone() for name, t in official.items() if name not in drawn}
    slim["G_state_dict_sha256"] = state_dict_sha256(official)
    return slim


def fixture_generator(fx: Mapping[str, Any], perturbed: bool = False, device: str = "cpu") -> torch.nn.Module:
    """Our Generator with a fixture's official weights (plus the `perturbed` overrides if asked)."""
    G = Generator(**fx["config"]).eval()
    state = dict(fx["G_state_dict"])
    if perturbed:
        state.update(fx["perturbed"]["state_dict_overrides"])
    G.load_state_dict(state, strict=True)
    return G.to(device)
