#!/usr/bin/env bash
# System packages the tests need: mosquitto (a real MQTT broker for the MQTT tests),
# mosquitto-clients (mosquitto_sub, a real MQTT client the MQTT tests read with),
# libusb-1.0-0 (pyusb's backend for board discovery), graphviz (radloggerd graph -> SVG/PNG),
# chromium (the headless browser tests/test_dashboard.py drives through Playwright; Playwright's
# own browser download is never used),
# hdf5-tools (h5dump: the HDF5 store must stay readable by the distribution's HDF5 1.10 tools).
# Installs only what is missing; needs apt-get (Debian/Ubuntu) and root or sudo.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need+=(libusb-1.0-0)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v h5dump >/dev/null 2>&1 || need+=(hdf5-tools)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages present"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
