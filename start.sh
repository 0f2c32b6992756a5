#!/usr/bin/env bash
# Start MusicGen Studio on a fresh Debian/Ubuntu machine: install ffmpeg and the Python packages
# (with the local engine unless MUSICGEN_ENGINE=replicate),
# then run the app (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT and the README's settings).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg
fi
# The local engine (MusicGen on this machine: transformers + torch) makes music with no account.
# MUSICGEN_ENGINE=replicate skips it (Replicate only, a much smaller install).
if [ "${MUSICGEN_ENGINE:-auto}" = "replicate" ]; then
  python3 -m pip install -q --disable-pip-version-check -r requirements.txt
else
  python3 -m pip install -q --disable-pip-version-check -r requirements-local.txt
  # basic-pitch (MIDI) without its dependencies: they would pull TensorFlow; the ones it uses
  # are in requirements-local.txt (its model runs on onnxruntime).
  python3 -m pip install -q --disable-pip-version-check --no-deps "basic-pitch>=0.4.0"
fi
exec python3 app.py
