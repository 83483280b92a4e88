#!/usr/bin/env bash
# System packages the build needs: python-qpid-proton compiles from source and
# silently drops TLS when pkg-config or the OpenSSL headers are missing
# (STACK.md §1), so they must be there before pip runs.
# Installs what is missing when run as root; otherwise stops with one line.
# `--bench` adds xmllint (libxml2-utils), the yardstick of benchmarks/plan_scale.py;
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
if [ "${1:-}" = "--bench" ]; then
  command -v xmllint >/dev/null || missing+=(libxml2-utils)
fi
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
