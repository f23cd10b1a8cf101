"""Training soundvj's models with soundvj's own commands (`soundvj train|data|eval`, see `cli`).

Grouped by job:

* `cli` — the commands, registered through the `soundvj.commands` entry points;
* `loop` — the one training loop (devices, DDP, checkpoints, resume, logging) every stage runs on;
  `config` — a run's config (loop, data and stage sections); `settings` — how a section is read and checked;
* `stages/` — the stages (clip, audio-encoder, inverter, stepper, classifier, generator), their one
  registry (`stages.STAGES`) and what a stage reads of earlier runs (`stages.pretrained`);
* `data/` — clips, the decode cache, datasets, image folders, the procedural and the demo data sets;
* `models/` — the networks only training needs (CLIP adapter, discriminators);
* `augment/` — DiffAugment and mel-window augmentation; `losses`, `schedules`;
* `evaluation/` — `soundvj eval` and the samples the stages write; `export` — the model file;
* `recipes/` — chains of commands run in resumable pieces, and the demo recipe;
* `configs/` — each stage's default YAML.

Nothing outside `training` imports it; it imports `core`.
"""
