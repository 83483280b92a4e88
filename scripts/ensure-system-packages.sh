#!/usr/bin/env bash
# System packages the build needs: python-qpid-proton compiles from source and
# silently drops TLS when pkg-config or the OpenSSL headers are missing
# (STACK.md §1), so they must be there before pip runs.
# Installs what is missing when run as root; otherwise stops with one line.
# xmllint (libxml2-utils) is the yardstick of benchmarks/plan_scale.py, which a test runs
# at a toy size (tests/test_benchmarks_run.py); `--bench` is kept and adds nothing more.
# `--ci-tools` adds Node.js and npm, which run the CI-template checkers (scripts/ci-tools.sh).
set -euo pipefail

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  echo "error: $PYTHON not found: install Python 3.11 or newer (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: iplosctl needs Python >= 3.11, $PYTHON is $("$PYTHON" -V 2>&1): set PYTHON=python3.11" >&2
  exit 1
fi

missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing+=(python3-dev)
command -v openssl >/dev/null || missing+=(openssl)
# The EDI transport's tests run their own dovecot (IMAP) on loopback (tests/mailservers.py).
{ command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ]; } || missing+=(dovecot-imapd)
command -v xmllint >/dev/null || missing+=(libxml2-utils)
if [ "${1:-}" = "--ci-tools" ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing system packages; run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts the system-wide dovecot on every interface when it is installed: the
# tests need only the binary (each run starts its own, loopback only), so stop it.
if [[ " ${missing[*]} " == *" dovecot-imapd "* ]]; then
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now dovecot >/dev/null 2>&1 || true
  else
    service dovecot stop >/dev/null 2>&1 || true
    update-rc.d dovecot disable >/dev/null 2>&1 || true
  fi
fi
