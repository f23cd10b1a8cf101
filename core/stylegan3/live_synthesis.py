"""StyleGAN3 synthesis for the live loop's fixed shape, with the CUDA speed options.

The live loop always synthesises the same batch (one frame) of the same model, which is what a
captured CUDA graph wants: one `replay()` launches the whole network's kernels without Python in
between. On CUDA, three options, each off unless asked for (`LiveSynthesisOptions.fastest_for`
turns them all on for CUDA):

- `fp16`: NVIDIA's mixed precision, float16 for the `num_fp16_res` highest-resolution layers
  (`SynthesisLayer.compute_dtype`), float32 elsewhere and for the output; conv_clamp (256) keeps the
  float16 activations in range, as in NVIDIA's training and inference.
- `channels_last`: NHWC activations end to end (cuDNN's tensor-core kernels prefer them).
- `cuda_graph`: capture one call into a CUDA graph and replay it; or `compile`: `torch.compile` with
  mode "reduce-overhead" (which captures CUDA graphs itself, after compiling fused kernels).

On CPU every option is refused with a one-line error: fp16/bf16 matmuls run at ~1 GFLOP/s on this
torch's CPU build (float32: ~114), the fast ops already run channels_last there, and graphs are CUDA's.
The input layer's `transform` buffer (rotate/pan) is read by the graph at every replay, so the live
app's transform updates keep working; swapping weights needs a new LiveSynthesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from core.errors import SoundvjError

WARMUP_CALLS = 3  # cuDNN picks its algorithms (and allocates workspaces) before a capture


@dataclass(frozen=True)
class LiveSynthesisOptions:
    fp16: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    compile: bool = False

    @classmethod
    def fastest_for(cls, device: torch.device) -> "LiveSynthesisOptions":
        """Everything on for CUDA (graph rather than compile: no compile time); nothing for CPU."""
        if torch.device(device).type == "cuda":
            return cls(fp16=True, channels_last=True, cuda_graph=True)
        return cls()

    def validate(self, device: torch.device) -> None:
        if self.cuda_graph and self.compile:
            raise SoundvjError("live synthesis: choose cuda_graph or compile, not both (compile captures graphs itself)")
        wanted = [name for name in ("fp16", "channels_last", "cuda_graph", "compile") if getattr(self, name)]
        if wanted and torch.device(device).type != "cuda":
            raise SoundvjError(f"live synthesis: {', '.join(wanted)} need a CUDA device; this model is on {device}")


class LiveSynthesis:
    """`G.synthesis` for ws of one fixed shape [batch, num_ws, w_dim]: call it with ws, get float32 images.

    The output of a graph replay lives in the graph's memory and is overwritten by the next call;
    callers that keep frames must copy them (`keep_output=True` clones every result)."""

    def __init__(self, G: torch.nn.Module, batch: int = 1, options: LiveSynthesisOptions | None = None,
                 keep_output: bool = False):
        self.G = G
        self.device = next(G.parameters()).device
        self.options = options or LiveSynthesisOptions()
        self.options.validate(self.device)
        self.batch = batch
        self.keep_output = keep_output
        self.shape = (batch, G.synthesis.num_ws, G.synthesis.w_dim)
        self._layer_kwargs: dict[str, Any] = dict(noise_mode="const", force_fp32=not self.options.fp16)
        if self.options.channels_last:
            self._layer_kwargs["channels_last"] = True
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_ws: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None
        self._run: Callable[[torch.Tensor], torch.Tensor] = self._eager
        if self.options.compile:
            compiled = torch.compile(self._eager, mode="reduce-overhead", dynamic=False)
            self._run = compiled
        elif self.options.cuda_graph:
            self._capture()
            self._run = self._replay

    @torch.no_grad()
    def _eager(self, ws: torch.Tensor) -> torch.Tensor:
        return self.G.synthesis(ws, **self._layer_kwargs)

    @torch.no_grad()
    def _capture(self) -> None:
        static_ws = self.G.mapping.w_avg.reshape(1, 1, -1).expand(*self.shape).contiguous()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self._eager(static_ws)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._eager(static_ws)
        self._graph, self._static_ws, self._static_out = graph, static_ws, static_out

    def _replay(self, ws: torch.Tensor) -> torch.Tensor:
        self._static_ws.copy_(ws)
        self._graph.replay()
        return self._static_out

    @torch.no_grad()
    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        if tuple(ws.shape) != self.shape:
            raise ValueError(f"live synthesis: ws must be {list(self.shape)}, got {list(ws.shape)}")
        out = self._run(ws.to(self.device, torch.float32))
        reused = self._graph is not None or self.options.compile  # graph memory, overwritten next call
        return out.clone() if self.keep_output and reused else out
