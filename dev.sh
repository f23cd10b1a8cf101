#!/usr/bin/env bash
# One-stop set-up and run: `./dev.sh demo` renders the demo video, `./dev.sh test` runs the tests.
# Installs what is missing (Debian packages when run as root, then a .venv with the Python packages)
# and skips what is already there, so running it twice costs seconds.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# Debian packages: g++ (builds the fast CPU kernel; without it a slower pure-PyTorch path runs), ffmpeg (ffprobe for checking videos), jackd2 (a JACK server with a dummy backend: real MIDI ports for the controller tests), PortAudio + PulseAudio (audio device path),
# Xvfb and the libraries Qt needs for a real window on a virtual screen.
APT_PACKAGES="g++ ffmpeg jackd2 libportaudio2 pulseaudio pulseaudio-utils xvfb xauth libegl1 libgl1 libxkbcommon0
  libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1"
# torch 2.14.1 with torchaudio 2.11.0 is the pair known to install and import together.
TORCH_PINS="torch==2.14.1 torchaudio==2.11.0"

log() { printf '[dev.sh] %s\n' "$*" >&2; }

ensure_system_packages() {
  local missing=()
  for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      log "missing Debian packages (${missing[*]}) and not root: install them, tests that need them will skip"
      return 0
    fi
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq || log "apt-get update failed; trying the install anyway"
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # One name may differ on another Debian release (e.g. t64 renames): install the rest one by one.
    for pkg in "${missing[@]}"; do
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 ||
        log "could not install $pkg; features that need it fall back or their tests skip"
    done
  fi
}

ensure_venv() {
  local stamp="$VENV/.soundvj-installed"
  local want
  want=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  log "installing Python packages into $VENV (torch is large; first run takes a few minutes)"
  local pip_log="$VENV/pip-install.log"
  {
    "$VENV/bin/python" -m pip install --upgrade pip &&
    "$VENV/bin/python" -m pip install $TORCH_PINS &&
    "$VENV/bin/python" -m pip install -e ".[live,train,dev]"
  } >"$pip_log" 2>&1 || { tail -n 40 "$pip_log" >&2; log "pip install failed (full log: $pip_log)"; exit 1; }
  echo "$want" > "$stamp"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    ensure_system_packages
    ensure_venv
    out=${1:-demo.mp4}
    "$VENV/bin/soundvj" render --demo --preset calm --size 256x256 -o "$out"
    ;;
  test)
    ensure_system_packages
    ensure_venv
    # The live app's tests open real windows: without a display, run them on a virtual one (Xvfb).
    if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
      xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/python" -m pytest "$@"
    else
      "$VENV/bin/python" -m pytest "$@"
    fi
    ;;
  setup)
    ensure_system_packages
    ensure_venv
    ;;
  *)
    echo "usage: ./dev.sh demo [OUT.mp4] | ./dev.sh test [pytest args] | ./dev.sh setup" >&2
    exit 2
    ;;
esac
