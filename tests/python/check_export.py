#!/usr/bin/env python3
"""Independent check of sp-hub's FHIR Bulk Data export.

Usage: check_export.py BASE_URL      (e.g. http://127.0.0.1:8080)

Against a running `sp-hub serve --demo` (tests/run.sh starts one, and puts
an admin client's access token in SP_HUB_TOKEN), with `requests` only and
none of the server's code, following the Bulk Data Access IG (v2):

  * kick-off `GET /$export` with `Prefer: respond-async`: 202 and a
    Content-Location;
  * poll the status URL: 202 (with X-Progress) until 200 with the manifest
    (transactionTime, request, requiresAccessToken, output, error);
  * download every output file with the bearer token; each line must parse
    as an R4 resource of the file's type with `fhir.resources` 6.4.0 (FHIR
    4.0.1, pydantic validation), ids must be unique, and the number of
    lines must equal the manifest's count and the API's own
    `GET /{type}?_summary=count`;
  * the files refuse a request without the token;
  * `DELETE` the status URL: 202, then the status URL is 404.

Prints one line per check and a final `python export check: N passed,
M failed` line; exits 1 if any check failed.
"""

import os
import sys
import time

import fhir.resources
import requests
from fhir.resources import get_fhir_model_class
from pydantic import ValidationError

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
TIMEOUT = 30
POLL_SECONDS = 60

if fhir.resources.__fhir_version__ != "4.0.1":
    sys.exit(
        "check_export.py needs the FHIR R4 (4.0.1) models of fhir.resources 6.4.0, "
        f"got FHIR {fhir.resources.__fhir_version__}; see requirements.txt"
    )


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}")
            for line in str(detail).rstrip().splitlines():
                print(f"        {line}")
        return cond


def media_type(resp):
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()


def run(base, c):
    s = requests.Session()
    token = os.environ.get("SP_HUB_TOKEN", "")
    s.headers["Authorization"] = f"Bearer {token}"

    # Kick-off.
    r = s.get(f"{base}/$export", timeout=TIMEOUT,
              headers={"Prefer": "respond-async", "Accept": FHIR_JSON})
    status_url = r.headers.get("Content-Location", "")
    if not c.check("kick-off: 202 with Content-Location",
                   r.status_code == 202 and status_url.startswith("http"),
                   f"{r.status_code} {r.headers} {r.text[:500]}"):
        return

    # Poll.
    deadline = time.monotonic() + POLL_SECONDS
    progress_ok = True
    while True:
        r = s.get(status_url, timeout=TIMEOUT)
        if r.status_code != 202 or time.monotonic() > deadline:
            break
        progress_ok = progress_ok and bool(r.headers.get("X-Progress"))
        time.sleep(float(r.headers.get("Retry-After", "1")) / 4)
    c.check("status: every 202 carries X-Progress", progress_ok)
    if not c.check("status: 200 with a JSON manifest",
                   r.status_code == 200 and media_type(r) == "application/json",
                   f"{r.status_code} {r.text[:500]}"):
        return
    manifest = r.json()
    c.check("manifest: transactionTime, request, requiresAccessToken, output, error",
            isinstance(manifest.get("transactionTime"), str)
            and manifest.get("request") == f"{base}/$export"
            and manifest.get("requiresAccessToken") is True
            and isinstance(manifest.get("output"), list)
            and manifest.get("error") == [],
            manifest)
    outputs = manifest.get("output", [])
    c.check("manifest: several resource types", len(outputs) >= 5, outputs)

    # Download and validate every file.
    for out in outputs:
        rtype, url, count = out.get("type"), out.get("url"), out.get("count")
        model = get_fhir_model_class(rtype)
        r = s.get(url, timeout=TIMEOUT, headers={"Accept": NDJSON}, stream=True)
        if not c.check(f"{rtype}: file is 200 {NDJSON}",
                       r.status_code == 200 and media_type(r) == NDJSON,
                       f"{r.status_code} {r.headers}"):
            continue
        lines, ids, bad = 0, set(), []
        for line in r.iter_lines():
            if not line:
                continue
            lines += 1
            try:
                resource = model.parse_raw(line)
                ids.add(resource.id)
                if resource.resource_type != rtype:
                    bad.append(f"line {lines}: a {resource.resource_type}")
            except ValidationError as e:
                bad.append(f"line {lines}: {e}")
        c.check(f"{rtype}: every line is a valid R4 {rtype}", not bad, "\n".join(bad[:5]))
        c.check(f"{rtype}: {count} lines (the manifest's count), each id once",
                lines == count and len(ids) == lines, f"{lines} lines, {len(ids)} ids")
        total = s.get(f"{base}/{rtype}", params={"_summary": "count"},
                      headers={"Accept": FHIR_JSON}, timeout=TIMEOUT).json().get("total")
        c.check(f"{rtype}: count equals GET /{rtype}?_summary=count ({total})",
                count == total, f"manifest {count}, API {total}")

    if outputs:
        r = requests.get(outputs[0]["url"], timeout=TIMEOUT)
        c.check("a file without the access token is 401", r.status_code == 401, r.status_code)

    # Cancel (delete) the job.
    r = s.delete(status_url, timeout=TIMEOUT)
    c.check("DELETE the status URL: 202", r.status_code == 202, f"{r.status_code} {r.text[:300]}")
    r = s.get(status_url, timeout=TIMEOUT)
    c.check("the status URL is 404 afterwards", r.status_code == 404, r.status_code)


def main(argv):
    if len(argv) != 2 or not argv[1].startswith(("http://", "https://")):
        print("usage: check_export.py BASE_URL   (e.g. http://127.0.0.1:8080)", file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    print(f"python export check against {base} (fhir.resources {fhir.resources.__version__})")
    c = Checker()
    try:
        run(base, c)
    except requests.RequestException as e:
        c.check("HTTP requests succeed", False, repr(e))
    print(f"python export check: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 and c.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
