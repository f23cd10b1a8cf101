import os

import pytest
import torch

from tests.parity_fixtures import VARIANTS, load_parity_fixture

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
    """The official StyleGAN3 outputs and weights (see tests/fixtures/README.md), loaded once."""
    return {variant: load_parity_fixture(variant) for variant in VARIANTS}
