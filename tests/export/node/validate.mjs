// The Khronos glTF validator (npm gltf-validator) on GLB/glTF files.
// Usage: node validate.mjs FILE...   prints one JSON array of reports (stdout).
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");
const reports = [];
for (const file of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(file));
  const dir = path.dirname(file);
  const report = await validator.validateBytes(data, {
    uri: path.basename(file),
    maxIssues: 200,
    externalResourceFunction: (uri) => readFile(path.resolve(dir, decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
  });
  reports.push(report);
}
process.stdout.write(JSON.stringify(reports));
