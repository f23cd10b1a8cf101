"""Another Link app in a process of its own, for `tests/test_link.py`: plain aalink, none of soundvj's
code, as a DJ's deck or a drum machine would join the session.

Run only inside a loopback-only network namespace: it refuses to start Link (exit 3) when the
process sees any network interface besides `lo`, because Link multicasts on every interface.

Talks JSON lines: it prints {"ready": true} once Link is enabled, then answers each line on stdin:
    state          -> {"bpm": .., "beat": .., "at": .., "peers": ..}  (at: time.monotonic() around
                      the beat read; CLOCK_MONOTONIC is one clock for every process on the machine)
    tempo <bpm>    -> {"tempo": <bpm>}   sets the session's tempo (every peer follows)
    quit           -> ends (also on end of input)
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

QUANTUM = 4


def only_loopback() -> bool:
    """True if this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> int:
    import aalink

    link = aalink.Link(120.0)
    link.quantum = QUANTUM
    link.enabled = True
    say(ready=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                return 0
            if words[0] == "state":
                bpm = link.tempo
                before = time.monotonic()
                beat = link.beat
                after = time.monotonic()
                say(bpm=bpm, beat=beat, at=0.5 * (before + after), peers=link.num_peers)
            elif words[0] == "tempo":
                link.tempo = float(words[1])
                say(tempo=float(words[1]))
            else:
                say(error=f"unknown command {words[0]!r}")
    finally:
        link.enabled = False


if __name__ == "__main__":
    if not only_loopback():
        print("link_peer: refusing to start Link outside a loopback-only network namespace", file=sys.stderr)
        sys.exit(3)
    sys.exit(asyncio.run(main()))
