"""Procedural scenes for looks no package ships: flames, night, cloudy sky, city road; and rain streaks.

A scene is built once from a seeded generator (its layout, colours and noise) and then drawn at any
time t (seconds), so a clip's frames move (flames rise, clouds drift, stars twinkle, lane marks pass)
while an image is the scene at one random t. Everything is numpy; scenes are drawn at twice the
output size and averaged down (anti-aliasing).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Frame = np.ndarray  # float32 [size, size, 3] in [0, 1]
Scene = Callable[[float], Frame]


class ValueNoise:
    """Smooth 2-D value noise on a periodic lattice, summed over octaves (fractal Brownian motion)."""

    def __init__(self, rng: np.random.Generator, period: int = 64, octaves: int = 4):
        self.period = period
        self.lattices = [rng.random((period, period)).astype(np.float32) for _ in range(octaves)]

    @staticmethod
    def _one(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = lattice.shape[0]
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        xi, yi = x0.astype(np.int64) % p, y0.astype(np.int64) % p
        xj, yj = (xi + 1) % p, (yi + 1) % p
        top = lattice[yi, xi] * (1 - fx) + lattice[yi, xj] * fx
        bottom = lattice[yj, xi] * (1 - fx) + lattice[yj, xj] * fx
        return top * (1 - fy) + bottom * fy

    def fbm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Noise in about [0, 1] at lattice coordinates (x, y); octave k at 2^k frequency, 0.5^k amplitude."""
        total = np.zeros(np.broadcast(x, y).shape, dtype=np.float32)
        amp, norm = 1.0, 0.0
        for k, lattice in enumerate(self.lattices):
            total += amp * self._one(lattice, x * 2**k + 17.3 * k, y * 2**k + 9.1 * k)
            norm += amp
            amp *= 0.5
        return total / norm


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel centres in [0, 1), each [n, n]; y grows downwards."""
    axis = ((np.arange(n) + 0.5) / n).astype(np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x, y


def _downsample2(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return img[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).mean(axis=(1, 3)).astype(np.float32)


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = w[..., None] if w.ndim == 2 else w
    return a * (1 - w) + b * w


def _vertical_gradient(y: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return _mix(np.asarray(top, np.float32), np.asarray(bottom, np.float32), y)


# --- flames -----------------------------------------------------------------------------------------

_FIRE_STOPS = np.array([0.0, 0.25, 0.5, 0.72, 0.9, 1.0], dtype=np.float32)
_FIRE_COLOURS = np.array([[0.02, 0.0, 0.0], [0.45, 0.03, 0.0], [0.95, 0.3, 0.02], [1.0, 0.62, 0.08],
                          [1.0, 0.88, 0.35], [1.0, 0.98, 0.85]], dtype=np.float32)


def _fire_colour(heat: np.ndarray) -> np.ndarray:
    h = np.clip(heat, 0.0, 1.0)
    return np.stack([np.interp(h, _FIRE_STOPS, _FIRE_COLOURS[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def flames(rng: np.random.Generator, size: int) -> Scene:
    """Fire: flame tongues of rising noise over a dark background and an ember bed, often logs and sparks."""
    n = 2 * size
    x, y = _grid(n)
    up = 1.0 - y  # height above the bottom
    noise = ValueNoise(rng, octaves=5)
    tongues = rng.integers(1, 6)
    centres = rng.uniform(0.15, 0.85, tongues)
    widths = rng.uniform(0.08, 0.25, tongues)
    heights = rng.uniform(0.45, 0.95, tongues)
    envelope = np.zeros_like(x)
    for c, w, h in zip(centres, widths, heights):
        envelope = np.maximum(envelope, h * np.exp(-0.5 * ((x - c) / w) ** 2))
    base = rng.uniform(0.0, 0.15)  # height of the fire's bed
    speed = rng.uniform(0.6, 1.4)
    scale = rng.uniform(2.5, 5.0)
    background = _vertical_gradient(y, rng.uniform(0, 0.05, 3) * [1, 0.3, 0.3], np.array([0.12, 0.03, 0.01]) * rng.uniform(0.5, 1.2))
    logs = np.zeros_like(x, dtype=bool)  # 0-3 dark logs across the bottom, in front of the flames
    for _ in range(int(rng.integers(0, 4))):
        x1, x2 = sorted(rng.uniform(0.05, 0.95, 2))
        y1, y2 = rng.uniform(0.02, base + 0.08, 2)
        thick = rng.uniform(0.025, 0.05)
        dx, dy = x2 - x1, y2 - y1
        along = np.clip(((x - x1) * dx + (up - y1) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        logs |= np.hypot(x - x1 - along * dx, up - y1 - along * dy) < thick
    log_colour = np.array([0.07, 0.035, 0.015], np.float32) * rng.uniform(0.6, 1.4)
    sparks = rng.uniform(0, 1, (int(rng.integers(0, 25)), 2)).astype(np.float32)
    spark_speed = rng.uniform(0.1, 0.3)

    def draw(t: float) -> Frame:
        turbulence = noise.fbm(x * scale, (up - speed * t) * scale * 1.5)
        height = np.maximum(envelope * (0.85 + 0.3 * noise.fbm(x * 3 + 40, np.full_like(x, t * 0.7))), 1e-3)
        heat = 1.15 * (1 - np.clip((up - base) / height, 0, None)) - 0.9 * (turbulence - 0.35) * (0.4 + up)
        heat = np.where(up < base, 0.5 + 0.35 * turbulence, heat)  # the ember bed
        img = _fire_colour(heat)
        glow = np.clip(heat, 0, 1)[..., None]
        img = np.maximum(img, background * (1 - glow))
        img[logs] = img[logs] * 0.15 + log_colour
        for sx, sy in sparks:
            py = (sy + spark_speed * t) % 1.0
            px = sx + 0.03 * np.sin(7 * t + 10 * sx)
            d2 = (x - px) ** 2 + (up - py) ** 2
            img += (np.exp(-d2 / (2 * 0.006**2)) * (1 - py))[..., None] * np.array([1.0, 0.6, 0.1], np.float32)
        return np.clip(_downsample2(img), 0, 1)

    return draw


# --- night ------------------------------------------------------------------------------------------


def night(rng: np.random.Generator, size: int) -> Scene:
    """Night: a dark blue sky with twinkling stars, often a moon, a black tree line or hills, fireflies."""
    n = 2 * size
    x, y = _grid(n)
    top = np.array([0.0, 0.01, 0.05]) + rng.uniform(0, 0.03, 3) * [0.3, 0.5, 1]
    low = np.array([0.03, 0.07, 0.2]) + rng.uniform(-0.02, 0.05, 3) * [0.5, 0.7, 1]
    sky = _vertical_gradient(np.clip(y * 1.3, 0, 1), top, low)
    noise = ValueNoise(rng, octaves=4)
    horizon = rng.uniform(0.55, 0.85)
    ridge = horizon + 0.12 * (noise.fbm(x[0] * 3, np.zeros_like(x[0])) - 0.5)
    if rng.random() < 0.6:  # conifer tops along the ridge
        spikes = np.abs(((x[0] * rng.uniform(12, 30)) % 1.0) - 0.5) * 2
        ridge = ridge - rng.uniform(0.03, 0.09) * (1 - spikes) * (noise.fbm(x[0] * 9, np.ones_like(x[0])) > 0.45)
    ground = y >= ridge[None, :]
    stars = rng.uniform(0, 1, (int(rng.integers(30, 160)), 2)).astype(np.float32)
    star_level = rng.uniform(0.3, 1.0, len(stars)) ** 2
    star_phase = rng.uniform(0, 2 * np.pi, len(stars))
    star_rate = rng.uniform(1.0, 4.0, len(stars))
    moon = None
    if rng.random() < 0.65:
        moon = (rng.uniform(0.15, 0.85), rng.uniform(0.1, horizon - 0.2), rng.uniform(0.03, 0.08), rng.uniform(0, 1))
    flies = rng.uniform(0, 1, (int(rng.integers(0, 12)), 2)).astype(np.float32)
    fly_phase = rng.uniform(0, 2 * np.pi, (len(flies), 3))
    pan = rng.uniform(-0.01, 0.01)
    ground_colour = np.array([0.005, 0.01, 0.02]) + rng.uniform(0, 0.015, 3)

    def draw(t: float) -> Frame:
        img = sky.copy()
        px = (stars[:, 0] + pan * t) % 1.0
        xi = np.clip((px * n).astype(int), 0, n - 1)
        yi = np.clip((stars[:, 1] * horizon * n).astype(int), 0, n - 1)
        twinkle = star_level * (0.7 + 0.3 * np.sin(star_rate * t + star_phase))
        img[yi, xi] += (twinkle[:, None] * np.array([0.9, 0.92, 1.0]))
        if moon is not None:
            mx, my, r, phase = moon
            d = np.hypot(x - mx, y - my)
            disk = _smoothstep(r, r * 0.9, d)
            shadow = _smoothstep(r, r * 0.85, np.hypot(x - mx - r * (0.4 + phase), y - my + r * 0.2)) * (phase < 0.5)
            glow = np.exp(-((d / (r * 3.5)) ** 2)) * 0.25
            img += (glow[..., None] * np.array([0.5, 0.55, 0.7]))
            img = _mix(img, np.array([0.95, 0.93, 0.8], np.float32), np.clip(disk - shadow, 0, 1))
        img[ground] = ground_colour
        for (fx, fy), (a, b, c) in zip(flies, fly_phase):
            cx = fx + 0.04 * np.sin(0.5 * t + a)
            cy = horizon + (1 - horizon) * fy * 0.9 - 0.1 + 0.03 * np.sin(0.7 * t + b)
            blink = 0.5 + 0.5 * np.sin(1.5 * t + c)
            d2 = (x - cx) ** 2 + (y - cy) ** 2
            img += (blink * np.exp(-d2 / (2 * 0.008**2)))[..., None] * np.array([0.8, 1.0, 0.3], np.float32)
        return np.clip(_downsample2(img), 0, 1)

    return draw


# --- sky with clouds ---------------------------------------------------------------------------------


def cloudy_sky(rng: np.random.Generator, size: int) -> Scene:
    """A blue sky with white clouds drifting sideways (the wind's look)."""
    n = 2 * size
    x, y = _grid(n)
    top = np.array([0.12, 0.3, 0.7]) + rng.uniform(-0.06, 0.08, 3)
    low = np.array([0.55, 0.72, 0.9]) + rng.uniform(-0.08, 0.06, 3)
    sky = _vertical_gradient(y, top, low)
    noise = ValueNoise(rng, octaves=5)
    scale = rng.uniform(1.5, 4.0)
    stretch = rng.uniform(1.0, 2.5)  # clouds wider than tall
    cover = rng.uniform(0.35, 0.6)
    wind = rng.uniform(0.04, 0.12) * rng.choice([-1, 1])
    grey = rng.uniform(0.6, 0.9)

    def draw(t: float) -> Frame:
        d = noise.fbm((x - wind * t) * scale / stretch * 2, y * scale * 2)
        c = _smoothstep(cover, cover + 0.2, d)
        shade = 1.0 - (1 - grey) * _smoothstep(0.4, 1.0, noise.fbm((x - wind * t) * scale * 2 + 5, y * scale * 2 + 5))
        cloud = np.stack([shade * 0.97, shade * 0.97, shade], axis=-1)
        return np.clip(_downsample2(_mix(sky, cloud, c)), 0, 1)

    return draw


# --- city road ---------------------------------------------------------------------------------------


def city_road(rng: np.random.Generator, size: int) -> Scene:
    """A road in perspective to a skyline of buildings with windows; lane marks come towards the viewer."""
    n = 2 * size
    x, y = _grid(n)
    horizon = rng.uniform(0.4, 0.55)
    vx = rng.uniform(0.35, 0.65)
    dusk = rng.random() < 0.3
    top = np.array([0.45, 0.6, 0.8]) if not dusk else np.array([0.2, 0.2, 0.4])
    low = np.array([0.8, 0.82, 0.85]) if not dusk else np.array([0.9, 0.55, 0.35])
    sky = _vertical_gradient(np.clip(y / horizon, 0, 1), top + rng.uniform(-0.05, 0.05, 3), low + rng.uniform(-0.05, 0.05, 3))
    img0 = sky.copy()
    # skyline: rectangles standing on the horizon, with window grids
    left = 0.0
    while left < 1.0:
        w = rng.uniform(0.05, 0.16)
        h = rng.uniform(0.06, 0.38) * (0.6 + 0.8 * abs(left + w / 2 - vx))
        tone = rng.uniform(0.25, 0.6)
        colour = tone * np.array([1.0, 0.97, 0.92]) * rng.uniform(0.85, 1.1, 3)
        block = (x >= left) & (x < left + w) & (y >= horizon - h) & (y < horizon)
        img0[block] = colour * (0.6 if dusk else 1.0)
        cols, rows = rng.uniform(0.015, 0.03), rng.uniform(0.02, 0.035)
        win = block & (((x - left) % cols) < cols * 0.5) & (((y - horizon) % rows) < rows * 0.45)
        lit = np.array([1.0, 0.85, 0.45]) if dusk else colour * 0.55
        img0[win] = lit
        left += w + rng.uniform(0.0, 0.02)
    # ground and road below the horizon
    below = y >= horizon
    depth = np.where(below, (y - horizon) / (1 - horizon), 1.0)  # 0 at the horizon, 1 at the bottom
    half = np.maximum(depth, 1e-4) * rng.uniform(0.55, 0.9)  # road half-width on screen
    side = rng.uniform(0.45, 0.65) * np.array([1.0, 0.97, 0.9])
    img0[below] = side
    asphalt = rng.uniform(0.18, 0.35)
    road = below & (np.abs(x - vx) < half)
    img0[road] = asphalt
    edge = road & (np.abs(np.abs(x - vx) - half * 0.93) < half * 0.025)
    img0[edge] = 0.9
    mark = np.array([0.95, 0.85, 0.2]) if rng.random() < 0.4 else np.array([0.95, 0.95, 0.95])
    centre = road & (np.abs(x - vx) < half * 0.025)
    speed = rng.uniform(1.5, 4.0)
    road_half = float(half.max() / max(float(depth.max()), 1e-3))  # half-width per unit of depth
    cars = [(rng.uniform(0.15, 0.95), rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.45), rng.uniform(-0.08, 0.08),
             rng.uniform(0.1, 0.9, 3) * rng.choice([0.4, 1.0])) for _ in range(int(rng.integers(0, 4)))]

    def draw(t: float) -> Frame:
        img = img0.copy()
        z = 1.0 / np.maximum(depth, 1e-3)  # distance along the road
        dashes = centre & (((z + speed * t) % 2.0) < 1.0)
        img[dashes] = mark
        for d0, lane, drift, colour in sorted(cars, key=lambda c: c[0]):  # far cars first
            d = 0.1 + (d0 + drift * t - 0.1) % 0.9  # depth on screen, 0.1 .. 1
            w = road_half * d * 0.6
            cx, bottom = vx + lane * road_half * d, horizon + d * (1 - horizon)
            body = (np.abs(x - cx) < w / 2) & (y < bottom) & (y > bottom - w * 0.55)
            img[body] = colour
            lights = body & (y > bottom - w * 0.25) & (y < bottom - w * 0.12) & (np.abs(np.abs(x - cx) - w * 0.35) < w * 0.1)
            img[lights] = [1.0, 0.15, 0.1]
        return np.clip(_downsample2(img), 0, 1)

    return draw


# --- rain overlay --------------------------------------------------------------------------------------


def rain_overlay(rng: np.random.Generator, size: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """Falling rain streaks (and a grey veil) drawn over a picture [size, size, 3] at time t."""
    x, y = _grid(size)
    drops = rng.uniform(0, 1, (int(rng.integers(40, 160)), 2)).astype(np.float32)
    drop_level = rng.uniform(0.3, 1.0, len(drops)).astype(np.float32)  # near and far drops
    length = rng.uniform(0.05, 0.14)
    slant = rng.uniform(-0.25, 0.25)
    speed = rng.uniform(1.2, 2.5)
    strength = rng.uniform(0.2, 0.45)
    veil = rng.uniform(0.1, 0.35)
    grey = np.array([0.6, 0.65, 0.7], np.float32)

    def draw(picture: np.ndarray, t: float) -> np.ndarray:
        img = _mix(picture * 0.85, grey, np.full(picture.shape[:2], veil, np.float32))
        streaks = np.zeros(picture.shape[:2], np.float32)
        for (dx, dy), level in zip(drops, drop_level):
            cy = (dy + speed * t) % 1.0
            along = cy - y
            cx = dx + slant * along
            streak = (np.abs(x - cx) < 0.6 / size) * (along >= 0) * (along < length) * (1 - along / length)
            streaks = np.maximum(streaks, level * streak)
        return np.clip(img + strength * streaks[..., None] * np.array([0.8, 0.85, 0.9], np.float32), 0, 1)

    return draw


PROCEDURAL: dict[str, Callable[[np.random.Generator, int], Scene]] = {
    "fire": flames,
    "night": night,
    "wind": cloudy_sky,
    "engine": city_road,
}
