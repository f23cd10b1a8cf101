"""Sending the live picture out to other machines: a network stream (udp, srt, rtmp through ffmpeg)
and NDI (the optional `soundvj[ndi]` extra). Both are frame sinks of the render worker that send at
a constant frame rate on their own thread (`paced_output.PacedOutput`)."""
