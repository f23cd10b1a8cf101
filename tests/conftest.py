import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"

# The suite runs on the random-weights generator whatever model ships as the default, so its sizes and
# numbers do not change when the default does; tests of the shipped default unset this.
os.environ["SOUNDVJ_DEFAULT_MODEL"] = "random"

# Two threads match the machine this runs on; more only thrash.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_sessionstart(session):
    # Build (or load) the C++ kernel before any test runs, so every test sees the same code path
    # instead of switching when a background build finishes.
    from core.stylegan3.ops import backend

    backend.prepare("cpu", wait=True)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")


@pytest.fixture(scope="session")
def sg3_fixtures() -> dict:
    """The official StyleGAN3 outputs (see tests/fixtures/README.md), loaded once."""
    return {
        name: torch.load(FIXTURES / f"sg3_tiny_{name}.pt", weights_only=True, map_location="cpu")
        for name in ("t64", "r64")
    }


def fixture_generator(fx: dict, perturbed: bool = False, device: str = "cpu"):
    """Our Generator with a fixture's official weights (plus the `perturbed` overrides if asked)."""
    from core.stylegan3.networks import Generator

    G = Generator(**fx["config"]).eval()
    state = dict(fx["G_state_dict"])
    if perturbed:
        state.update(fx["perturbed"]["state_dict_overrides"])
    G.load_state_dict(state, strict=True)
    return G.to(device)
