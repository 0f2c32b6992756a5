#!/usr/bin/env bash
# Start MusicGen Studio on a fresh Debian/Ubuntu machine: install ffmpeg and the Python packages,
# then run the app (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT and the README's settings).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg
fi
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
exec python3 app.py
