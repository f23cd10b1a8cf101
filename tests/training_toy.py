"""A tiny stage for testing the training loop without any real model or data.

A two-layer MLP regresses a fixed random linear map of its inputs, with noise drawn from the global
RNG inside the step (so RNG save/restore matters), AdamW and a per-step LR schedule. Run as
`python -m tests.training_toy RUN_DIR [--resume] [--set k=v ...]` (also under torchrun) it trains
through `training.loop.train`, the code path `soundvj train` uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from training.config import RunConfig, load_run_config
from training.loop import BuildContext, Stage, StepContext, train
from training.settings import setting


@dataclass(frozen=True)
class ToyConfig:
    width: int = setting(16, min=1)
    lr: float = setting(1e-2, min=0.0)
    items: int = setting(40, min=1)
    step_sleep: float = setting(0.0, min=0.0, resumable=True, help="seconds to sleep per step (for kill tests)")


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.randn(4, 2, generator=g)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def build(config: RunConfig, ctx: BuildContext) -> Stage:
    c: ToyConfig = config.stage
    net = torch.nn.Sequential(torch.nn.Linear(4, c.width), torch.nn.Tanh(), torch.nn.Linear(c.width, 2)).to(ctx.device)
    opt = torch.optim.AdamW(net.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.97**s)
    samples_written = []

    def train_step(batch: dict, sctx: StepContext) -> dict:
        model = sctx.modules["net"]
        noise = 0.01 * torch.randn_like(batch["x"])  # global RNG: resume must restore it
        with sctx.autocast():
            loss = torch.nn.functional.mse_loss(model(batch["x"] + noise), batch["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if c.step_sleep:
            time.sleep(c.step_sleep)
        return {"loss": loss, "first_index": float(batch["index"][0])}

    def write_samples(out_dir: Path, step: int) -> None:
        torch.randn(100)  # consumes RNG: the loop must fork it
        (out_dir / f"sample-{step:06d}.txt").write_text(f"{net[0].weight.sum().item():.6f}\n")
        samples_written.append(step)

    return Stage(modules={"net": net}, optimizers={"adamw": opt}, schedulers={"decay": sched},
                 dataset=ToyData(c.items), train_step=train_step, write_samples=write_samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--dump-params", metavar="DIR", help="each rank saves its final parameters as DIR/rank<N>.pt")
    p.add_argument("--dump-threads", metavar="DIR",
                   help="each rank writes the names of its native threads left after training to DIR/threads<N>.txt")
    args = p.parse_args(argv)
    config = load_run_config("toy", ToyConfig, None, args.overrides)
    built = []

    def keep(config: RunConfig, ctx: BuildContext) -> Stage:
        built.append((build(config, ctx), ctx.rank))
        return built[-1][0]

    result = train(config, keep, args.run_dir, resume=args.run_dir if args.resume else None)
    if args.dump_params:
        stage, rank = built[0]
        torch.save(stage.modules["net"].state_dict(), Path(args.dump_params) / f"rank{rank}.pt")
    if args.dump_threads:
        names = sorted((task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
        (Path(args.dump_threads) / f"threads{built[0][1]}.txt").write_text("\n".join(names) + "\n")
    if result.interrupted_by is not None:
        return 128 + int(result.interrupted_by)
    return 0


if __name__ == "__main__":
    sys.exit(main())


Config = ToyConfig  # the name `soundvj train` looks for in a stage module
