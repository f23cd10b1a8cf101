"""What the demo set is made of: the six classes, the chosen sound files and photographs, what is held
out, and the Debian packages they come from with their licences and credits.

A file is named by its package and its path inside the package (as installed); a sound inside an
archive the package ships (0ad's `public.zip`, UFO:AI's `0snd.pk3`, the OpenArena, Nexuiz and Trigger
Rally zips) also by its member in that archive; an OpenSFX sample by its index in `opensfx.cat`. The
builder reads every package from `ROOT/<package>/<path>` (`training.data.demo.packages`).

A *source* is a package: each class has several (at least five), so that the set teaches the kind of
sound and not one recording's quirks. Every file was measured before it was chosen (duration, level,
spectral centroid and bandwidth, onset density, and a pretrained sound-effects embedding with a
logistic check of each file against the other packages' classes); the one-line `why` of each file
says what it sounds like. Files the measurements put in another class are not used (see NOT_USED).

Held out, chosen before any training:

* `heldout-source`: whole packages a class never trains on (HELDOUT_SOURCES), to measure whether the
  meaning holds on sources never heard. Per class: rain - flare-game (a 65 s steady rain, the largest
  rain besides 0ad's); birds - scorched3d-data (two songbird ambiences, 79 s); night - redeclipse-data
  (night crickets and cicadas, the plainest insect chorus); wind - megaglest-data (winter_forest
  wind, the recording the previous set held out); engine - searchandrescue-data (helicopters) and
  stormbaancoureur-data (a car), one air and one road vehicle; fire - minetest-data (four crackling
  fire loops, all clear fire in the check). Each is a different recording chain from every training
  source of its class (duplicates across packages are counted once: see DUPLICATES).
* `heldout`: spans or files of a training source that training never sees (the previous set's
  choices, plus the last span of a long 0ad recording), the same-source comparison.

Other choices: the megaglest `night.ogg` files are kept in `night` only where they are an insect
chorus (dark_forest, fernland); birch_forest's is discrete bird calls the embedding cannot tell from
day birdsong and mediterran's measured as rain, so neither is used. Jets, thunder, short one-shot
effects (gunfire "fire", fireballs, a fire starting) and files near 0 in their class are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = ("rain", "birds", "night", "wind", "engine", "fire")

LOOKS: dict[str, str] = {
    "rain": "water in the rain (lake photographs with falling rain streaks)",
    "birds": "green forest (forest photographs)",
    "night": "night (procedural: dark blue starry sky, moon, tree line, fireflies)",
    "wind": "sky with moving cloud (sky photograph crops and procedural cloud skies)",
    "engine": "city road (procedural: road in perspective with lane markings, buildings)",
    "fire": "flames (procedural animated noise-based fire)",
}

# Order of the classes in the demo walk (a day into night: birds first, night last).
WALK_ORDER: tuple[str, ...] = ("birds", "wind", "rain", "engine", "fire", "night")

USES: tuple[str, ...] = ("train", "heldout", "heldout-source")

WALLPAPERS = "plasma-workspace-wallpapers"
OPENSFX = "openttd-opensfx"
MEGAGLEST = "megaglest-data"


@dataclass(frozen=True)
class Package:
    """A Debian package the set reads: its licence and credit as its copyright file states them."""

    licence: str
    credit: str
    note: str  # where the licence and credits are stated


PACKAGES: dict[str, Package] = {
    "0ad-data": Package("CC-BY-SA-3.0", "0 A.D., Wildfire Games", "/usr/share/doc/0ad-data/copyright (Files: * CC-BY-SA-3.0)"),
    "7kaa-data": Package("GPL-2+", "Seven Kingdoms: Ancient Adversaries, Enlight Software Ltd.", "/usr/share/doc/7kaa-data/copyright (Files: * GPL-2+)"),
    "flare-game": Package("CC-BY-SA-3.0+", "Flare, Clint Bellanger and others", "/usr/share/doc/flare-game/copyright (Files: * CC-BY-SA-3.0+)"),
    "flightgear-data-base": Package("GPL-2+", "FlightGear, Curtis L. Olson and the FlightGear contributors", "/usr/share/doc/flightgear-data-base/copyright (Files: * GPL-2+)"),
    "lincity-ng-data": Package("GPL-2+", "LinCity-NG, I J Peters, Greg Sharp, Corey Keasling, Wolfgang Becker and others", "/usr/share/doc/lincity-ng-data/copyright (Files: * GPL-2+)"),
    "lugaru-data": Package("CC-BY-SA-3.0", "Lugaru, Wolfire Games", "/usr/share/doc/lugaru-data/copyright (Files: Data/* CC-BY-SA-3.0)"),
    MEGAGLEST: Package("CC-BY-SA-3.0", "MegaGlest, The Glest Team and The MegaGlest Team", "/usr/share/doc/megaglest-data/copyright (Files: * CC-BY-SA-3.0); /usr/share/games/megaglest/docs/AUTHORS.data.txt"),
    "minetest-data": Package("CC-BY-SA-3.0", "Minetest Game, celeron55 (Perttu Ahola) and contributors", "/usr/share/doc/minetest-data/copyright (Files: *.ogg CC-BY-SA-3.0)"),
    "nexuiz-data": Package("GPL-2+", "Nexuiz, Alientrap, Lee Vermeulen", "/usr/share/doc/nexuiz-data/copyright (GPL-2+)"),
    "openarena-data": Package("GPL-2+", "OpenArena Team", "/usr/share/doc/openarena-data/copyright (Files: * GPL-2+)"),
    OPENSFX: Package("CC-BY-SA-3.0", "OpenSFX", "/usr/share/doc/openttd-opensfx/copyright (src/wav/*: CC-BY-SA-3.0 as a collection; samples "
                     "CC-BY 3.0, CC-BY-SA 3.0 or CC0 each); per-sample credits are stored in opensfx.cat"),
    "redeclipse-data": Package("CC-BY-SA-3.0", "Red Eclipse Team", "/usr/share/doc/redeclipse-data/copyright (data/sounds/ambience/*, morph/*, wind.ogg)"),
    "scorched3d-data": Package("GPL-2+", "Scorched3D, Gavin Camp", "/usr/share/doc/scorched3d-data/copyright (Files: * GPL-2+; data/globalmods/apoc/* CC-BY-SA-3)"),
    "searchandrescue-data": Package("GPL", "Search and Rescue, WolfPack Entertainment", "/usr/share/doc/searchandrescue-data/copyright (GPL)"),
    "stormbaancoureur-data": Package("GPL-3", "Stormbaan Coureur, Bram Stolk", "/usr/share/doc/stormbaancoureur-data/copyright (GPL-3)"),
    "supertuxkart-data": Package("GPL-3+", "SuperTuxKart-Team", "/usr/share/doc/supertuxkart-data/copyright (per-file stanzas for data/sfx/*)"),
    "torcs-data": Package("GPL-2+", "TORCS, Eric Espie and the TORCS contributors", "/usr/share/doc/torcs-data/copyright (Files: * GPL-2+)"),
    "trigger-rally-data": Package("GPL-2+", "Trigger Rally, Jasmine Langridge", "/usr/share/doc/trigger-rally-data/copyright (data/data.zip GPL-2+)"),
    "ufoai-sound": Package("GPL-2+", "UFO: Alien Invasion, The UFO:AI Team", "/usr/share/doc/ufoai-sound/copyright (per-file stanzas)"),
    "widelands-data": Package("GPL-2+", "Widelands Development Team", "/usr/share/doc/widelands-data/copyright (Files: * GPL-2+)"),
    WALLPAPERS: Package("GPL-2+", "KDE Plasma wallpapers", "/usr/share/doc/plasma-workspace-wallpapers/copyright (Files: * GPL-2+); each "
                        "wallpaper's metadata.json names its author and licence"),
}

# Whole sources (packages) a class never trains on: its `heldout-source` files. See the module docstring.
HELDOUT_SOURCES: dict[str, tuple[str, ...]] = {
    "rain": ("flare-game",),
    "birds": ("scorched3d-data",),
    "night": ("redeclipse-data",),
    "wind": (MEGAGLEST,),
    "engine": ("searchandrescue-data", "stormbaancoureur-data"),
    "fire": ("minetest-data",),
}

# Archives inside packages (zips): sounds in them are named by member.
ZAD = "usr/share/games/0ad/mods/public/public.zip"
UFO = "usr/share/games/ufoai/base/0snd.pk3"
NEXUIZ = "usr/share/games/nexuiz/data/data.pk3"
OPENARENA = "usr/share/games/openarena/baseoa/pak0.pk3"
TRIGGER = "usr/share/games/trigger-rally/data.zip"

TILESETS = "usr/share/games/megaglest/tilesets"
FACTIONS = "usr/share/games/megaglest/techs/megapack/factions"
OPENSFX_CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
WALLPAPER_ROOT = "usr/share/wallpapers"
_REDECLIPSE = "usr/share/games/redeclipse/data/sounds/ambience"
_FLARE = "usr/share/games/flare/mods/fantasycore/soundfx/environment"
_SCORCHED = "usr/share/games/scorched3d/data/globalmods/none/data/wav/misc"
_WIDELANDS = "usr/share/games/widelands/data/sound/animals"
_FLIGHTGEAR = "usr/share/games/flightgear/Sounds"
_SAR = "usr/share/games/searchandrescue/sounds"
_TORCS = "usr/share/games/torcs/data/sound"
_LINCITY = "usr/share/games/lincity-ng/sounds"
_STK = "usr/share/games/supertuxkart/data"
_MINETEST = "usr/share/games/minetest/games/minetest_game/mods/fire/sounds"
_LUGARU = "usr/share/games/lugaru/Sounds"

_TITI = "Titus Tscharntke (titi)"
_GLEST = "The Glest Team (2001-2011), partial copyright The MegaGlest Team (2010-2011)"


@dataclass(frozen=True)
class SoundSource:
    """One recording (or a span of one) used for one class."""

    name: str  # short, unique, used in file names
    label: str  # class
    package: str  # the source: a Debian package
    path: str  # inside the package, as installed (no leading /)
    use: str  # "train", "heldout" (a span/file of a training source) or "heldout-source" (a held-out package)
    why: str  # one line: what it sounds like, and what the measurements said
    credit: str  # as the package states it (OpenSFX: replaced by the catalogue's own text when read)
    licence: str
    member: str | None = None  # inside an archive (zip) the package ships at `path`
    cat_index: int | None = None  # OpenSFX catalogue entry
    start: float = 0.0  # seconds
    end: float | None = None  # seconds; None: to the end

    @property
    def file(self) -> str:
        """The file as a person finds it once the package is installed (`archive!member`, `opensfx.cat#N`)."""
        return (f"/{self.path}" + (f"!{self.member}" if self.member is not None else "")
                + (f"#{self.cat_index}" if self.cat_index is not None else ""))

    @property
    def span_text(self) -> str:
        if self.start == 0.0 and self.end is None:
            return ""
        return f"{self.start:g}-{self.end:g} s" if self.end is not None else f"from {self.start:g} s"


def _s(name: str, label: str, package: str, path: str, use: str, why: str, member: str | None = None,
       credit: str | None = None, licence: str | None = None, start: float = 0.0, end: float | None = None,
       cat_index: int | None = None) -> SoundSource:
    info = PACKAGES[package]
    return SoundSource(name, label, package, path, use, why, credit or info.credit, licence or info.licence, member,
                       cat_index, start, end)


def _mg(name: str, label: str, rel: str, use: str, why: str, credit: str, start: float = 0.0, end: float | None = None,
        base: str = TILESETS) -> SoundSource:
    return _s(name, label, MEGAGLEST, f"{base}/{rel}", use, why, credit=credit, start=start, end=end)


def _sfx(name: str, label: str, index: int, use: str, why: str) -> SoundSource:
    return _s(name, label, OPENSFX, OPENSFX_CAT, use, why, credit=f"OpenSFX sample {index}", cat_index=index)


_RE_AMB = "Quinton \"quin\" Reeves, Alex \"blackshoe\" Anguix (Red Eclipse)"
_RE_MORPH = "Slawek \"Q009\" Blauciak (Red Eclipse)"
_UFO_SA = "\"Marine\" Baklund, Gren, Christian Hoffmann, Slippycurb (UFO:AI)"
_UFO_GPL = "Axis REC, Martin Gerhardy, Nexuiz, Max Neave, Michael \"Tenshihan\" Quinn (UFO:AI)"

SOUNDS: tuple[SoundSource, ...] = (
    # --- rain ------------------------------------------------------------------------------------------
    _s("rain-0ad-11", "rain", "0ad-data", ZAD, "train", "steady rain, broadband hiss, no thunder; centroid 3.0 kHz, level steady (±0.9 dB)",
       "audio/ambient/weather/rain_11.ogg", end=90.0),
    _s("rain-0ad-11-end", "rain", "0ad-data", ZAD, "heldout", "the last 30 s of the same steady rain (same-source held out)",
       "audio/ambient/weather/rain_11.ogg", start=90.0),
    _s("rain-0ad-12", "rain", "0ad-data", ZAD, "train", "softer steady rain, darker (centroid 1.7 kHz), no thunder",
       "audio/ambient/weather/rain_12.ogg"),
    _s("rain-redeclipse-morph", "rain", "redeclipse-data", f"{_REDECLIPSE}/morph/rain.ogg", "train",
       "bright close rain hiss (centroid 5.5 kHz), steady", credit=_RE_MORPH, licence="CC-BY-3.0"),
    _s("rain-redeclipse-storm", "rain", "redeclipse-data", f"{_REDECLIPSE}/morph/stormrain.ogg", "train",
       "heavy rain with a low storm bed, no thunder claps (level ±1.8 dB)", credit=_RE_MORPH, licence="CC-BY-3.0"),
    _s("rain-7kaa", "rain", "7kaa-data", "usr/share/games/7kaa/SOUND/RAIN.WAV", "train",
       "rain hiss (centroid 4.1 kHz), 5 s loop"),
    _s("rain-nexuiz", "rain", "nexuiz-data", NEXUIZ, "train", "rain on a surface with drips (centroid 1.0 kHz), 5 s loop",
       "sound/weather/rain_1.ogg"),
    _mg("rain-dark-forest", "rain", "dark_forest/sounds/rain.ogg", "train",
        "rain hiss (centroid 3.1 kHz), steady; supertuxkart's sfx/rain.ogg is the same recording (not used)",
        "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("rain-desert2", "rain", "desert2/sounds/rain.wav", "train",
        "heavy rain over a low storm rumble (centroid 0.15 kHz, level ±10.6 dB): its spectrogram is a steady "
        "broadband hiss throughout, with no tonal calls; the set's only dark rain besides autumn's (held out)",
        "MegaGlest tileset Desert2 by Idanwin and Titus Tscharntke (titi)"),
    _mg("rain-autumn", "rain", "autumn/sounds/rain.ogg", "heldout",
        "heavy rain with a strong low rumble (centroid 0.25 kHz); the previous set's held-out rain",
        f"MegaGlest tileset Autumn by {_TITI}"),
    _s("rain-flare", "rain", "flare-game", "usr/share/games/flare/mods/empyrean_campaign/soundfx/environment/rain.ogg",
       "heldout-source", "steady rain with drips, no thunder (centroid 1.7 kHz), 65 s"),
    # --- birds -----------------------------------------------------------------------------------------
    *(_s(f"birds-0ad-temperate-{k}", "birds", "0ad-data", ZAD, "train",
         "day birdsong over a quiet bed, many calls (centroid 4.4 kHz)", f"audio/ambient/dayscape/day_temperate_{k}.ogg")
      for k in ("11", "12", "13", "14")),
    _s("birds-0ad-temperate-gen-03", "birds", "0ad-data", ZAD, "train",
       "long day ambience of songbirds (centroid 3.6 kHz)", "audio/ambient/dayscape/day_temperate_gen_03.ogg"),
    *(_s(f"birds-0ad-tropical-{k}", "birds", "0ad-data", ZAD, "train",
         "tropical day birds (centroid 5.5 kHz)", f"audio/ambient/dayscape/day_tropical_{k}.ogg") for k in ("10", "11")),
    *(_s(f"birds-redeclipse-{k}", "birds", "redeclipse-data", f"{_REDECLIPSE}/{k}.ogg", "train",
         "forest ambience with birdsong (centroid 2.7-5.4 kHz)", credit=_RE_AMB) for k in ("forest1", "forest2", "forest3")),
    *(_s(f"birds-widelands-{k}", "birds", "widelands-data", f"{_WIDELANDS}/{k}.ogg", "train",
         "a songbird's call, 2-3 s (class check 0.6-0.98 birds)") for k in ("bird3_00", "bird5_00", "bird6_00")),
    *(_s(f"birds-lincity-{k.lower()}", "birds", "lincity-ng-data", f"{_LINCITY}/{k}.wav", "train",
         "bird chirps over silence (centroid 2.4-2.6 kHz), 4 s") for k in ("Green1", "Green3")),
    _s("birds-stk-exotic", "birds", "supertuxkart-data", f"{_STK}/sfx/exotic-birds.ogg", "train",
       "exotic birdsong (centroid 4.2 kHz)", credit="James \"swiftoid\" Swift (SuperTuxKart)", licence="CC0"),
    _s("birds-stk-exotic-2", "birds", "supertuxkart-data", f"{_STK}/sfx/exotic-birds_2.ogg", "train",
       "exotic birds with a low bed (class check 0.83 birds)", credit="\"mpfeiffer\" www.monoacustico.com (SuperTuxKart)",
       licence="CC0"),
    _s("birds-flare-twitter", "birds", "flare-game", f"{_FLARE}/bird_twitter_loop.ogg", "train",
       "bird twitter loop (centroid 3.7 kHz)"),
    _mg("birds-dark-forest", "birds", "dark_forest/sounds/day.ogg", "train", "daytime forest birdsong (centroid 2.7 kHz)",
        "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("birds-fernland", "birds", "fernland/sounds/day.ogg", "train", "day ambience with birds (centroid 1.9 kHz)",
        f"MegaGlest tileset Fernland by {_TITI}"),
    _mg("birds-spring", "birds", "spring/sounds/day.ogg", "train", "spring daytime birdsong (centroid 3.0 kHz)",
        "MegaGlest tileset Spring by Philipp Tscharntke; dobroide (forum.freegamedev.net) for spring ambiente daytime background sounds"),
    _mg("birds-mediterran", "birds", "mediterran/sounds/desertday.ogg", "train", "warm day ambience with birds (centroid 3.8 kHz)",
        f"MegaGlest tileset Mediterran by {_TITI}"),
    _sfx("birds-opensfx-66", "birds", 66, "train", "OpenSFX birdsong ambience"),
    _mg("birds-birch-forest", "birds", "birch_forest/sounds/day.ogg", "heldout",
        "daytime birdsong (centroid 3.2 kHz); the previous set's held-out birds", f"MegaGlest tileset Birch Forest by {_TITI}"),
    *(_s(f"birds-scorched3d-{k}", "birds", "scorched3d-data", f"{_SCORCHED}/{k}.wav", "heldout-source",
         "songbird ambience (centroid 1.5-2.6 kHz; class check 0.84-0.87 birds)") for k in ("birds1", "birds2")),
    # --- night -----------------------------------------------------------------------------------------
    _mg("night-dark-forest", "night", "dark_forest/sounds/night.ogg", "train",
        "night insect chorus, steady (centroid 4.5 kHz, ±1.5 dB)", "MegaGlest tileset Dark Forest, The MegaGlest Team"),
    _mg("night-fernland", "night", "fernland/sounds/night.ogg", "train",
        "dense cricket chorus (centroid 5.2 kHz, ±2.2 dB)", f"MegaGlest tileset Fernland by {_TITI}"),
    _mg("night-autumn", "night", "autumn/sounds/nightime.ogg", "heldout",
        "night ambience with crickets (class check 0.72 night); the previous set's held-out night",
        f"MegaGlest tileset Autumn by {_TITI}; Elimnator (www.soundbible.com) for the autumn night sound"),
    _s("night-ufoai-atm", "night", "ufoai-sound", UFO, "train",
       "night atmosphere with crickets (centroid 1.9 kHz), 114 s; the embedding puts crickets near birds: kept, it is a night",
       "sound/ambience/ufo_night_atm.ogg", credit=_UFO_GPL),
    _s("night-ufoai-cricket", "night", "ufoai-sound", UFO, "train",
       "one cricket's chirps (centroid 4.8 kHz); nexuiz's desertfactory/cricket_loop is this file (not used)",
       "sound/ambience/cricket_loop.ogg", credit=_UFO_GPL),
    _s("night-scorched3d-frogs", "night", "scorched3d-data", f"{_SCORCHED}/frogs.wav", "train",
       "frog chorus (centroid 3.3 kHz; class check 0.64 night)"),
    *(_s(f"night-widelands-{k}", "night", "widelands-data", f"{_WIDELANDS}/{k}.ogg", "train",
         "crickets (centroid 1.7 kHz; class check 0.92-0.95 night)") for k in ("crickets1_00", "crickets2_00")),
    _s("night-flare-owl", "night", "flare-game", f"{_FLARE}/forest_owl_loop.ogg", "train",
       "an owl's hoots in a quiet night (a pure tone at 0.55 kHz)"),
    *(_s(f"night-redeclipse-{k}", "night", "redeclipse-data", f"{_REDECLIPSE}/{k}.ogg", "heldout-source",
         what, credit=_RE_AMB) for k, what in (("nightcrickets", "night crickets (class check 0.55 night)"),
                                             ("cycadas", "cicada chorus, steady (centroid 3.9 kHz; class check 0.97 night)"))),
    # --- wind ------------------------------------------------------------------------------------------
    _s("wind-0ad", "wind", "0ad-data", ZAD, "train", "wind with slow gusts (centroid 0.54 kHz, ±11 dB)",
       "audio/ambient/weather/wind_11.ogg", end=135.0),
    _s("wind-0ad-end", "wind", "0ad-data", ZAD, "heldout", "the last 32 s of the same wind (same-source held out)",
       "audio/ambient/weather/wind_11.ogg", start=135.0),
    _s("wind-0ad-storm", "wind", "0ad-data", ZAD, "train", "strong steady windstorm (centroid 0.78 kHz)",
       "audio/ambient/weather/windstorm_11.ogg"),
    _s("wind-0ad-gust", "wind", "0ad-data", ZAD, "train", "one wind gust, 5 s (class check 0.98 wind)",
       "audio/ambient/weather/windgust_11.ogg"),
    _s("wind-flare-cave", "wind", "flare-game", f"{_FLARE}/cave_wind_loop.ogg", "train",
       "low hollow wind (centroid 0.22 kHz; class check 0.89 wind)"),
    _s("wind-redeclipse-blow", "wind", "redeclipse-data", f"{_REDECLIPSE}/blowwind.ogg", "train",
       "blowing wind (centroid 0.35 kHz); hollowwind.ogg is the same recording (not used)", credit=_RE_AMB),
    _s("wind-redeclipse-waste", "wind", "redeclipse-data", f"{_REDECLIPSE}/wastewind.ogg", "train",
       "steady desolate wind (centroid 0.61 kHz)", credit=_RE_AMB),
    _s("wind-redeclipse-wind", "wind", "redeclipse-data", f"{_REDECLIPSE}/wind.ogg", "train",
       "wind (centroid 0.43 kHz)", credit="Batuhan Bozkurt (freesound 17735), Red Eclipse"),
    _s("wind-lugaru", "wind", "lugaru-data", f"{_LUGARU}/Wind.ogg", "train", "outdoor wind, 60 s (centroid 0.45 kHz)"),
    _s("wind-ufoai-arctic", "wind", "ufoai-sound", UFO, "train", "cold howling wind, low (class check 0.98 wind)",
       "sound/ambience/arcticwind.ogg", credit=_UFO_SA, licence="CC-BY-SA-3.0"),
    _s("wind-nexuiz-outside", "wind", "nexuiz-data", NEXUIZ, "train", "wind outside (class check 0.95 wind)",
       "sound/desertfactory/windoutside_loop.wav"),
    _s("wind-flightgear", "wind", "flightgear-data-base", f"{_FLIGHTGEAR}/wind1.wav", "train",
       "wind rush (centroid 0.66 kHz; class check 0.97 wind)"),
    _s("wind-7kaa", "wind", "7kaa-data", "usr/share/games/7kaa/SOUND/WIND.WAV", "train",
       "wind (centroid 0.92 kHz; class check 0.98 wind)"),
    _sfx("wind-opensfx-52", "wind", 52, "train", "OpenSFX wind (sample 57 is the same samples: not used)"),
    _mg("wind-winter-forest", "wind", "winter_forest/sounds/wind.ogg", "heldout-source",
        "winter wind, steady with soft gusts (centroid 0.43 kHz); winter/sounds/wind.ogg is the same recording (not used)",
        "MegaGlest tileset Winter Forest, The MegaGlest Team"),
    # --- engine ----------------------------------------------------------------------------------------
    _sfx("engine-opensfx-25", "engine", 25, "train", "OpenSFX road vehicle engine"),
    _sfx("engine-opensfx-26", "engine", 26, "train", "OpenSFX road vehicle engine"),
    _sfx("engine-opensfx-10", "engine", 10, "train", "OpenSFX diesel locomotive"),
    _sfx("engine-opensfx-8", "engine", 8, "train", "OpenSFX propeller plane"),
    _sfx("engine-opensfx-24", "engine", 24, "train", "OpenSFX road vehicle engine"),
    _sfx("engine-opensfx-69", "engine", 69, "train", "OpenSFX propeller plane (\"Toyland\" only in name)"),
    _sfx("engine-opensfx-27", "engine", 27, "heldout", "OpenSFX bus start; the previous set's held-out engine"),
    _sfx("engine-opensfx-28", "engine", 28, "heldout", "OpenSFX bus start; the previous set's held-out engine"),
    *(_s(f"engine-torcs-{k.replace('_engine', '')}", "engine", "torcs-data", f"{_TORCS}/{k}.wav", "train",
         "car engine loop, harmonic (centroid 0.25-0.45 kHz)") for k in ("porsche_engine", "206_engine", "impreza2002_engine")),
    *(_s(f"engine-flightgear-{k}", "engine", "flightgear-data-base", f"{_FLIGHTGEAR}/{k}.wav", "train", what)
      for k, what in (("exhaust_loop", "piston engine exhaust (class check 0.93 engine)"),
                      ("turboprop1", "turboprop (class check 0.94 engine)"),
                      ("helicopter", "helicopter rotor and engine (class check 1.0 engine)"))),
    _s("engine-flightgear-c172", "engine", "flightgear-data-base", "usr/share/games/flightgear/Aircraft/c172p/Sounds/engine.wav",
       "train", "light aircraft piston engine (class check 0.98 engine)"),
    _s("engine-stk-small", "engine", "supertuxkart-data", f"{_STK}/sfx/engine_small.ogg", "train",
       "small car engine loop", credit="Ivan \"qubodup\" Gabovitch (SuperTuxKart)", licence="CC-BY-SA-3.0 or GPL-3 or GPL-2"),
    _s("engine-stk-large", "engine", "supertuxkart-data", f"{_STK}/sfx/engine_large.ogg", "train",
       "truck engine idle and drive", credit="Mike Koenig, \"Stephan\", Marianne Gagnon, \"SpeedJunkie\" (SuperTuxKart)",
       licence="CC-BY-SA-3.0"),
    _s("engine-stk-locomotive", "engine", "supertuxkart-data", f"{_STK}/tracks/black_forest/steamLocomotive.ogg", "train",
       "steam locomotive chuffing (class check 0.78 engine)", credit="Daniel Simion (SuperTuxKart)"),
    _s("engine-trigger-rally", "engine", "trigger-rally-data", TRIGGER, "train", "rally car engine loop (class check 1.0 engine)",
       "sounds/engine.wav"),
    _s("engine-lincity-traffic", "engine", "lincity-ng-data", f"{_LINCITY}/TraficHigh1.wav", "train",
       "road traffic (centroid 0.83 kHz)"),
    _s("engine-scorched3d-helicopter", "engine", "scorched3d-data",
       "usr/share/games/scorched3d/data/globalmods/apoc/data/wav/misc/helicopter.wav", "train",
       "helicopter flying by (class check 0.76 engine)", credit="Apocalypse mod team (Scorched3D)", licence="CC-BY-SA-3"),
    *(_s(f"engine-sar-{k.replace('/', '-')}", "engine", "searchandrescue-data", f"{_SAR}/{k}.wav", "heldout-source", what)
      for k, what in (("helicopter_engine_outside", "helicopter from outside, rotor thump (centroid 0.22 kHz)"),
                      ("helicopter_engine_outside3", "helicopter from outside (class check 0.99 engine)"),
                      ("hh60/engine_inside", "helicopter turbine heard in the cabin (class check 1.0 engine)"),
                      ("hh65/engine_inside", "helicopter heard in the cabin (class check 0.94 engine)"))),
    _s("engine-stormbaan-camaro", "engine", "stormbaancoureur-data", "usr/share/games/stormbaancoureur/sounds/camaro_s16_le.wav",
       "heldout-source", "car engine revving, 16 s (class check 0.91 engine)"),
    # --- fire ------------------------------------------------------------------------------------------
    *(_s(f"fire-0ad-c{k}", "fire", "0ad-data", ZAD, "train", "burning crackle with a roar (centroid 1.6-2.1 kHz, 3 onsets/s)",
         f"audio/attack/fire/c_{k}.ogg") for k in ("11", "12", "13", "14", "15", "16")),
    *(_s(f"fire-ufoai-{k}", "fire", "ufoai-sound", UFO, "train", what, f"sound/ambience/{k}.ogg", credit=_UFO_SA,
         licence="CC-BY-SA-3.0")
      for k, what in (("fire", "a fire burning, crackle and roar (class check 0.97 fire)"),
                      ("fire03", "crackling fire (class check 0.93 fire)"),
                      ("fire04", "low burning fire (class check 0.78 fire)"),
                      ("fire06", "crackling fire (class check 0.98 fire)"))),
    *(_s(f"fire-openarena-{k}", "fire", "openarena-data", OPENARENA, "train", what, f"sound/world/{k}.wav")
      for k, what in (("fire1", "fire burning (class check 0.98 fire); ufoai's fire1.ogg is this file (not used)"),
                      ("fire2", "fire burning (class check 0.99 fire); ufoai's fire2.ogg is this file (not used)"),
                      ("firesoft", "soft low fire (class check 0.90 fire); ufoai's firesoft.ogg is this file (not used)"))),
    _s("fire-lincity", "fire", "lincity-ng-data", f"{_LINCITY}/Fire3.wav", "train", "crackling fire (class check 0.92 fire)"),
    *(_s(f"fire-flare-{k.replace('_', '-')}", "fire", "flare-game", f"{_FLARE}/{k}.ogg", "train", what)
      for k, what in (("open_fire_loop", "open fire crackle (centroid 5.9 kHz; class check 0.83 fire)"),
                      ("open_fire", "open fire (class check 0.98 fire)"))),
    _s("fire-lugaru", "fire", "lugaru-data", f"{_LUGARU}/Fire.ogg", "train", "burning fire roar (class check 1.0 fire)"),
    _s("fire-redeclipse", "fire", "redeclipse-data", f"{_REDECLIPSE}/fire.ogg", "train",
       "low fire roar (class check 0.98 fire)", credit=_RE_AMB),
    _mg("fire-wicker", "fire", "magic/units/wicker_behemoth/sounds/wicker_fire.wav", "train",
        "dense broadband crackle (first 1.8 s)", f"MegaGlest faction Magic (wicker behemoth), {_GLEST}", 0.0, 1.8, base=FACTIONS),
    _mg("fire-wicker-end", "fire", "magic/units/wicker_behemoth/sounds/wicker_fire.wav", "heldout",
        "the same crackle's last 1.5 s; the previous set's held-out fire", f"MegaGlest faction Magic (wicker behemoth), {_GLEST}",
        1.8, None, base=FACTIONS),
    *(_s(f"fire-minetest-{k.replace('.', '-').replace('_', '-')}", "fire", "minetest-data", f"{_MINETEST}/{k}.ogg",
         "heldout-source", what)
      for k, what in (("fire_fire.1", "crackling fire loop (class check 1.0 fire)"),
                      ("fire_fire.2", "crackling fire loop (class check 1.0 fire)"),
                      ("fire_fire.3", "crackling fire loop (class check 1.0 fire)"),
                      ("fire_large", "large fire, crackle and roar (class check 0.99 fire)"))),
)

# Files looked at and left out, and why (besides the classes' other candidates in the survey).
NOT_USED: dict[str, str] = {
    f"/{TILESETS}/winter/sounds/wind.ogg": "the same recording as winter_forest/sounds/wind.ogg",
    f"/{OPENSFX_CAT}#57": "the same samples as #52",
    f"/{_STK}/sfx/rain.ogg": "the same recording as megaglest dark_forest/sounds/rain.ogg",
    f"/{_REDECLIPSE}/hollowwind.ogg": "the same recording as blowwind.ogg",
    f"/{TILESETS}/birch_forest/sounds/rain.ogg": "birds in it (class check: fire 0.43, night 0.34, rain 0.03)",
    f"/{TILESETS}/desert4/sounds/rain.wav": "the same recording as desert2/sounds/rain.wav",
    f"/{TILESETS}/birch_forest/sounds/night.ogg": "discrete night-bird calls the check puts in birds (0.98)",
    f"/{TILESETS}/mediterran/sounds/night.ogg": "measured as rain (0.68)",
    f"/{_FLIGHTGEAR}/rain.wav": "measured as wind (0.80)",
    "/usr/share/games/supertux2/sounds/rain.wav": "a low rumble (centroid 0.35 kHz), measured as wind (0.99)",
    f"/{_FLIGHTGEAR}/prop.wav": "a propeller that sounds like wind (0.95)",
    f"/{_REDECLIPSE}/distant_cars.ogg": "measured as birds (0.81)",
    "/usr/share/games/7kaa/SOUND/FIRE.WAV": "measured as engine (0.73)",
    f"/{UFO}!sound/ambience/smallfire.ogg": "a thin hiss (centroid 8.3 kHz), measured as birds",
}

# Share of each class's training clips any one source may give (where the class has enough sources).
MAX_SOURCE_SHARE = 0.4


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
# are all photographs (rain, birds) or all procedural (night, engine, fire).
PHOTO_SHARE: dict[str, float] = {"rain": 1.0, "birds": 1.0, "wind": 0.5, "night": 0.0, "engine": 0.0, "fire": 0.0}


def sounds_of(label: str, use: str) -> list[SoundSource]:
    return [s for s in SOUNDS if s.label == label and s.use == use]


def sources_of(label: str, use: str) -> list[str]:
    """The packages of a class's files of one use, in first-named order."""
    return list(dict.fromkeys(s.package for s in sounds_of(label, use)))


def files_of(package: str) -> list[str]:
    """The paths (inside the package) the set reads from `package`."""
    paths = [s.path for s in SOUNDS if s.package == package]
    if package == WALLPAPERS:
        paths += [f for p in PHOTOS for f in (f"{p.folder}/metadata.json", f"{p.folder}/contents/images/")]
    return list(dict.fromkeys(paths))


def packages() -> list[str]:
    """Every package the set reads, sounds first."""
    return list(dict.fromkeys([s.package for s in SOUNDS] + [WALLPAPERS]))


def photos_of(label: str) -> list[PhotoSource]:
    return [p for p in PHOTOS if p.label == label]
