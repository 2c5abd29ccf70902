#!/bin/sh
# Browser tests drive Debian's chromium with Playwright (no browser download). Install it when it is missing.
set -e
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "chromium is missing and cannot be installed here (need root and apt-get): browser tests will fail" >&2
    exit 1
fi
