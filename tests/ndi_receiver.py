"""An NDI receiver in a process of its own, for `tests/test_ndi_output.py`: plain cyndilib, none of
soundvj's code, as OBS's NDI plugin or a video mixer would receive the source.

    python tests/ndi_receiver.py STREAM_NAME SECONDS

Finds the source named STREAM_NAME (the sender's name, without the host part) within 15 s, connects,
receives for SECONDS and prints one JSON line: the source's full name, the video frames NDI received
and dropped (its own counts) in the seconds since the first, their resolutions, the mean RGB of the
frames looked at, the audio frames NDI received, the samples read and their peak and sample rate.
It runs in a process of its own because cyndilib's receive holds the GIL while it waits, which would starve a
sender in the same process.

Run only inside a loopback-only network namespace: it refuses (exit 3) when the process sees any
network interface besides `lo`, because NDI multicasts on every interface. Containers have no mDNS,
so the test points NDI's discovery at 127.0.0.1 through an NDI config file (NDI_CONFIG_DIR).
"""

from __future__ import annotations

import json
import socket
import sys
import time

import numpy as np


def main() -> int:
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        print(json.dumps({"error": "refusing to start NDI outside a loopback-only network namespace"}))
        return 3
    name, seconds = sys.argv[1], float(sys.argv[2])
    from cyndilib.audio_frame import AudioRecvFrame
    from cyndilib.finder import Finder
    from cyndilib.receiver import ReceiveFrameType, Receiver
    from cyndilib.video_frame import VideoRecvFrame
    from cyndilib.wrapper.ndi_recv import RecvBandwidth, RecvColorFormat

    with Finder() as finder:
        source = None
        end = time.monotonic() + 15.0
        while source is None and time.monotonic() < end:
            finder.wait_for_sources(1.0)
            source = next((s for s in finder if s.stream_name == name), None)
        if source is None:
            print(json.dumps({"error": f"no source {name!r}; found {finder.get_source_names()}"}))
            return 1
        receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        video, audio = VideoRecvFrame(), AudioRecvFrame()
        receiver.set_video_frame(video)
        receiver.set_audio_frame(audio)
        receiver.connect_to(source)
        means: list[list[float]] = []
        resolutions: set[tuple[int, int]] = set()
        samples, rate, peak = 0, 0, 0.0
        first = None
        wanted = ReceiveFrameType.recv_video | ReceiveFrameType.recv_audio
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            got = receiver.receive(wanted, 100)
            if got & ReceiveFrameType.recv_video and video.get_data_size():
                resolutions.add(tuple(video.get_resolution()))
                pixels = np.empty(video.get_data_size(), np.uint8)
                video.fill_p_data(pixels)
                means.append(pixels.reshape(-1, 4)[:, :3].mean(axis=0).round(1).tolist())
                first = first or time.monotonic()
            if got & ReceiveFrameType.recv_audio:
                data, _ = audio.get_all_read_data()
                samples += data.shape[-1] if data.size else 0
                peak = max(peak, float(np.abs(data).max())) if data.size else peak
                rate = audio.sample_rate
        receiver.get_performance_data()
        stats, sound_stats = dict(receiver.video_stats), dict(receiver.audio_stats)
        receiver.disconnect()
    span = (time.monotonic() - first) if first is not None else 0.0
    print(json.dumps({"source": source.name, "frames": stats["frames_total"], "dropped": stats["frames_dropped"],
                      "seconds": span, "resolutions": sorted(resolutions), "means": means,
                      "audio_frames": sound_stats["frames_total"], "audio_samples_read": samples,
                      "audio_peak": peak, "sample_rate": rate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
