#!/usr/bin/env bash
# Makes sure the system tools the test suite drives are there (the README's commands use curl; the catalog's
# browser tests drive headless Chromium through chromedriver), installing Debian's packages first where one is
# missing and we are root; otherwise says what to install.
set -euo pipefail
# command:package, one per tool
tools=(curl:curl chromium:chromium chromedriver:chromium-driver)
missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "missing ${missing[*]}: installing Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >&2
else
  echo "error: the test suite needs ${missing[*]}; install it (e.g. 'sudo apt-get install ${missing[*]}')" >&2
  exit 1
fi
