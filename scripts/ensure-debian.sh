#!/bin/sh
# Install a Debian package the tests need when its program is missing (nothing is downloaded at run time):
#   sh scripts/ensure-debian.sh PROGRAM PACKAGE WHAT-NEEDS-IT
# chromium: the browser test drives Debian's chromium with Playwright. nodejs: a second client written in plain
# Node.js (tests/clients/node_client.mjs, built-in modules only).
set -e
program=$1 package=$2 need=$3
if command -v "$program" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's $package for $need" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
else
    echo "$program is missing and cannot be installed here (need root and apt-get): $need will fail" >&2
    exit 1
fi
