"""StyleGAN3's custom ops in plain PyTorch: no compiler, no CUDA toolkit, CPU and CUDA alike.

`reference` holds NVIDIA's semantics written the straightforward way (zero-stuffed upsampling, full
FIR convolution, strided decimation). Faster equivalents plug in behind `filtered_lrelu` here.
"""

from core.stylegan3.ops.bias_act import bias_act
from core.stylegan3.ops.filtered_lrelu import filtered_lrelu
from core.stylegan3.ops.upfirdn2d import upfirdn2d

__all__ = ["bias_act", "filtered_lrelu", "upfirdn2d"]
