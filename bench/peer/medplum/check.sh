#!/usr/bin/env bash
# Smoke check that the running peer accepts every kind of request the
# benchmark scenarios send, before any load is put on it. Prints one line per
# check and exits non-zero on the first failure. Creates a few resources in
# the benchmark project (an Organization, Patients, ServiceRequests, Tasks).
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FHIR="$("$PEER_DIR/start.sh")"
TOKEN="$("$PEER_DIR/token.sh")"
FHIR="$FHIR" TOKEN="$TOKEN" exec "$(node_bin)" - <<'EOF'
const fhir = process.env.FHIR;
const auth = { authorization: 'Bearer ' + process.env.TOKEN };
const json = { ...auth, 'content-type': 'application/fhir+json' };
const run = Math.random().toString(36).slice(2, 10);
let failed = false;
function check(name, ok, detail) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
  if (!ok) failed = true;
}
async function req(method, url, body, headers = json) {
  const t0 = performance.now();
  const res = await fetch(url.startsWith('http') ? url : fhir + url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined,
           ms: (performance.now() - t0).toFixed(1) };
}
(async () => {
  let r = await req('GET', '/metadata', undefined, {});
  check('GET metadata', r.status === 200 && r.body.resourceType === 'CapabilityStatement',
        `${r.status} fhirVersion ${r.body?.fhirVersion} software ${r.body?.software?.version}`);

  r = await req('POST', '/Organization', { resourceType: 'Organization', name: 'Owner ' + run });
  const org = r.body.id;
  check('create Organization', r.status === 201, `${r.status} ${org}`);

  const nhs = String(9000000000 + Math.floor(Math.random() * 999999999));
  const bundle = {
    resourceType: 'Bundle', type: 'transaction', entry: [
      { fullUrl: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000001',
        resource: { resourceType: 'Patient', identifier: [{ system: 'https://fhir.nhs.uk/Id/nhs-number', value: nhs }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=https://fhir.nhs.uk/Id/nhs-number|' + nhs } },
      { fullUrl: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000002',
        resource: { resourceType: 'ServiceRequest', status: 'active', intent: 'order',
                    subject: { reference: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000001' } },
        request: { method: 'POST', url: 'ServiceRequest' } },
      { fullUrl: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000003',
        resource: { resourceType: 'Task', status: 'requested', intent: 'order',
                    focus: { reference: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000002' },
                    for: { reference: 'urn:uuid:7f0a1c1e-0000-4000-8000-000000000001' },
                    owner: { reference: 'Organization/' + org } },
        request: { method: 'POST', url: 'Task' } },
    ] };
  r = await req('POST', '', bundle);
  const st = (b) => b?.entry?.map((e) => e.response.status.split(' ')[0]).join(',');
  check('transaction, new patient', r.status === 200 && st(r.body) === '201,201,201', `${r.status} [${st(r.body)}] ${r.ms} ms`);
  const loc = (i) => r.body.entry[i].response.location.split('/').slice(0, 2).join('/');
  const [patient, sr, task] = [loc(0), loc(1), loc(2)];
  r = await req('POST', '', bundle);
  check('transaction, same patient again (conditional create matches)',
        r.status === 200 && st(r.body) === '200,201,201' && r.body.entry[0].response.location.startsWith(patient),
        `${r.status} [${st(r.body)}] ${r.ms} ms`);
  const t = await req('GET', '/' + task, undefined, auth);
  check('urn:uuid references resolved', t.body.focus.reference === sr && t.body.for.reference === patient,
        `focus ${t.body.focus.reference}, for ${t.body.for.reference}`);

  const many = { resourceType: 'Bundle', type: 'transaction', entry: Array.from({ length: 60 }, () => ({
    resource: { resourceType: 'Task', status: 'requested', intent: 'order', owner: { reference: 'Organization/' + org } },
    request: { method: 'POST', url: 'Task' } })) };
  r = await req('POST', '', many);
  check('transaction of 60 Tasks', r.status === 200, `${r.status} ${r.ms} ms`);

  let url = `/Task?owner=Organization/${org}&status=requested&_sort=_lastUpdated&_count=50`;
  const ids = []; let pages = 0;
  while (url) {
    r = await req('GET', url, undefined, auth);
    if (r.status !== 200) break;
    pages++; ids.push(...(r.body.entry ?? []).map((e) => e.resource.id));
    url = r.body.link?.find((l) => l.relation === 'next')?.url;
  }
  check('owner worklist, _count=50, following next links', r.status === 200 && ids.length === 62 && new Set(ids).size === 62,
        `${pages} pages, ${ids.length} Tasks, ${new Set(ids).size} distinct`);

  r = await req('GET', '/' + task, undefined, auth);
  const etag = r.headers.get('etag');
  check('read by id', r.status === 200 && !!etag, `${r.status} ETag ${etag} ${r.ms} ms`);
  const updated = { ...r.body, status: 'accepted' };
  r = await req('PUT', '/' + task, updated, { ...json, 'if-match': etag });
  check('PUT with current If-Match', r.status === 200, `${r.status} new ETag ${r.headers.get('etag')} ${r.ms} ms`);
  r = await req('PUT', '/' + task, updated, { ...json, 'if-match': etag });
  check('PUT with stale If-Match refused', r.status === 412, `${r.status}`);

  r = await req('GET', `/ServiceRequest?_id=${sr.split('/')[1]}&_revinclude=Task:focus&_include=ServiceRequest:subject`, undefined, auth);
  const got = (r.body.entry ?? []).map((e) => `${e.resource.resourceType}(${e.search?.mode})`).sort().join(' ');
  check('ServiceRequest?_id&_revinclude=Task:focus&_include=ServiceRequest:subject',
        r.status === 200 && got === 'Patient(include) ServiceRequest(match) Task(include)', `${r.status} ${got} ${r.ms} ms`);
  process.exit(failed ? 1 : 0);
})().catch((err) => { console.error(err); process.exit(1); });
EOF
