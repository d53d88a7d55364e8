#!/usr/bin/env bash
# Everything a fresh machine needs: ffmpeg, redis-server and chromium, and the npm packages, then the build.
# Works offline except for the npm registry and Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the features and tests need, installed together (one apt-get update) when any is missing:
# ffmpeg (video decoding), redis-server (the search queue's tests start one), chromium (the web page tests).
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: warning: ${missing[*]} not installed (video commands, the search queue and page tests need them)" >&2
  fi
fi

# The environment variable skips onnxruntime-node's
# CUDA download (no network beyond the registry); `prepare` builds dist/.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
