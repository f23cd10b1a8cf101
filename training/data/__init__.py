"""Training data: labelled audio clips and labelled video clips with sound, decoded once and cached.

Modules: `config` (the `data:` section), `clips` (listing and checking clips), `decoded` (the decode
cache), `datasets` (the clip datasets and their held-out split), `stage_datasets` (what a stage asks
of them), `images` (image folders for `train generator` / `train classifier`), `synth` (the procedural
set of `soundvj data synth`) and `demo` (the labelled set of `soundvj data demo`).

Layouts (`data.path`):

* a folder per class: `DIR/<class name>/<clip>.<ext>`; the folder name is the class label;
* or a CSV file of `path,label` rows (a header row `path,label` is optional; relative paths are
  relative to the CSV's folder).

`data.kind: audio` reads wav, flac, ogg, mp3, m4a and the audio track of mp4/mkv/webm;
`data.kind: video` reads mp4, mkv and webm clips with a sound track. Video frames are taken at the
training fps (the frame showing at time t / fps), centre-cropped square and resized to the
generator's resolution; frame t is paired with the mel window `core.audio.windows.mel_windows` gives
frame t at inference (the same code, the same settings), i.e. the audio ending at t / fps.

Unreadable, silent (RMS below `data.silence_db` dBFS) and too-short clips are skipped and counted
(`soundvj data scan DIR` names them). Decoded clips are cached (`data.cache_dir`, default
`DIR/.soundvj-cache`) as memory-mapped .npy files keyed by the file and the settings.
"""
