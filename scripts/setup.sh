#!/usr/bin/env bash
# Idempotent set-up: Debian packages (only the missing ones), then .venv with voipgw and its test tools.
# Usage: scripts/setup.sh            (safe to run any number of times)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libopus0 libportaudio2          # codec and audio-device libraries used through ctypes
  kamailio                        # PBX / registrar / proxy in the integration tests
  kamailio-tls-modules            # Kamailio listening on SIP over TLS in the tests
  baresip-core                    # unmodified softphone peer
  sip-tester                      # sipp
  rtpengine-daemon                # RTP relay that rewrites headers
  tshark                          # wire captures in tests and the demo
  espeak-ng sox libsox-fmt-all    # speech fixtures
  chromium chromium-driver        # the web phone's page in a real browser (tests/web, headless, Selenium)
  python3-venv
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The test peers are run by the tests themselves, on loopback, and stopped by PID. Their Debian packages enable
# system services on install: never leave those enabled or running (a developer machine is not a PBX).
TEST_DAEMONS=(kamailio rtpengine-daemon)
if command -v systemctl >/dev/null; then
  for svc in "${TEST_DAEMONS[@]}"; do
    if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
      echo "setup: disabling the $svc system service (the tests start their own)"
      SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
      $SUDO systemctl disable --quiet "$svc" 2>/dev/null || $SUDO systemctl disable "$svc"
    fi
    if [ -d /run/systemd/system ] && systemctl is-active --quiet "$svc" 2>/dev/null; then
      SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
      $SUDO systemctl stop "$svc"
    fi
  done
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.voipgw-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
