"""The parity fixtures' weights are redrawn from their seed: the loader refuses weights that are not the official ones."""

import pytest
import torch

from tests.parity_fixtures import assemble_state_dict, fixture_path, slim_fixture, state_dict_sha256


def test_loaded_weights_are_the_official_ones(sg3_fixtures):
    for fx in sg3_fixtures.values():
        assert state_dict_sha256(fx["G_state_dict"]) == fx["G_state_dict_sha256"]
        assert [name for name, _ in fx["G_state_dict_layout"]] == list(fx["G_state_dict"])


def test_other_draws_fail_loudly():
    fx = torch.load(fixture_path("t64"), weights_only=True, map_location="cpu")
    fx["init_seed"] += 1
    with pytest.raises(RuntimeError, match="not to the official"):
        assemble_state_dict(fx)


def test_slimming_a_loaded_fixture_gives_the_stored_file_back(sg3_fixtures):
    # slim_fixture is how the files were made from the full official state dicts; it must stay able to.
    for variant, fx in sg3_fixtures.items():
        stored = torch.load(fixture_path(variant), weights_only=True, map_location="cpu")
        slim = slim_fixture(fx)
        assert set(slim) == set(stored)
        assert slim["G_state_dict_sha256"] == stored["G_state_dict_sha256"]
        assert [tuple(e) for e in slim["G_state_dict_layout"]] == [tuple(e) for e in stored["G_state_dict_layout"]]
        assert state_dict_sha256(slim["G_state_dict_kept"]) == state_dict_sha256(stored["G_state_dict_kept"])
