"""`soundvj data demo DIR`: the labelled audio-visual set built from Debian packages.

Six classes, each a sound and the one look a person would name from it (rain -> water in the rain,
birds -> green forest, insects -> night, wind -> sky with moving cloud, engine -> city road,
fire -> flames). Sounds come from `megaglest-data` and `openttd-opensfx`, photographs from
`plasma-workspace-wallpapers`, and looks no package ships are drawn procedurally.

* `sources` — the classes, the chosen files, what is held out, the packages and their licences;
* `sounds` — reading the sources (including OpenSFX's sample catalogue) and cutting clips;
* `scenes` — procedural scenes (flames, night, clouds, city road) and overlays (rain);
* `images` — photograph crops and the per-class look of an image or a clip's frames;
* `build` — the command body: everything written into `DIR.partial`, then renamed to `DIR`.
"""
