"""The Lanczos-3 cover-and-crop scaler (`core.frame_scaling`) that the stream, NDI and `render --size`
use: exact sizes, constants kept, downscales anti-aliased, and a 64 px frame on a 1080p projector
without the blocky steps of nearest or the creases of bilinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.frame_scaling import axis_plan, axis_weights, cover_crop, scale_rgb_to_cover, scale_to_cover
from core.render import fit_frames


@pytest.mark.parametrize("source", [(64, 64), (256, 256), (48, 32)])
@pytest.mark.parametrize("size", [(1920, 1080), (1280, 720), (720, 1280), (64, 64), (33, 17), (16, 16)])
def test_output_has_exactly_the_asked_size(source, size):
    """Any source to any size: exactly width x height, for float frames and uint8 images."""
    w, h = source
    width, height = size
    assert scale_to_cover(torch.rand(2, 3, h, w), width, height).shape == (2, 3, height, width)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = scale_rgb_to_cover(image, width, height)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("size", [(1920, 1080), (1280, 720), (40, 24), (8, 8)])
def test_a_constant_image_stays_constant(size):
    """Weights sum to one: a flat colour scaled up or down (with the kernel's negative lobes) is the
    same colour everywhere, to float precision and exactly in 8 bits."""
    frames = torch.full((1, 3, 64, 64), 0.37)
    frames[:, 1] = -0.8
    out = scale_to_cover(frames, *size)
    assert torch.allclose(out[:, 0], torch.tensor(0.37), atol=1e-5)
    assert torch.allclose(out[:, 1], torch.tensor(-0.8), atol=1e-5)
    image = np.zeros((64, 64, 3), np.uint8)
    image[...] = (200, 17, 255)
    assert (scale_rgb_to_cover(image, *size) == np.array([200, 17, 255], np.uint8)).all()


def test_the_same_size_is_untouched():
    """No scaling when the size already matches (render at the model's size stays bit-exact)."""
    frames = torch.rand(1, 3, 64, 64)
    assert fit_frames(frames, 64, 64) is frames
    assert torch.allclose(axis_weights(64, 64), torch.eye(64), atol=1e-6)


def test_a_downscale_averages_fine_detail_instead_of_aliasing():
    """A one-pixel checkerboard (the finest detail there is) scaled to under a quarter is mid-grey: the
    kernel widens by the factor and averages. Nearest keeps full-contrast moiré."""
    checker = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(checker[..., None], 3, axis=2)
    ours = scale_rgb_to_cover(image, 60, 60).astype(np.float64)
    assert abs(ours.mean() - 127.5) < 2 and ours.std() < 3
    nearest = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(60, 60), mode="nearest")
    assert nearest.std() > 100  # the moiré that the anti-aliasing prevents


def _edge_profile(scale: str, size: int = 1080) -> np.ndarray:
    """One row across a vertical black/white edge in the middle of a 64 px frame, scaled to size x size."""
    frame = -torch.ones(1, 3, 64, 64)
    frame[..., 32:] = 1.0
    if scale == "lanczos":
        out = scale_to_cover(frame, size, size)
    else:
        out = F.interpolate(frame, size=(size, size), mode=scale, **({} if scale == "nearest" else {"align_corners": False}))
    return out[0, 0, size // 2].numpy()


def test_a_64_px_edge_on_1080p_has_no_blocky_steps_and_stays_sharp():
    """Scaled 64 -> 1080 (16.9x): nearest jumps black to white between two neighbouring output
    pixels (a block edge); Lanczos rises over several pixels (no step bigger than a quarter of the
    rise), yet within two source pixels (17 output pixels per source pixel), so it is not smeared."""
    nearest, ours = _edge_profile("nearest"), _edge_profile("lanczos")
    rise = ours.max() - ours.min()
    assert np.abs(np.diff(nearest)).max() == pytest.approx(2.0)
    assert np.abs(np.diff(ours)).max() < 0.25 * rise
    rising = np.flatnonzero((ours > -0.8) & (ours < 0.8))  # from 10 % to 90 % of black -> white
    assert 0 < rising.size <= 2 * 1080 / 64


def test_a_64_px_gradient_on_1080p_has_no_bilinear_creases():
    """A smooth ramp with a bend (a triangle wave, one bend per 8 source pixels) scaled 17x: bilinear's
    slope changes abruptly at every source pixel (creases the eye sees as a grid), Lanczos' slope
    changes gradually. Measured as the largest change of slope between neighbouring output pixels."""
    x = np.arange(64)
    tri = np.abs((x % 16) - 8) / 8.0 * 2 - 1
    frame = torch.from_numpy(np.tile(tri, (64, 1))).float()[None, None].repeat(1, 3, 1, 1)
    bilinear = F.interpolate(frame, size=(1080, 1080), mode="bilinear", align_corners=False)[0, 0, 540].numpy()
    ours = scale_to_cover(frame, 1080, 1080)[0, 0, 540].numpy()
    crease = lambda row: np.abs(np.diff(row[60:-60], n=2)).max()  # noqa: E731 - away from the borders
    assert crease(ours) < 0.5 * crease(bilinear)


def test_cover_crop_matches_the_render_convention():
    """A square frame covering 16:9 is scaled to the width and cropped top and bottom, centred."""
    assert cover_crop(64, 64, 1920, 1080) == (1920, 1920, 0, 420)
    assert cover_crop(64, 64, 1080, 1920) == (1920, 1920, 420, 0)
    assert cover_crop(48, 32, 48, 32) == (48, 32, 0, 0)


def test_the_crop_is_the_middle_of_the_full_scale():
    """Folding the crop into the weights gives the same pixels as scaling whole and cropping after."""
    frames = torch.rand(1, 3, 64, 64)
    whole = scale_to_cover(frames, 300, 300)
    assert torch.allclose(scale_to_cover(frames, 300, 160), whole[:, :, 70:230], atol=1e-5)


@pytest.mark.parametrize("source, scaled, start, count", [
    (64, 1280, 0, 1280), (64, 1280, 280, 720), (64, 720, 0, 720), (48, 1000, 3, 997), (7, 1366, 5, 1300),
    (256, 60, 0, 60), (100, 64, 0, 64), (64, 17, 2, 15), (5, 3, 0, 3), (64, 64, 0, 64),
])
def test_the_fast_polyphase_form_is_the_weight_matrix(source, scaled, start, count):
    """What runs (`axis_plan`: windows stepping through the source, one small kernel per phase) gives
    the same pixels as the resampling's definition as a matrix (`axis_weights`), for enlarging,
    shrinking, odd ratios and crops."""
    x = torch.rand(2, 3, source)
    assert torch.allclose(axis_plan(source, scaled, start, count).apply(x),
                          x @ axis_weights(source, scaled, start, count).T, atol=1e-5)
