"""Take the README's screenshot of the live app: the embedded default playing the demo walk.

Run on a display (or a virtual one): `xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
docs/screenshot.py [--at 20] [-o docs/live-window.png]`. The app is the real one (`soundvj live
--file core/assets/demo_walk.opus --preset calm`); the picture is grabbed after `--at` seconds of play.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PyQt6 import QtCore, QtWidgets  # noqa: E402

from core.audio.demo_walk import DEMO_WALK  # noqa: E402
from core.model import load_model  # noqa: E402
from core.params import Params  # noqa: E402
from core.presets import load_preset  # noqa: E402
from visualizer.main_window import MainWindow  # noqa: E402
from visualizer.session import InputChoice, LiveSession  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", type=float, default=20.0, help="seconds of play before the grab")
    ap.add_argument("--preset", default="calm")
    ap.add_argument("-o", "--output", default=str(REPO / "docs" / "live-window.png"))
    args = ap.parse_args()

    app = QtWidgets.QApplication(sys.argv[:1])
    params = load_preset(args.preset).apply(Params())
    session = LiveSession(load_model(None), params, InputChoice(file=str(DEMO_WALK), loop=True))
    session.look = args.preset
    window = MainWindow(session)
    session.on_message = window.message.emit
    window.resize(1280, 860)
    window.show()
    session.worker.set_params(params, 0.0, args.preset)
    session.worker.start()
    session.use_source(session.source_choice)

    def grab() -> None:
        ok = window.grab().save(args.output)
        print(f"{'wrote' if ok else 'could not write'} {args.output}")
        app.quit()

    QtCore.QTimer.singleShot(int(args.at * 1000), grab)
    try:
        app.exec()
    finally:
        session.stop()
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
