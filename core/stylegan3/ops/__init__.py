"""StyleGAN3's custom ops in plain PyTorch: no compiler, no CUDA toolkit, CPU and CUDA alike.

`filtered_lrelu_reference` holds NVIDIA's semantics written the straightforward way (zero-stuffed
upsampling, full FIR convolution, strided decimation). `filtered_lrelu` dispatches (see `backend`, `SOUNDVJ_OPS`) to
the fast path by default: `filtered_lrelu_fast` (polyphase, strided, fused; pure PyTorch) and, on CPU,
the optional C++ kernel in `csrc/` (`cpp_kernel`), compiled on first use where a compiler exists.
"""

from core.stylegan3.ops.bias_act import bias_act
from core.stylegan3.ops.filtered_lrelu import filtered_lrelu
from core.stylegan3.ops.upfirdn2d import upfirdn2d

__all__ = ["bias_act", "filtered_lrelu", "upfirdn2d"]
