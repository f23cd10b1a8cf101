"""What the demo set is made of: the six classes, the chosen sound files and photographs, what is held
out, and the Debian packages they come from with their licences and credits.

Paths are relative to the source root (`--source-root`, default "/"), so tests can point it at a small
fake tree with the same layout. OpenSFX ships its samples in one catalogue file (`opensfx.cat`); a sample
is named by its index there, and its credit is the text the catalogue stores with it.

Choices, and why (from listening to and measuring the installed packages' files):

* `winter/sounds/wind.ogg` is the same recording as the held-out `winter_forest/sounds/wind.ogg`
  (sample correlation 0.999 at lag 0, only the gain differs), so it is used nowhere.
* `hell/sounds/hell.ogg` is a low drone (spectral centroid ~12 Hz), not fire; `desert2` day/night and
  `autumn/sunny_day` are low-frequency ambiences without birds or insects: none is used.
* Fire: the one real crackle in the packages is megaglest's `wicker_fire.wav` (3.3 s of dense broadband
  clicks); its last 1.5 s are held out, its first 1.8 s train, with the fire-arrow impacts (whoosh and
  crackle tails) and a procedural crackle (`sounds.procedural_crackle`) to have enough fire to train on.
* Wind: OpenSFX 52 and 57 ("Wind", "Heavy wind") are the same samples (correlation 1.0), so only 52
  is used, and half of the wind training clips are a procedural wind (`sounds.procedural_wind`): noise
  in the band the real winds have (300-1200 Hz, nothing above ~2.4 kHz) with slow gusts.
* Engine: road vehicles, a diesel locomotive, two propeller planes and a helicopter; jets are left out
  (their roar is close to wind). Held out: the two bus starts, whose source recordings nothing else uses
  (the Toyland variants that reuse them are not used).
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = ("rain", "birds", "insects", "wind", "engine", "fire")

LOOKS: dict[str, str] = {
    "rain": "water in the rain (lake photographs with falling rain streaks)",
    "birds": "green forest (forest photographs)",
    "insects": "night (procedural: dark blue starry sky, moon, tree line, fireflies)",
    "wind": "sky with moving cloud (sky photograph crops and procedural cloud skies)",
    "engine": "city road (procedural: road in perspective with lane markings, buildings)",
    "fire": "flames (procedural animated noise-based fire)",
}

# Order of the classes in the demo walk (a day into night: birds first, insects last).
WALK_ORDER: tuple[str, ...] = ("birds", "wind", "rain", "engine", "fire", "insects")

MEGAGLEST = "megaglest-data"
OPENSFX = "openttd-opensfx"
WALLPAPERS = "plasma-workspace-wallpapers"

# A file that exists once each package is installed (relative to the source root).
PACKAGE_MARKERS: dict[str, str] = {
    MEGAGLEST: "usr/share/games/megaglest/tilesets/autumn/sounds/rain.ogg",
    OPENSFX: "usr/share/games/openttd/baseset/opensfx/opensfx.cat",
    WALLPAPERS: "usr/share/wallpapers/Path/metadata.json",
}

TILESETS = "usr/share/games/megaglest/tilesets"
FACTIONS = "usr/share/games/megaglest/techs/megapack/factions"
OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
WALLPAPER_ROOT = "usr/share/wallpapers"

MEGAGLEST_LICENCE = "CC-BY-SA-3.0"
OPENSFX_LICENCE = "CC-BY-SA-3.0"  # the collection as a whole (debian/copyright); each sample's own note is in its credit
PACKAGE_LICENCE_NOTES: dict[str, str] = {
    MEGAGLEST: "/usr/share/doc/megaglest-data/copyright (Files: * CC-BY-SA-3.0); "
               "/usr/share/games/megaglest/docs/AUTHORS.data.txt",
    OPENSFX: "/usr/share/doc/openttd-opensfx/copyright (src/wav/*: CC-BY-SA-3.0 as a collection; samples "
             "CC-BY 3.0, CC-BY-SA 3.0 or CC0 each); per-sample credits are stored in opensfx.cat",
    WALLPAPERS: "/usr/share/doc/plasma-workspace-wallpapers/copyright (Files: * GPL-2+); each wallpaper's "
                "metadata.json names its author and licence",
}

_GLEST = "The Glest Team (2001-2011), partial copyright The MegaGlest Team (2010-2011)"
_TITI = "Titus Tscharntke (titi)"


@dataclass(frozen=True)
class SoundSource:
    """One recording (or a span of one) used for one class."""

    name: str  # short, unique, used in file names
    label: str  # class
    package: str
    path: str  # relative to the source root
    use: str  # "train" or "heldout"
    credit: str  # as the package states it (OpenSFX: replaced by the catalogue's own text when read)
    licence: str
    cat_index: int | None = None  # OpenSFX catalogue entry
    start: float = 0.0  # seconds
    end: float | None = None  # seconds; None: to the end

    @property
    def file(self) -> str:
        """The file as a person finds it (a catalogue entry is named `opensfx.cat#N`)."""
        return f"/{self.path}" + (f"#{self.cat_index}" if self.cat_index is not None else "")

    @property
    def span_text(self) -> str:
        if self.start == 0.0 and self.end is None:
            return ""
        return f"{self.start:g}-{self.end:g} s" if self.end is not None else f"from {self.start:g} s"


def _mg(name: str, label: str, rel: str, use: str, credit: str, start: float = 0.0, end: float | None = None,
        base: str = TILESETS) -> SoundSource:
    return SoundSource(name, label, MEGAGLEST, f"{base}/{rel}", use, credit, MEGAGLEST_LICENCE, None, start, end)


def _sfx(name: str, label: str, index: int, use: str) -> SoundSource:
    return SoundSource(name, label, OPENSFX, OPENSFX_CAT, use, f"OpenSFX sample {index}", OPENSFX_LICENCE, index)


SOUNDS: tuple[SoundSource, ...] = (
    # rain
    _mg("rain-birch-forest", "rain", "birch_forest/sounds/rain.ogg", "train", f"MegaGlest tileset Birch Forest by {_TITI}"),
    _mg("rain-dark-forest", "rain", "dark_forest/sounds/rain.ogg", "train", "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("rain-desert2", "rain", "desert2/sounds/rain.wav", "train", f"MegaGlest tileset Desert2 by Idanwin and {_TITI}"),
    _mg("rain-autumn", "rain", "autumn/sounds/rain.ogg", "heldout", f"MegaGlest tileset Autumn by {_TITI}"),
    # birds (daytime forest ambiences)
    _mg("birds-dark-forest", "birds", "dark_forest/sounds/day.ogg", "train", "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("birds-fernland", "birds", "fernland/sounds/day.ogg", "train", f"MegaGlest tileset Fernland by {_TITI}"),
    _mg("birds-spring", "birds", "spring/sounds/day.ogg", "train",
        "MegaGlest tileset Spring by Philipp Tscharntke; dobroide (forum.freegamedev.net) for spring ambiente daytime background sounds"),
    _mg("birds-mediterran", "birds", "mediterran/sounds/desertday.ogg", "train", f"MegaGlest tileset Mediterran by {_TITI}"),
    _sfx("birds-opensfx-66", "birds", 66, "train"),
    _mg("birds-birch-forest", "birds", "birch_forest/sounds/day.ogg", "heldout", f"MegaGlest tileset Birch Forest by {_TITI}"),
    # insects (night ambiences)
    _mg("insects-dark-forest", "insects", "dark_forest/sounds/night.ogg", "train", "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("insects-fernland", "insects", "fernland/sounds/night.ogg", "train", f"MegaGlest tileset Fernland by {_TITI}"),
    _mg("insects-mediterran", "insects", "mediterran/sounds/night.ogg", "train", f"MegaGlest tileset Mediterran by {_TITI}"),
    _mg("insects-birch-forest", "insects", "birch_forest/sounds/night.ogg", "train", f"MegaGlest tileset Birch Forest by {_TITI}"),
    _mg("insects-autumn", "insects", "autumn/sounds/nightime.ogg", "heldout",
        f"MegaGlest tileset Autumn by {_TITI}; Elimnator (www.soundbible.com) for the autumn night sound"),
    # wind (megaglest's winter/sounds/wind.ogg is the held-out recording again: not used)
    _sfx("wind-opensfx-52", "wind", 52, "train"),  # 57 ("Heavy wind") is the same samples: not used
    _mg("wind-winter-forest", "wind", "winter_forest/sounds/wind.ogg", "heldout", "MegaGlest tileset Winter Forest, The MegaGlest Team"),
    # engine
    _sfx("engine-opensfx-25", "engine", 25, "train"),
    _sfx("engine-opensfx-26", "engine", 26, "train"),
    _sfx("engine-opensfx-10", "engine", 10, "train"),
    _sfx("engine-opensfx-8", "engine", 8, "train"),
    _sfx("engine-opensfx-24", "engine", 24, "train"),
    _sfx("engine-opensfx-69", "engine", 69, "train"),  # "Toyland" only in name: a real propeller recording
    _sfx("engine-opensfx-27", "engine", 27, "heldout"),
    _sfx("engine-opensfx-28", "engine", 28, "heldout"),
    # fire
    _mg("fire-wicker", "fire", "magic/units/wicker_behemoth/sounds/wicker_fire.wav", "train",
        f"MegaGlest faction Magic (wicker behemoth), {_GLEST}", 0.0, 1.8, base=FACTIONS),
    *(_mg(f"fire-arrow-hit{i}", "fire", f"indian/units/fire_archer/sounds/firearrowhit{i}.wav", "train",
          "MegaGlest faction Indians (fire archer), Titus Tscharntke and Philipp Tscharntke", base=FACTIONS)
      for i in (1, 2, 3, 4)),
    _mg("fire-wicker-end", "fire", "magic/units/wicker_behemoth/sounds/wicker_fire.wav", "heldout",
        f"MegaGlest faction Magic (wicker behemoth), {_GLEST}", 1.8, None, base=FACTIONS),
)

# Shares of training clips that are procedural sounds (`sounds.PROCEDURAL_SOUNDS`): the packages hold
# only ~6 s of real fire besides the held-out span, and 2.7 s of wind besides the held-out recording.
PROCEDURAL_SOUND_SHARE: dict[str, float] = {"fire": 0.35, "wind": 0.5}


@dataclass(frozen=True)
class PhotoSource:
    """A wallpaper photograph used for one class's look."""

    wallpaper: str  # folder in /usr/share/wallpapers
    label: str
    note: str  # what it shows, and which part is used
    top: float = 0.0  # crops are taken from rows top..bottom of the picture (fractions)
    bottom: float = 1.0

    @property
    def folder(self) -> str:
        return f"{WALLPAPER_ROOT}/{self.wallpaper}"


PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource("BytheWater", "rain", "lake and a wooden pier", 0.2, 1.0),
    PhotoSource("ColdRipple", "rain", "grey misty lake with a pier", 0.3, 1.0),
    PhotoSource("summer_1am", "rain", "lake at dusk", 0.35, 1.0),
    PhotoSource("Path", "birds", "forest path among pines and ferns"),
    PhotoSource("OneStandsOut", "birds", "pine canopy seen from above"),
    PhotoSource("Kite", "wind", "blue sky with white clouds (and a small kite)"),
)

# Share of each class's images that are photograph crops (the rest procedural); classes missing here
# are all photographs (rain, birds) or all procedural (insects, engine, fire).
PHOTO_SHARE: dict[str, float] = {"rain": 1.0, "birds": 1.0, "wind": 0.5, "insects": 0.0, "engine": 0.0, "fire": 0.0}


def sounds_of(label: str, use: str) -> list[SoundSource]:
    return [s for s in SOUNDS if s.label == label and s.use == use]


def photos_of(label: str) -> list[PhotoSource]:
    return [p for p in PHOTOS if p.label == label]
