#!/usr/bin/env bash
# Tools the test suite needs besides the servers: Debian's chromium for the browser test, and Debian's
# prometheus-alertmanager for amtool (tests/unit/test_alertmanager.py checks the Alertmanager configuration
# with it; `mrr-stream servers start` installs the same package for the local Alertmanager).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ "${#missing[@]}" -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
echo "installing Debian's ${missing[*]} for the tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
