#!/usr/bin/env bash
# Production install of voipgw: only what it needs at run time (no test peers, no test tools, nothing enabled
# behind your back). Run from a checkout, as root:
#
#   sudo scripts/install.sh            # libopus0 + python3-venv, the voipgw user, /opt/voipgw/venv (a wheel of this
#                                      # checkout and its run-time dependencies), /etc/voipgw/gateway.toml (from the
#                                      # example, if absent), /var/lib/voipgw (0700), the systemd unit (not enabled)
#   sudo scripts/install.sh --enable   # the same, then `systemctl enable --now voipgw-gateway`
#
# --root DIR installs under DIR instead of / (packaging, tests); --no-apt and --no-user skip those steps.
# The softphone needs libportaudio2 too (--phone). Idempotent: run it again to upgrade the venv in place.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT="" APT=1 USER_STEP=1 ENABLE=0 PHONE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --no-apt) APT=0; shift ;;
    --no-user) USER_STEP=0; shift ;;
    --enable) ENABLE=1; shift ;;
    --phone) PHONE=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$ROOT" ] && [ "$ENABLE" = 1 ]; then
  echo "install: --enable acts on this machine's systemd; not with --root" >&2; exit 2
fi
if [ "$(id -u)" != 0 ] && { [ "$APT" = 1 ] || [ "$USER_STEP" = 1 ] || [ -z "$ROOT" ]; }; then
  echo "install: run as root (or use --root DIR --no-apt --no-user)" >&2; exit 1
fi

if [ "$APT" = 1 ]; then
  pkgs=(libopus0 python3-venv)
  [ "$PHONE" = 1 ] && pkgs+=(libportaudio2)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ "$USER_STEP" = 1 ] && ! getent passwd voipgw >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/voipgw --no-create-home --shell /usr/sbin/nologin voipgw
fi
owner() {  # chown only where the voipgw user exists (not under --root without it)
  if getent passwd voipgw >/dev/null && [ "$(id -u)" = 0 ]; then chown "$@"; fi
}

VENV="$ROOT/opt/voipgw/venv"
mkdir -p "$ROOT/opt/voipgw"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# A regular (not editable) install of this checkout, without the [test] extras.
"$VENV/bin/pip" install -q --upgrade "$SRC"

install -d -m 0755 "$ROOT/etc/voipgw"
if [ ! -e "$ROOT/etc/voipgw/gateway.toml" ]; then
  install -m 0640 "$SRC/config/gateway.example.toml" "$ROOT/etc/voipgw/gateway.toml"
fi
owner root:voipgw "$ROOT/etc/voipgw/gateway.toml"
chmod 0640 "$ROOT/etc/voipgw/gateway.toml"  # it holds the PBX passwords
install -d -m 0700 "$ROOT/var/lib/voipgw"
owner voipgw:voipgw "$ROOT/var/lib/voipgw"
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$SRC/config/voipgw-gateway.service" "$ROOT/etc/systemd/system/voipgw-gateway.service"

echo "install: voipgw $("$VENV/bin/voipgw" --version | cut -d' ' -f2) in $VENV"
if [ "$ENABLE" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now voipgw-gateway
  echo "install: voipgw-gateway enabled and started (journalctl -u voipgw-gateway)"
else
  echo "install: next: edit $ROOT/etc/voipgw/gateway.toml, then"
  echo "  sudo -u voipgw $VENV/bin/voipgw --home /var/lib/voipgw gateway check /etc/voipgw/gateway.toml"
  echo "  sudo systemctl enable --now voipgw-gateway"
fi
