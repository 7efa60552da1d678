#!/usr/bin/env bash
# Install or upgrade the gridpeer gateway on Raspberry Pi OS (Debian bookworm or later).
#
#   sudo deploy/install-pi.sh --authority-key HEX [--node ID] [--community ID] [--source SPEC]
#   (--authority-key is needed on a first install only)
#
# Layout: a system user `gridpeer`; the code in a venv at /opt/gridpeer; the config, node key
# and TLS files in /etc/gridpeer (readable by the service, writable only by root); the ledger
# and status in /var/lib/gridpeer; the hardened unit deploy/gridpeer.service.
#
# Safe to run again: an existing config or node key is never replaced (the key is the home's
# identity in the community), the venv is upgraded in place, and the unit is replaced. The
# service is enabled, and started only once the installer's membership certificate is there.
set -euo pipefail

PREFIX=/opt/gridpeer
CONFIG_DIR=/etc/gridpeer
STATE_DIR=/var/lib/gridpeer
UNIT_DIR=/etc/systemd/system
SERVICE_USER=gridpeer
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(dirname "$HERE")   # the checkout this script sits in; --source takes a pip spec
NODE=""
COMMUNITY=""
AUTHORITY_KEY=""

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
    echo "install-pi: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --node) NODE=${2:?--node needs a value}; shift 2 ;;
        --community) COMMUNITY=${2:?--community needs a value}; shift 2 ;;
        --authority-key) AUTHORITY_KEY=${2:?--authority-key needs a value}; shift 2 ;;
        --source) SOURCE=${2:?--source needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...)"
# A new gateway trusts exactly one community authority; there is no default key to fall back on.
[ -e "$CONFIG_DIR/gridpeer.toml" ] || [ -n "$AUTHORITY_KEY" ] \
    || die "a first install needs --authority-key HEX (the community authority's public key, from your installer)"
command -v systemctl >/dev/null || die "systemd is required"

echo "==> system packages"
missing=()
for pkg in python3 python3-venv python3-pip; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "==> user $SERVICE_USER"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "gridpeer gateway" "$SERVICE_USER"
fi
# Modbus RTU adapters are /dev/ttyUSB* and the Pi's UARTs, owned by group dialout.
usermod --append --groups dialout "$SERVICE_USER"

echo "==> venv $PREFIX"
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --upgrade pip
# numpy and cryptography arrive as wheels: PyPI's on 64-bit Raspberry Pi OS, piwheels' (named in
# the OS's /etc/pip.conf, which the venv's pip reads too) on 32-bit; nothing is compiled on the Pi.
"$PREFIX/bin/python" -m pip install --quiet --upgrade "$SOURCE"

echo "==> folders"
install -d -o root -g "$SERVICE_USER" -m 0750 "$CONFIG_DIR" "$CONFIG_DIR/tls"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE_DIR"

echo "==> config"
if [ ! -e "$CONFIG_DIR/gridpeer.toml" ]; then
    init_args=(init --dir "$CONFIG_DIR")
    [ -n "$NODE" ] && init_args+=(--node "$NODE")
    [ -n "$COMMUNITY" ] && init_args+=(--community "$COMMUNITY")
    init_args+=(--authority-key "$AUTHORITY_KEY")
    "$PREFIX/bin/gridpeer" "${init_args[@]}"
    # /etc is read-only to the service (ProtectSystem=strict): state goes to /var/lib.
    sed -i "s|^state_dir = \"state\"|state_dir = \"$STATE_DIR\"|" "$CONFIG_DIR/gridpeer.toml"
    grep -q "^state_dir = \"$STATE_DIR\"" "$CONFIG_DIR/gridpeer.toml" \
        || die "could not set state_dir in $CONFIG_DIR/gridpeer.toml; set it to $STATE_DIR"
else
    echo "    keeping $CONFIG_DIR/gridpeer.toml"
fi
# The node key is the service's own secret: owner-only, owned by the service user.
if [ -e "$CONFIG_DIR/node.key" ]; then
    chown "$SERVICE_USER:$SERVICE_USER" "$CONFIG_DIR/node.key"
    chmod 0600 "$CONFIG_DIR/node.key"
fi
chown root:"$SERVICE_USER" "$CONFIG_DIR/gridpeer.toml"
chmod 0640 "$CONFIG_DIR/gridpeer.toml"
# TLS client key from the community installer (`gridpeer community broker-config`), if copied.
for key in "$CONFIG_DIR"/tls/*.key; do
    [ -e "$key" ] || continue
    chown "$SERVICE_USER:$SERVICE_USER" "$key"
    chmod 0600 "$key"
done

echo "==> systemd unit"
install -o root -g root -m 0644 "$HERE/gridpeer.service" "$UNIT_DIR/gridpeer.service"
systemctl daemon-reload
systemctl enable gridpeer.service >/dev/null
if [ -e "$CONFIG_DIR/node.cert" ]; then
    systemctl restart gridpeer.service
    echo "gridpeer is running: journalctl -u gridpeer -f"
else
    echo "next: send the node public key above to your community installer, put the"
    echo "certificate at $CONFIG_DIR/node.cert (and the TLS files in $CONFIG_DIR/tls/),"
    echo "edit $CONFIG_DIR/gridpeer.toml, then: systemctl start gridpeer"
fi
