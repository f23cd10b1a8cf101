"""Writing rendered frames (and the input's audio) to an H.264/AAC .mp4, and reading such files back.

`Mp4Writer` encodes frames as they arrive and muxes the audio alongside them, so memory stays flat over
a long render. The file appears under its final name only when `close()` finishes cleanly: until then it
is written to a hidden temp file next to it (`core.atomic_write`: `.OUT.mp4.XXXX.partial`), which is
deleted on any exception, `abort()`, KeyboardInterrupt, or a SIGTERM the CLI turns into an exception. A
SIGKILL (or power loss) cannot be caught, so it may leave that temp file behind; it never leaves a
half-written OUT.mp4, and an existing OUT.mp4 stays intact until the finished file is renamed over it.

The audio either comes whole up front (offline renders) or in chunks through `write_audio()` (live
recording, where it arrives from the sound card while frames are rendered).
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from core.atomic_write import atomic_path, temp_path_beside
from core.errors import SoundvjError, one_line

__all__ = ["MediaInfo", "Mp4Writer", "check_output_path", "probe_media", "to_uint8_rgb"]

# Both go through FFmpeg's mov muxer, which trims AAC priming with an edit list; matroska would not.
OUTPUT_SUFFIXES = (".mp4", ".mov")

# Sample rates AAC codes natively; anything else is resampled to 48 kHz (the video-world standard).
AAC_SAMPLE_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000})
FALLBACK_SAMPLE_RATE = 48000

# Used as the mp4 "movie timescale" when there's no audio: a multiple of every common frame rate,
# including the NTSC ones, so edit lists don't round the last frame.
VIDEO_ONLY_TIMESCALE = 90000

# libx264's constant-rate-factor range (8-bit): 0 is lossless, 51 the worst.
CRF_MIN, CRF_MAX = 0, 51

# FFmpeg's AVCOL_PRI/TRC/SPC_BT709 and AVCOL_RANGE_MPEG: tagged so players don't guess BT.601.
AVCOL_BT709 = 1
AVCOL_RANGE_MPEG = 1


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> Path:
    """Fail fast (before any rendering) if `path` can't become the output file (a video unless other
    `suffixes` are given); returns it absolute.

    Writability is tested by creating a scratch file in the folder: `os.access` says yes to root even
    for a read-only folder, and only an actual create sees EROFS/EACCES.
    """
    out = Path(path).expanduser().absolute()
    if out.is_dir():
        raise SoundvjError(f"{out}: is a folder; give a file name such as {out / 'out.mp4'}")
    if out.suffix.lower() not in suffixes:
        got = f"'{out.suffix}'" if out.suffix else "no extension"
        raise SoundvjError(f"{out}: output must end in {' or '.join(suffixes)} (got {got})")
    folder = out.parent
    if not folder.exists():
        raise SoundvjError(f"{out}: output folder {folder} does not exist")
    if not folder.is_dir():
        raise SoundvjError(f"{out}: {folder} is not a folder")
    try:
        probe = temp_path_beside(out, ".write-check")
    except OSError as e:
        raise SoundvjError(f"{out}: cannot write to output folder {folder} ({one_line(e)})") from None
    probe.unlink()
    return out


def to_uint8_rgb(img: torch.Tensor) -> torch.Tensor:
    """The generator's raw [3,H,W] (or [1,3,H,W]) output in [-1,1] as a uint8 [H,W,3] RGB image, same device."""
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"to_uint8_rgb expects a [3,H,W] image, got shape {tuple(img.shape)}")
    # 127.5/128 (not 127.5/127.5) matches StyleGAN's own image export, truncating towards zero.
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def exact_frame_rate(fps: float | Fraction) -> Fraction:
    """fps as a Fraction; 23.976/29.97/59.94/119.88 mean the NTSC rates (24000/1001 etc.), not 2997/100."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(fps).limit_denominator(1001)
        for base in (24, 30, 48, 60, 120):
            ntsc = Fraction(base * 1000, 1001)
            if abs(float(fps) - float(ntsc)) < 0.005:
                rate = ntsc
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _audio_as_array(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 [channels, n] on the CPU, finite and within [-1, 1]."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    if samples.ndim != 2:
        raise ValueError(f"audio must be [channels, n] or [n], got shape {samples.shape}")
    if samples.shape[0] not in (1, 2):
        raise ValueError(f"audio has {samples.shape[0]} channels; Mp4Writer muxes mono or stereo (downmix first)")
    return np.clip(np.nan_to_num(samples), -1.0, 1.0)


def _write_failed(path: Path, error: BaseException) -> SoundvjError:
    """A failed write (full disk, file size limit, vanished folder) as the user's one line."""
    return SoundvjError(f"{path}: writing the video failed ({one_line(error)})")


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Discarded(Exception):
    """Ends the temp file's `atomic_path` block as a failure: the temp file is removed, the output kept."""


class Mp4Writer:
    """H.264 (yuv420p, BT.709) video with optional AAC audio, written atomically to `path`.

    Use as a context manager: `with Mp4Writer(out, fps, w, h, audio, sr) as w: w.write(frame)`.
    The audio is cut or padded with silence to exactly frame_count / fps when the writer closes.

    Two ways to give audio:
    - whole track: `audio=` [channels, n] samples (any sample rate; non-AAC rates are resampled to 48 kHz).
    - live track: `audio=None, sample_rate=sr, audio_channels=1|2`, then `write_audio(chunk)` as chunks
      arrive, in any sizes and in any order relative to `write()`. Audio sample 0 plays with frame 0.
      Audio is encoded as soon as both it and the video up to it are there; audio that runs ahead of the
      video waits (see `audio_samples_buffered`), because at close() everything past the last frame's
      end is dropped, and a short track is padded with silence.

    Not thread-safe: one thread (e.g. the recorder's) must make all calls, frames and audio alike.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        audio: torch.Tensor | np.ndarray | None = None,
        sample_rate: int | None = None,
        crf: int = 18,
        preset: str = "medium",
        audio_channels: int | None = None,
    ) -> None:
        self.path = check_output_path(path)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise SoundvjError(
                f"{self.path}: H.264 (yuv420p) needs an even, positive width and height, got {width}x{height}"
            )
        if isinstance(crf, bool) or not isinstance(crf, int) or not CRF_MIN <= crf <= CRF_MAX:
            raise SoundvjError(f"{self.path}: crf {crf!r}: expected an integer in [{CRF_MIN}, {CRF_MAX}]")
        self.fps = exact_frame_rate(fps)
        self.width, self.height = int(width), int(height)
        self.frame_count = 0

        self._take_audio_track(audio, sample_rate, audio_channels)
        self._open_temp_container()
        try:
            self._add_streams(crf, preset)
        except BaseException:
            self.abort()
            raise
        self._closed = False

    def _take_audio_track(
        self, audio: torch.Tensor | np.ndarray | None, sample_rate: int | None, audio_channels: int | None
    ) -> None:
        """Check the audio arguments and set up the whole track (`audio=`), a live one, or none."""
        self._samples: np.ndarray | None = None  # the whole track, when given up front
        # Live track: chunks received but not yet encoded, oldest first (None when not live).
        self._pending: deque[np.ndarray] | None = None
        self._pending_count = 0
        self._samples_sent = 0
        self.sample_rate: int | None = None
        self.audio_channels: int | None = None
        if audio is not None:
            if audio_channels is not None:
                raise ValueError("give either the whole audio track (audio=) or a live one (audio_channels=), not both")
            if sample_rate is None or sample_rate <= 0:
                raise ValueError("sample_rate is required (and positive) when audio is given")
            self._samples, self.sample_rate = self._prepare_audio(audio, int(sample_rate))
            self.audio_channels = self._samples.shape[0]
        elif audio_channels is not None:
            if audio_channels not in (1, 2):
                raise ValueError(f"audio_channels must be 1 or 2, got {audio_channels} (downmix first)")
            if sample_rate is None or sample_rate <= 0:
                raise ValueError("sample_rate is required (and positive) for a live audio track")
            if int(sample_rate) not in AAC_SAMPLE_RATES:
                # Resampling chunk by chunk would need a stateful resampler; sound cards offer these rates anyway.
                raise ValueError(
                    f"live audio must be at a rate AAC codes natively (e.g. 44100 or 48000), got {sample_rate}"
                )
            self.sample_rate, self.audio_channels = int(sample_rate), int(audio_channels)
            self._pending = deque()

    def _open_temp_container(self) -> None:
        """Create the temp file beside the output and open it as the mp4/mov container."""
        container_format = "mov" if self.path.suffix.lower() == ".mov" else "mp4"
        # The writer spans many calls, so the atomic_path block is entered here and ended by
        # close() (rename over the output) or abort() (remove). PyAV is given the container format,
        # so the temp name need not end in .mp4.
        self._output = atomic_path(self.path, suffix=".partial")
        try:
            self.temp_path = self._output.__enter__()
        except OSError as e:
            raise _write_failed(self.path, e) from None
        # Removes the temp file if this object is dropped (or the interpreter exits) without close().
        self._cleanup = weakref.finalize(self, _remove_quietly, str(self.temp_path))
        # The edit list that hides AAC priming is stored in the movie timescale (default 1000 = ms), which
        # would round the audio's length by up to half a ms; the sample rate keeps it sample-exact.
        timescale = self.sample_rate or VIDEO_ONLY_TIMESCALE
        try:
            self._container = av.open(
                str(self.temp_path),
                mode="w",
                format=container_format,
                options={"movie_timescale": str(timescale), "movflags": "+faststart"},
            )
        except (OSError, av.FFmpegError) as e:
            self._finish_output(keep=False)
            raise _write_failed(self.path, e) from None
        except BaseException:
            self._finish_output(keep=False)
            raise

    def _add_streams(self, crf: int, preset: str) -> None:
        """The H.264 video stream (BT.709, tagged) and, with an audio track, the AAC stream."""
        self._video = self._container.add_stream(
            "libx264", rate=self.fps, options={"crf": str(int(crf)), "preset": preset}
        )
        self._video.width, self._video.height = self.width, self.height
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / self.fps  # pts counts frames
        ctx = self._video.codec_context
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = AVCOL_BT709
        ctx.color_range = AVCOL_RANGE_MPEG
        self._audio = None
        if self.audio_channels is not None:
            layout = "mono" if self.audio_channels == 1 else "stereo"
            self._audio = self._container.add_stream("aac", rate=self.sample_rate, layout=layout)
            self._audio.codec_context.time_base = Fraction(1, self.sample_rate)

    @staticmethod
    def _prepare_audio(audio: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
        samples = _audio_as_array(audio)
        if sample_rate in AAC_SAMPLE_RATES:
            return samples, sample_rate
        import torchaudio.functional

        resampled = torchaudio.functional.resample(torch.from_numpy(samples), sample_rate, FALLBACK_SAMPLE_RATE)
        return np.clip(resampled.numpy(), -1.0, 1.0), FALLBACK_SAMPLE_RATE

    @property
    def closed(self) -> bool:
        """Whether `close()` or `abort()` has run: the writer takes no more frames or audio."""
        return self._closed

    @property
    def audio_samples_sent(self) -> int:
        """Audio samples handed to the encoder so far (it tracks the video as frames are written)."""
        return self._samples_sent

    @property
    def audio_samples_buffered(self) -> int:
        """Live audio received but not yet encoded: how far the audio runs ahead of the video (0 if not live).

        A recorder can watch this to notice video falling behind; it grows without bound if frames stop.
        """
        return self._pending_count

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _frame_as_hwc_uint8(self, frame: torch.Tensor | np.ndarray) -> np.ndarray:
        h, w = self.height, self.width
        if isinstance(frame, np.ndarray):
            frame = torch.from_numpy(frame)
        if frame.ndim == 4 and frame.shape[0] == 1:
            frame = frame[0]
        if frame.dtype != torch.uint8:
            if not frame.is_floating_point():
                raise ValueError(f"frame must be uint8 RGB or a float image in [-1,1], got dtype {frame.dtype}")
            frame = to_uint8_rgb(frame)
        # Decide layout by the writer's size, so a 3-pixel-wide image isn't mistaken for CHW.
        if tuple(frame.shape) == (h, w, 3):
            hwc = frame
        elif tuple(frame.shape) == (3, h, w):
            hwc = frame.permute(1, 2, 0)
        else:
            raise ValueError(f"frame shape {tuple(frame.shape)} is neither [{h},{w},3] nor [3,{h},{w}]")
        return np.ascontiguousarray(hwc.detach().cpu().numpy())

    def write(self, frame: torch.Tensor | np.ndarray) -> None:
        """Encode one frame: uint8 RGB [H,W,3]/[3,H,W] (numpy or torch) or a float [3,H,W] image in [-1,1]."""
        if self._closed:
            raise RuntimeError(f"{self.path}: write() after close() or abort()")
        rgb = av.VideoFrame.from_ndarray(self._frame_as_hwc_uint8(frame), format="rgb24")
        yuv = rgb.reformat(format="yuv420p", src_colorspace="ITU709", dst_colorspace="ITU709", dst_color_range="MPEG")
        yuv.pts = self.frame_count
        yuv.time_base = self._video.codec_context.time_base
        try:
            self._container.mux(self._video.encode(yuv))
            self.frame_count += 1
            if self._audio is not None:
                self._send_due_audio()
        except (OSError, av.FFmpegError) as e:
            # The writer stays open: the caller decides between close() (keep what is there) and abort().
            raise _write_failed(self.path, e) from None

    def write_audio(self, samples: torch.Tensor | np.ndarray) -> None:
        """Append a chunk to the live audio track: float [channels, n] (or [n] for mono) in [-1, 1].

        NaN and ±inf become 0 and the rest is clipped to [-1, 1]. The chunk is copied, so the caller may
        reuse its buffer. Whole AAC frames are encoded as soon as the video has reached them.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: write_audio() after close() or abort()")
        if self._pending is None:
            if self._samples is not None:
                raise ValueError(
                    f"{self.path}: write_audio() needs a live audio track, but this writer was given the whole "
                    "track up front"
                )
            raise ValueError(
                f"{self.path}: write_audio() on a writer with no audio track; "
                "create it with sample_rate= and audio_channels= to record live audio"
            )
        chunk = self._live_chunk_as_array(samples)
        if chunk.shape[1] == 0:
            return
        self._pending.append(chunk)
        self._pending_count += chunk.shape[1]
        try:
            self._send_due_audio()
        except (OSError, av.FFmpegError) as e:
            raise _write_failed(self.path, e) from None

    def _live_chunk_as_array(self, samples: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(samples, torch.Tensor):
            is_float = samples.is_floating_point()
        else:
            samples = np.asarray(samples)
            is_float = np.issubdtype(samples.dtype, np.floating)
        if not is_float:
            # Integer PCM (e.g. int16 from the sound card) would be clipped to ±1, not scaled: refuse it.
            raise ValueError(f"write_audio() expects float samples in [-1, 1], got dtype {samples.dtype}")
        shape = tuple(samples.shape)
        channels = 1 if len(shape) == 1 else shape[0] if len(shape) == 2 else None
        if channels != self.audio_channels:
            # Sound card libraries hand out [n, channels] blocks; say so, since that's the likely mistake.
            transposed = len(shape) == 2 and shape[1] == self.audio_channels
            hint = "; it looks like [n, channels], so transpose it" if transposed else ""
            raise ValueError(
                f"write_audio() expects [{self.audio_channels}, n]"
                + (" or [n]" if self.audio_channels == 1 else "")
                + f" for this {self.audio_channels}-channel track, got shape {shape}{hint}"
            )
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().to("cpu", torch.float32).numpy()
        # nan_to_num and clip return new arrays, so nothing aliases the caller's buffer.
        finite = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return _audio_as_array(finite)

    def _send_due_audio(self) -> None:
        """Encode the audio up to the video written so far, in whole AAC frames, so the muxer's queue stays short."""
        frame_size = self._audio.codec_context.frame_size or 1024
        due = int(self.frame_count * self.sample_rate / self.fps)
        if self._pending is not None:
            due = min(due, self._samples_sent + self._pending_count)  # live: only what has arrived
        self._send_audio_until(due - due % frame_size)

    def _take_input_audio(self, start: int, end: int) -> np.ndarray:
        """Input samples [start, end), fewer if the input has run out."""
        if self._pending is None:
            return self._samples[:, start:end]
        wanted = end - start
        taken: list[np.ndarray] = []
        while self._pending and wanted > 0:
            head = self._pending[0]
            if head.shape[1] <= wanted:
                taken.append(self._pending.popleft())
            else:
                taken.append(head[:, :wanted])
                self._pending[0] = head[:, wanted:]
            wanted -= taken[-1].shape[1]
            self._pending_count -= taken[-1].shape[1]
        if not taken:
            return np.zeros((self.audio_channels, 0), np.float32)
        return np.concatenate(taken, axis=1)

    def _send_audio_until(self, end: int) -> None:
        """Encode input samples [sent, end), silence past the input's end."""
        start = self._samples_sent
        if end <= start:
            return
        chunk = self._take_input_audio(start, end)
        if chunk.shape[1] < end - start:
            chunk = np.pad(chunk, ((0, 0), (0, end - start - chunk.shape[1])))
        layout = "mono" if chunk.shape[0] == 1 else "stereo"
        audio_frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
        audio_frame.sample_rate = self.sample_rate
        # pts in samples (the stream's 1/sample_rate time base). The encoder's 1024-sample priming comes
        # out as a negative-pts first packet, and the mov muxer hides it with an edit list.
        audio_frame.pts = start
        audio_frame.time_base = Fraction(1, self.sample_rate)
        self._container.mux(self._audio.encode(audio_frame))
        self._samples_sent = end

    def close(self) -> None:
        """Flush the encoders, finish the file and move it to its final name."""
        if self._closed:
            return
        try:
            if self.frame_count == 0:
                raise RuntimeError(f"{self.path}: no frames were written; nothing to save")
            if self._audio is not None:
                # Exactly the video's duration; a short last AAC frame is allowed and keeps it sample-exact.
                self._send_audio_until(round(self.frame_count * self.sample_rate / self.fps))
                self._container.mux(self._audio.encode(None))
                if self._pending is not None:
                    # Live audio past the last frame's end has no picture to go with: dropped.
                    self._pending.clear()
                    self._pending_count = 0
            self._container.mux(self._video.encode(None))
            self._container.close()
            self._finish_output(keep=True)
        except (OSError, av.FFmpegError) as e:
            self.abort()
            raise _write_failed(self.path, e) from None
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop the render: close without finishing and delete the temp file. The output path is untouched."""
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass  # it's being thrown away; a failing close mustn't hide the original error
        finally:
            self._finish_output(keep=False)

    def _finish_output(self, keep: bool) -> None:
        """End the temp file's atomic_path block, once: `keep` renames it over the output (synced to
        disk first); otherwise it is removed and the output is left as it was."""
        output, self._output = self._output, None
        if output is None:
            return
        self._cleanup.detach()
        if keep:
            output.__exit__(None, None, None)  # raises (after removing the temp file) if the rename fails
        else:
            output.__exit__(_Discarded, _Discarded(), None)


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, as PyAV decodes it. Video fields are None when there is no video stream."""

    path: str
    has_video: bool
    video_codec: str | None
    frame_count: int | None  # decoded, so exact
    fps: float | None
    width: int | None
    height: int | None
    video_duration: float | None  # seconds
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    audio_duration: float | None  # seconds, encoder priming and end padding excluded


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """Open `path` with PyAV and decode its first video and audio streams (for exact counts and durations)."""
    src = Path(path)
    if not src.is_file():
        raise SoundvjError(f"{src}: no such file")
    try:
        with av.open(str(src), metadata_errors="replace") as container:
            video_fields = _probe_video(container)
        with av.open(str(src), metadata_errors="replace") as container:
            audio_fields = _probe_audio(container)
    except av.FFmpegError as e:
        raise SoundvjError(f"{src}: not a readable media file ({one_line(e)})") from None
    return MediaInfo(path=str(src), **video_fields, **audio_fields)


def _stream_seconds(stream) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def _probe_video(container) -> dict:
    if not container.streams.video:
        return dict(
            has_video=False, video_codec=None, frame_count=None, fps=None, width=None, height=None, video_duration=None
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frame_count = sum(1 for _ in container.decode(stream))
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = _stream_seconds(stream)
    if duration is None and fps:
        duration = frame_count / fps
    return dict(
        has_video=True,
        video_codec=stream.codec_context.name,
        frame_count=frame_count,
        fps=fps,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        video_duration=duration,
    )


def _probe_audio(container) -> dict:
    if not container.streams.audio:
        return dict(has_audio=False, audio_codec=None, sample_rate=None, channels=None, audio_duration=None)
    stream = container.streams.audio[0]
    decoded_samples = sum(frame.samples for frame in container.decode(stream))
    sample_rate = stream.codec_context.sample_rate
    duration = decoded_samples / sample_rate if sample_rate else None
    # Decoders drop the AAC priming but not the last frame's padding; the container's length (edit list) does.
    container_duration = _stream_seconds(stream)
    if duration is not None and container_duration is not None:
        duration = min(duration, container_duration)
    return dict(
        has_audio=True,
        audio_codec=stream.codec_context.name,
        sample_rate=sample_rate,
        channels=stream.codec_context.channels,
        audio_duration=duration,
    )
