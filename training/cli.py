"""The training subcommands: `soundvj train <stage>`, `soundvj train export|recipe`, `soundvj data
scan|synth|demo`, `soundvj eval`.

They register through the `soundvj.commands` entry-point group (pyproject.toml), so `core.cli` never
imports `training`. Registration runs for every soundvj command, so it imports only the stage registry
(`training.stages.STAGES`, for the help lines); each command imports the modules it runs (torch, PyAV)
inside its function. `train export` calls `training.export.run_cli(args)` and `eval` calls
`training.evaluation.evaluate.run_cli(args)` with the parsed arguments defined here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import yaml

from core.errors import SoundvjError
from training.config import run_config_dict
from training.stages import STAGES, stage_module, stage_run_config

EXIT_BY_SIGNAL = {signal.SIGTERM: 143, signal.SIGINT: 130}


# ---------------------------------------------------------------------------------------------
# train


def _cmd_train(args: argparse.Namespace) -> int:
    from training.loop import CHECKPOINT_NAME, load_checkpoint, train  # torch: only when training runs

    module = stage_module(args.stage)
    run_dir = Path(args.out) if args.out else Path("runs") / args.stage
    resume = None
    base = None
    if args.resume is not None:
        resume = run_dir / CHECKPOINT_NAME if args.resume == "" else Path(args.resume)
        if not args.config:
            base = load_checkpoint(resume)["config"]  # resume with the config it was written with
    config = stage_run_config(args.stage, args.overrides, data=args.data, config=args.config, base=base)
    if args.print_config:
        print(yaml.safe_dump(run_config_dict(config), sort_keys=False), end="")
        return 0
    result = train(config, module.build, run_dir, resume=resume)
    if result.interrupted_by is not None:
        return EXIT_BY_SIGNAL.get(result.interrupted_by, 1)
    if result.checkpoint is not None and _is_main_process():
        print(f"train {args.stage}: step {result.step}; checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _cmd_import_embedding(args: argparse.Namespace) -> int:
    from training.import_sound_embedding import convert

    out = convert(Path(args.checkpoint), Path(args.output))
    print(f"wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from training.export import run_cli  # torch: only when exporting
    except ModuleNotFoundError as e:
        if e.name in ("training.export",):
            raise SoundvjError("train export: not available in this version (training/export.py)") from None
        raise
    return int(run_cli(args) or 0)


def _cmd_recipe(args: argparse.Namespace) -> int:
    from training.recipes.recipe import load_recipe, run_recipe, step_argv, step_status, why_stale  # torch

    variables = {}
    for item in args.variables:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SoundvjError(f"--var {item!r}: expected NAME=VALUE")
        variables[name] = value
    if args.hours is not None and not 0 < args.hours <= 24:
        raise SoundvjError(f"--hours {args.hours}: expected a number of hours in (0, 24]")
    recipe = load_recipe(args.recipe, variables, state_dir=args.state)
    if args.list:
        for step in recipe.steps:
            status = step_status(recipe, step)
            print(f"{step.name:<14} {status:<7} soundvj {' '.join(step_argv(recipe, step))}")
            if status in ("stale", "more"):
                print(f"{'':<14} ({why_stale(recipe, step)[1]})")
        return 0
    result = run_recipe(recipe, hours=args.hours, only=args.step)
    if result.stopped_by is not None:
        return EXIT_BY_SIGNAL.get(result.stopped_by, 1)
    if result.finished:
        print(f"recipe {recipe.name}: all {len(recipe.steps)} steps done")
    elif result.paused_at:
        print(f"recipe {recipe.name}: paused at {result.paused_at}; run the same command again to continue")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    """`soundvj train <stage> ...` and `soundvj train export ...`."""
    p = sub.add_parser("train", help="train the sound models (a stage at a time), or export them")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", parser_class=type(p))
    stages.required = True
    for name, entry in STAGES.items():
        s = stages.add_parser(name, help=entry.help,
                              description=f"{entry.help}. Defaults: training/configs/{entry.config_file}.")
        s.add_argument("--config", metavar="YAML", help=f"config file (default: training/configs/{entry.config_file}; "
                       "on --resume: the checkpoint's own config)")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set loop.steps=500 --set stage.lr=1e-4 (repeatable)")
        s.add_argument("--data", metavar="DIR", help="the dataset (same as --set data.path=DIR)")
        s.add_argument("--out", metavar="RUN_DIR", help=f"run directory for checkpoints and logs (default: runs/{name})")
        s.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                       help="continue from RUN_DIR/checkpoint.pt, or from the given checkpoint")
        s.add_argument("--print-config", action="store_true",
                       help="print the resolved config (defaults, file, --set) as YAML and exit")
        s.set_defaults(func=_cmd_train)

    e = stages.add_parser("export", help="write one model file: the generator plus the trained sound models")
    e.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or checkpoints) of the trained stages")
    e.add_argument("-o", "--output", required=True, help="output .safetensors model file")
    e.add_argument("--generator", default=None, metavar="MODEL",
                   help="generator (.pkl or .safetensors; default: the one the runs were trained with)")
    e.add_argument("--credits", default=None, metavar="JSON",
                   help="the training data's credits (e.g. DATA/credits.json from `soundvj data demo`), kept in the model file")
    e.set_defaults(func=_cmd_export)

    i = stages.add_parser("import-embedding", help="convert aiSFX 0.1.2's checkpoint (aisfx/models/checkpoint.pth) "
                          "into the sound embedding's weights, read safely and checked by hash")
    i.add_argument("checkpoint", help="the package's models/checkpoint.pth")
    i.add_argument("-o", "--output", required=True, help="output .safetensors (core/assets/sound_embedding.safetensors)")
    i.set_defaults(func=_cmd_import_embedding)

    r = stages.add_parser("recipe", help="run a recipe (a chain of steps, e.g. data -> generator -> ... -> export) "
                          "in resumable pieces", description="Run a recipe's unfinished steps for at most one piece "
                          "(its piece_hours, or --hours); run it again to continue. See training/recipes/recipe.py.")
    r.add_argument("recipe", help="recipe YAML, e.g. training/recipes/demo.yaml")
    r.add_argument("--hours", type=float, default=None, help="this piece's time budget (default: the recipe's piece_hours)")
    r.add_argument("--step", default=None, metavar="NAME", help="run only this step")
    r.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE",
                   help="override one of the recipe's vars, e.g. --var runs=/data/runs (repeatable)")
    r.add_argument("--state", default=None, metavar="DIR",
                   help="keep the pieces' small checkpoints here instead of the recipe's state folder "
                        "(a second run of the same recipe; with --var runs=... for its run folders)")
    r.add_argument("--list", action="store_true", help="print the steps, their commands and whether they are done, and exit")
    r.set_defaults(func=_cmd_recipe)


# ---------------------------------------------------------------------------------------------
# data


def _cmd_data_scan(args: argparse.Namespace) -> int:
    from collections import Counter

    from training.data.clips import check_clip, list_clips  # PyAV and torch: only when scanning

    entries = list_clips(args.dir, args.kind)
    listed = Counter(e.label for e in entries)
    usable: Counter = Counter()
    problems = []
    show_progress = sys.stderr.isatty() and len(entries) > 20
    from tqdm import tqdm

    for entry in tqdm(entries, unit="clip", desc="scan", disable=not show_progress, file=sys.stderr):
        problem = check_clip(entry, args.kind, args.min_seconds, args.silence_db)
        if problem is None:
            usable[entry.label] += 1
        else:
            problems.append(problem)
    width = max(5, *(len(c) for c in listed))
    print(f"{args.dir}: {len(listed)} classes, {len(entries)} {args.kind} clips, {sum(usable.values())} usable")
    print(f"{'class':<{width}}  clips  usable")
    for label in sorted(listed):
        print(f"{label:<{width}}  {listed[label]:>5}  {usable[label]:>6}")
    if problems:
        counts = Counter(p.kind for p in problems)
        print(f"skipped {len(problems)} ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}):")
        for p in problems:
            print(f"  {p.path}: {p.reason}")
    classes_ok = sum(1 for n in usable.values() if n)
    if classes_ok < 2:
        print(f"note: training needs at least 2 classes of usable clips; this dataset has {classes_ok}")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from training.data.synth import CLASSES, SynthSettings, write_dataset  # numpy, PyAV: only when writing

    settings = SynthSettings(clips_per_class=args.clips_per_class, seconds=args.seconds, size=args.size,
                             fps=args.fps, seed=args.seed)
    from tqdm import tqdm

    total = settings.clips_per_class * len(CLASSES)
    with tqdm(total=total, unit="clip", desc="synth", disable=args.quiet, file=sys.stderr) as bar:
        paths = write_dataset(args.dir, settings, progress=lambda _: bar.update(1))
    print(f"wrote {len(paths)} clips ({len(CLASSES)} classes: {', '.join(CLASSES)}; {settings.seconds:g} s, "
          f"{settings.size}x{settings.size} px, {settings.fps:g} fps) to {args.dir}")
    return 0


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from training.data.demo.build import run_cli  # numpy, PyAV: only when building

    return run_cli(args)


def _cmd_data_folds(args: argparse.Namespace) -> int:
    from training.evaluation.source_folds import run_cli  # torch and the sound embedding: only when asked

    if args.steps < 1:
        raise SoundvjError(f"--steps: expected a positive number of steps, got {args.steps}")
    return run_cli(args)


def register_data(sub: argparse._SubParsersAction) -> None:
    """`soundvj data scan DIR`, `soundvj data synth DIR`, `soundvj data demo DIR` and `soundvj data folds DIR`."""
    p = sub.add_parser("data", help="inspect a training dataset, or write the procedural one")
    cmds = p.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=type(p))
    cmds.required = True
    s = cmds.add_parser("scan", help="list classes and clip counts; name unreadable, silent or too-short clips")
    s.add_argument("dir", help="dataset folder (a folder per class) or CSV of path,label")
    s.add_argument("--kind", choices=["video", "audio"], default="video", help="video clips with sound (default) or audio clips")
    s.add_argument("--min-seconds", type=float, default=1.0, help="shorter clips are reported (default 1)")
    s.add_argument("--silence-db", type=float, default=-60.0, help="clips with RMS below this dBFS are silent (default -60)")
    s.set_defaults(func=_cmd_data_scan)

    y = cmds.add_parser("synth", help="write the procedural audio-visual dataset (5 classes, mp4 with sound)")
    y.add_argument("dir", help="output folder (a folder per class is created in it)")
    y.add_argument("--clips-per-class", type=int, default=12)
    y.add_argument("--seconds", type=float, default=4.0, help="length of each clip (default 4)")
    y.add_argument("--size", type=int, default=64, help="frame width and height in pixels (default 64)")
    y.add_argument("--fps", type=float, default=24.0)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    y.set_defaults(func=_cmd_data_synth)

    d = cmds.add_parser("demo", help="build the labelled six-class demo set from Debian packages (sounds, photographs)")
    d.add_argument("dir", help="output folder (built in DIR.partial, then renamed)")
    d.add_argument("--size", type=int, default=64, help="image and frame size in pixels (default 64)")
    d.add_argument("--images-per-class", type=int, default=600, help="generator training images per class (default 600)")
    d.add_argument("--clips-per-class", type=int, default=96, help="training clips per class (default 96)")
    d.add_argument("--clip-seconds", type=float, default=4.0, help="length of each clip (default 4)")
    d.add_argument("--fps", type=float, default=24.0)
    d.add_argument("--walk-seconds", type=float, default=7.0, help="seconds per class in demo_walk.wav (default 7)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--package-cache", default=None, metavar="DIR",
                   help="where the Debian packages are downloaded (apt-get download) and the used files extracted "
                        "(default ~/.cache/soundvj/debian)")
    d.add_argument("--source-root", default=None, metavar="DIR",
                   help="read the packages from DIR/<package>/<path> instead (nothing is fetched)")
    d.add_argument("--force", action="store_true", help="rebuild even if DIR already holds a complete set")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_data_demo)

    f = cmds.add_parser("folds", help="how far the sound embedding carries each class to sources it never heard: "
                                      "E_I's choice of kind, fitted with each (class, source) held out in turn")
    f.add_argument("dataset", help="labelled dataset folder with SOURCES.csv (as `soundvj data demo` writes in clips/)")
    f.add_argument("--per-second", type=float, default=2.0, help="windows a second of each clip (default 2)")
    f.add_argument("--steps", type=int, default=2000, help="minibatch steps of each fold's read-out (default 2000, as "
                   "`train inverter`'s kind_fit_steps)")
    f.add_argument("--csv", metavar="PATH", default=None, help="also write class,source,windows,accuracy")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="data settings, e.g. --set data.fps=24 (repeatable)")
    f.set_defaults(func=_cmd_data_folds)


# ---------------------------------------------------------------------------------------------
# eval


def _cmd_eval(args: argparse.Namespace) -> int:
    try:
        from training.evaluation.evaluate import run_cli  # torch: only when evaluating
    except ModuleNotFoundError as e:
        if e.name in ("training.evaluation.evaluate",):
            raise SoundvjError("eval: not available in this version (training/evaluation/evaluate.py)") from None
        raise
    return int(run_cli(args) or 0)


def register_eval(sub: argparse._SubParsersAction) -> None:
    """`soundvj eval MODEL DATASET`."""
    p = sub.add_parser("eval", help="does the picture follow the sound's meaning? CLIP scores on held-out clips")
    p.add_argument("model", help="model file from `soundvj train export` (or 'default')")
    p.add_argument("dataset", help="labelled dataset folder or CSV (its held-out clips are used)")
    p.add_argument("--clip", required=True, metavar="CHECKPOINT", help="CLIP checkpoint (e.g. from `soundvj train clip`)")
    p.add_argument("--csv", metavar="PATH", help="per-clip results (default: next to the model, <model>.eval.csv)")
    p.add_argument("--classifier", metavar="RUN", default=None,
                   help="also judge the frames with a `train classifier` run (trained only on real images)")
    p.add_argument("--sheet", metavar="PNG", default=None,
                   help="also write a contact sheet: one row per class, frames generated from its held-out recordings")
    p.add_argument("--sheet-columns", type=int, default=8, metavar="N", help="frames per row of the sheet (default 8)")
    p.add_argument("--confusion", action="store_true",
                   help="also print, per judge, what each class's frames were called (which classes it mixes up)")
    p.add_argument("--parts", action="store_true",
                   help="also measure each part of the chain per class: E_A's zero-shot on the sound, frames of E_I "
                        "alone (no stepper), and the whole pipeline (which part loses a class)")
    p.add_argument("--by-source", action="store_true",
                   help="also report per class on the clips of held-out sources (never trained on) beside the "
                        "same-source held-out clips (needs the dataset's SOURCES.csv, as `soundvj data demo` writes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="data settings, e.g. --set data.fps=24 (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval)
