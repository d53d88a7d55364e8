#!/usr/bin/env bash
# Everything a fresh machine needs: ffmpeg (video features) and the npm packages, then the build.
# Works offline except for the npm registry and Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ffmpeg (video decoding)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "setup: warning: ffmpeg is not installed; video commands will ask for it" >&2
  fi
fi

# The environment variable skips onnxruntime-node's
# CUDA download (no network beyond the registry); `prepare` builds dist/.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
