#!/usr/bin/env bash
# The main job on embedded defaults: the demo municipality's manifest, its
# synthetic export (Test-Norge numbers only) and the built-in sandbox register.
# Nothing leaves this machine. Run it twice: the second time the plan is a no-op.
set -euo pipefail
IPLOSCTL=${1:-iplosctl}
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "iplosctl validate manifests/   (schema, reporting-year profile, plugins, files)"
"$IPLOSCTL" validate manifests/

step "iplosctl plan manifests/   (every pre-flight rule; what apply would send; no personal data)"
set +e
"$IPLOSCTL" plan manifests/ --detailed-exitcode
planned=$?
set -e
if [ "$planned" -eq 1 ]; then echo "the plan is blocked: see above"; exit 1; fi

if [ "$planned" -eq 2 ]; then
  step "iplosctl apply manifests/ --auto-approve   (MsgHead, CMS sign+encrypt, AMQP 1.0 to the sandbox register)"
  "$IPLOSCTL" apply manifests/ --auto-approve

  step "iplosctl receipts manifests/ --wait 1m   (the register's AppRec, decrypted and verified)"
  "$IPLOSCTL" receipts manifests/ --wait 1m
else
  echo "nothing to send: the last accepted submission already holds this export (a no-op)"
fi

step "iplosctl status manifests/"
"$IPLOSCTL" status manifests/
printf '\nThe lockfile manifests/demo-2023.lock.yaml records what was sent and answered.\n'
printf 'Run `make demo` again: the plan is a no-op. To start over (sandbox only):\n'
printf '  rm -r manifests/demo-2023.lock.yaml .iplosctl/   (the lockfile and the sandbox register'"'"'s memory)\n'
