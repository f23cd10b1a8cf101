"""Fast `filtered_lrelu`: the same numbers as the reference (to float rounding), a fraction of the work.

The reference zero-stuffs the input, convolves the full upsampled map and then throws away all but
every `down`-th sample. The pure-PyTorch path here (`filtered_lrelu_torch`, any device and dtype):

- upsampling is a depthwise *transposed* convolution with stride `up`, which is exactly "insert zeros,
  then convolve" but never multiplies the inserted zeros (oneDNN / cuDNN run it polyphase);
- downsampling is a depthwise convolution with stride `down`, so only the kept samples are computed;
- 1-D filters run as two 1-D passes (rows, then columns); 2-D filters (the R config's radial down
  filter) run as one 2-D pass, still strided;
- on CPU everything runs channels_last (oneDNN's depthwise kernels vectorise over channels there);
  the activation gain is folded into the last up-filter pass, and leaky ReLU and clamp run in place
  on the one full-rate temporary;
- the reference's padding / cropping is folded into the transposed conv's own `padding` (a symmetric
  crop) plus a small zero pad of the input, so no full-size temporary is ever padded or sliced.

On CPU float32 the fused C++ kernel (`csrc/filtered_lrelu_cpu.cpp`, see `cpp_kernel`) does all of it
in one pass with the upsampled rows kept in cache; it is used once built, this path otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.stylegan3.ops import cpp_kernel
from core.stylegan3.ops.upfirdn2d import filter_size, parse_padding


@dataclass(frozen=True)
class AxisPlan:
    """How one axis (x or y) is padded, upsampled, cropped and downsampled."""

    in_pad_lo: int  # zeros added to the input before upsampling (so the crop below is non-negative)
    in_pad_hi: int
    up_crop: int  # the transposed conv's symmetric `padding` (crops this many samples each side)
    out_len: int  # output samples, as the reference gives
    tmp_len: int  # upsampled samples the down pass needs


def plan_axis(in_len: int, up: int, down: int, pad_lo: int, pad_hi: int, up_taps: int, down_taps: int) -> AxisPlan:
    """Index bookkeeping for one axis; see the module docstring.

    With `o` the full transposed-conv output ((in_len - 1) * up + up_taps samples), the reference's
    upsampled, padded and filtered signal is `t[n] = o[n + s]` with `s = up_taps - 1 - pad_lo`.
    """
    tmp_full = in_len * up + pad_lo + pad_hi - up_taps + 1
    out_len = (tmp_full - down_taps + 1 + down - 1) // down
    if out_len < 1:
        raise ValueError(f"filtered_lrelu: output would be empty along an axis (input {in_len})")
    tmp_len = down * (out_len - 1) + down_taps
    shift = up_taps - 1 - pad_lo
    in_pad_lo = 0
    if shift < 0:  # the reference pads more than the filter reaches: prepend zeros to the input
        in_pad_lo = -(shift // up)  # ceil(-shift / up)
        shift += in_pad_lo * up
    # The transposed conv crops `shift` on both sides; make sure enough is left on the right.
    have = (in_len + in_pad_lo - 1) * up + up_taps - 2 * shift
    in_pad_hi = max(0, -((have - tmp_len) // up))  # ceil((tmp_len - have) / up) if short
    return AxisPlan(in_pad_lo, in_pad_hi, shift, out_len, tmp_len)


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """One filter repeated for every channel, in conv weight layout `[C, 1, kh, kw]`."""
    return f.to(dtype).reshape(1, 1, *shape).expand(channels, 1, *shape).contiguous()


def filtered_lrelu_fast(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | tuple[int, ...] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
    allow_cpp: bool = True,
) -> torch.Tensor:
    """Same contract and results (to float rounding) as `filtered_lrelu_reference`.

    The fused C++ kernel runs where it applies (CPU float32, 1-D up filter, 1-D or 2-D down filter,
    no autograd) once it is built; everything else takes the pure-PyTorch path.
    """
    kwargs = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                  flip_filter=flip_filter)
    if allow_cpp and _cpp_applies(x, fu, fd, b, int(up), int(down)):
        op = cpp_kernel.load()  # None while the kernel is building or if it cannot be built
        if op is not None:
            return _filtered_lrelu_cpp(op, x, **kwargs)
    return filtered_lrelu_torch(x, **kwargs)


def _cpp_applies(
    x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor | None, up: int, down: int
) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4 or x.numel() == 0:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
        return False  # the kernel has no backward
    if up < 1 or down < 1:
        return False
    up_ok = fu is None or (fu.ndim == 1 and fu.numel() <= 64 * up)
    down_ok = fd is None or (fd.ndim in (1, 2) and fd.shape[0] <= 64)  # 2-D: the R config's radial filter
    return up_ok and down_ok


def _correlation_taps(f: torch.Tensor | None, flip_filter: bool, scale: float) -> torch.Tensor:
    """Taps in the kernel's correlation form: the reference convolves with f unless flip_filter."""
    if f is None:
        return torch.tensor([scale], dtype=torch.float32)
    f = f.detach().to(device="cpu", dtype=torch.float32)
    return (f if flip_filter else f.flip(list(range(f.ndim)))).mul(scale).contiguous()


def _filtered_lrelu_cpp(
    op,
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor | None,
    up: int,
    down: int,
    padding: int | tuple[int, ...],
    gain: float,
    slope: float,
    clamp: float | None,
    flip_filter: bool,
) -> torch.Tensor:
    up, down = int(up), int(down)
    batch, channels, in_h, in_w = x.shape
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    out_w = plan_axis(in_w, up, down, px0, px1, fu_w, fd_w).out_len  # also validates
    out_h = plan_axis(in_h, up, down, py0, py1, fu_h, fd_h).out_len
    up_taps = _correlation_taps(fu, flip_filter, up)  # the reference's gain up**2, half per axis
    down_taps = _correlation_taps(fd, flip_filter, 1.0)
    bias = torch.zeros(channels) if b is None else b.detach().to(torch.float32).contiguous()
    x = x.detach().contiguous(memory_format=torch.channels_last)
    clamp_value = float(clamp) if clamp is not None and clamp >= 0 else -1.0
    return op(x, bias, up_taps, up_taps, down_taps, down_taps, up, down, px0, py0, out_w, out_h,
              float(slope), float(gain), clamp_value)


def filtered_lrelu_torch(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | tuple[int, ...] = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """The pure-PyTorch fast path (any device, dtype and filter shape; autograd works through it)."""
    batch, channels, in_h, in_w = x.shape
    up, down = int(up), int(down)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = parse_padding(padding)
    plan_x = plan_axis(in_w, up, down, px0, px1, fu_w, fd_w)
    plan_y = plan_axis(in_h, up, down, py0, py1, fu_h, fd_h)
    dtype = x.dtype
    # channels_last lets oneDNN vectorise the depthwise convs over channels; cuDNN gets what it is given,
    # and a channels_last input (the CUDA live path's option) stays channels_last.
    fmt = torch.channels_last if x.device.type == "cpu" else torch.preserve_format
    nhwc_in = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    nhwc_out = fmt is torch.channels_last or nhwc_in

    # In-place activation only on a temporary we own and autograd does not need.
    wants_grad = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))

    # Bias, written into the working layout (one pass when the input is already channels_last).
    t = x.contiguous(memory_format=fmt) if fmt is torch.channels_last else x
    if b is not None:
        t = t + b.to(dtype).reshape(1, -1, 1, 1)

    act_gain = float(gain)
    fold_gain = act_gain > 0  # lrelu(v) * g == lrelu(v * g) for g > 0: fold it into the filter
    filter_gain = act_gain if fold_gain else 1.0

    if fu is None and up == 1:
        # No upsampling filter: the reference only pads / crops (F.pad crops on negative values).
        t = F.pad(t, [px0, px1, py0, py1]) * filter_gain  # the product is a fresh tensor
    else:
        t = F.pad(t, [plan_x.in_pad_lo, plan_x.in_pad_hi, plan_y.in_pad_lo, plan_y.in_pad_hi])
        f = torch.ones([1, 1], device=x.device) if fu is None else fu
        # A transposed conv is a true convolution, which is what the reference does unless flip_filter.
        if flip_filter:
            f = f.flip(list(range(f.ndim)))
        if f.ndim == 2:
            w = _depthwise(f * (up * up * filter_gain), channels, dtype, tuple(f.shape))
            t = F.conv_transpose2d(t, w, stride=up, padding=(plan_y.up_crop, plan_x.up_crop), groups=channels)
        else:
            taps = f.shape[0]
            wx = _depthwise(f * up, channels, dtype, (1, taps))
            wy = _depthwise(f * (up * filter_gain), channels, dtype, (taps, 1))
            t = F.conv_transpose2d(t, wx, stride=(1, up), padding=(0, plan_x.up_crop), groups=channels)
            t = F.conv_transpose2d(t, wy, stride=(up, 1), padding=(plan_y.up_crop, 0), groups=channels)

    # Leaky ReLU and clamp, in place on the one full-rate temporary unless autograd needs it.
    if slope != 1:
        t = F.leaky_relu(t, float(slope)) if wants_grad else F.leaky_relu_(t, float(slope))
    if not fold_gain and act_gain != 1:
        t = t * act_gain if wants_grad else t.mul_(act_gain)
    if clamp is not None and clamp >= 0:
        t = t.clamp(-float(clamp), float(clamp)) if wants_grad else t.clamp_(-float(clamp), float(clamp))

    # Downsampling: strided depthwise convs compute only the samples that are kept.
    if fd is not None:
        g = fd if flip_filter else fd.flip(list(range(fd.ndim)))
        if g.ndim == 2:
            w = _depthwise(g, channels, dtype, tuple(g.shape))
            t = F.conv2d(t, w, stride=down, groups=channels)
        else:
            taps = g.shape[0]
            t = F.conv2d(t, _depthwise(g, channels, dtype, (1, taps)), stride=(1, down), groups=channels)
            t = F.conv2d(t, _depthwise(g, channels, dtype, (taps, 1)), stride=(down, 1), groups=channels)
    elif down > 1:
        t = t[:, :, ::down, ::down]

    if t.shape[2] != plan_y.out_len or t.shape[3] != plan_x.out_len:
        t = t[:, :, : plan_y.out_len, : plan_x.out_len]
    return t.contiguous(memory_format=torch.channels_last) if nhwc_out else t.contiguous()


def describe_fast_path(allow_cpp: bool = True) -> str:
    """Which fast implementation runs on CPU, and why."""
    torch_path = "pure-PyTorch path: polyphase transposed-conv upsampling, strided downsampling"
    if not allow_cpp:
        return f"fast-torch ({torch_path}; C++ kernel disabled by request)"
    if cpp_kernel.load(wait=True) is not None:  # a report: wait for the (cached, else ~10 s) build
        return f"fast-cpp (fused C++ kernel on CPU float32; elsewhere the {torch_path})"
    return f"fast-torch ({torch_path}; {cpp_kernel.status()})"
