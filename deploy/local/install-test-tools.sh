#!/usr/bin/env bash
# Tools the test suite needs besides the servers: Debian's chromium for the browser test.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
echo "installing Debian's chromium for the browser test"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
