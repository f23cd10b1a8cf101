"""`soundvj data demo DIR`: the labelled audio-visual set built from Debian packages.

Six classes, each a sound and the one look a person would name from it (rain -> water in the rain,
birds -> green forest, night (insects, frogs, owls) -> night, wind -> sky with moving cloud, engine ->
city road, fire -> flames). Sounds come from about twenty game-data packages, at least five per class,
with whole packages held out per class; photographs from `plasma-workspace-wallpapers`; looks no
package ships are drawn procedurally.

* `sources` — the classes, the chosen files and why, what is held out, the packages and their licences;
* `packages` — fetching the packages (`apt-get download` into a cache, only the used files extracted);
* `sounds` — reading the sources (archives, OpenSFX's sample catalogue) and cutting clips;
* `scenes` — procedural scenes (flames, night, clouds, city road) and overlays (rain);
* `images` — photograph crops and the per-class look of an image or a clip's frames;
* `build` — the command body: everything written into `DIR.partial`, then renamed to `DIR`.
"""
