#!/usr/bin/env bash
# The main job on embedded defaults: the demo municipality's manifest and its
# synthetic export (Test-Norge numbers only). Each step says what it does.
set -euo pipefail
IPLOSCTL=${1:-iplosctl}
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "iplosctl validate manifests/   (schema, reporting-year profile, plugins, files)"
"$IPLOSCTL" validate manifests/

step "iplosctl plan manifests/   (every pre-flight rule; what apply would send; no personal data)"
"$IPLOSCTL" plan manifests/
