#!/usr/bin/env python3
"""Independent FHIR R4 client check for sp-hub.

Usage: check_fhirclient.py BASE_URL      (e.g. http://127.0.0.1:8080)

Talks to a running sp-hub over HTTP with `requests` and validates every
response body with the FHIR R4 (4.0.1) model classes of `fhir.resources`
6.4.0 (pydantic validation: unknown elements, wrong types, missing required
elements and wrong resourceType are all rejected). This deliberately shares no
code with the server, so it catches serialisation mistakes that the Rust tests
(which use the server's own codec) cannot.

The scenario is the social prescribing referral:
  * POST a ServiceRequest (SNOMED CT 871731000000106 "Referral to social
    prescribing service") and a Task (code task-code#fulfill, focus -> the
    ServiceRequest) as application/fhir+json;
  * read both back as JSON;
  * read the ServiceRequest as application/fhir+xml;
  * plus the CapabilityStatement and the OperationOutcome of a 404.

Prints one line per check and a final `python fhirclient check: N passed,
M failed` line; exits 1 if any check failed.
"""

import os
import sys
import uuid
import xml.etree.ElementTree as ET

import fhir.resources
import requests
from fhir.resources.auditevent import AuditEvent
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.operationoutcome import OperationOutcome
from fhir.resources.provenance import Provenance
from fhir.resources.servicerequest import ServiceRequest
from fhir.resources.task import Task
from pydantic import ValidationError

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
FHIR_NS = "{http://hl7.org/fhir}"
SNOMED = "http://snomed.info/sct"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
# The server validates SP referrals and Tasks against its own profiles
# (fhir-profiles/StructureDefinition/sp-referral, sp-task).
SP_NEED = "https://sp-hub.example/fhir/CodeSystem/sp-need"
TIMEOUT = 30

if fhir.resources.__fhir_version__ != "4.0.1":
    sys.exit(
        "check_fhirclient.py needs the FHIR R4 (4.0.1) models of fhir.resources "
        f"6.4.0, got FHIR {fhir.resources.__fhir_version__} "
        f"(fhir.resources {fhir.resources.__version__}); see requirements.txt"
    )


class Abort(Exception):
    """A failed check that later checks depend on."""


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name):
        self.passed += 1
        print(f"  ok    {name}")

    def fail(self, name, detail):
        self.failed += 1
        print(f"  FAIL  {name}")
        for line in str(detail).rstrip().splitlines():
            print(f"        {line}")

    def check(self, name, cond, detail=""):
        if cond:
            self.ok(name)
        else:
            self.fail(name, detail)
        return cond

    def require(self, name, cond, detail=""):
        if not self.check(name, cond, detail):
            raise Abort(name)


def describe(resp, body_limit=1500):
    """Request and response, for failure messages."""
    req = resp.request
    lines = [f"request:  {req.method} {req.url}"]
    for h in ("Accept", "Content-Type"):
        if h in req.headers:
            lines.append(f"          {h}: {req.headers[h]}")
    if req.body:
        body = req.body.decode() if isinstance(req.body, bytes) else req.body
        lines.append(f"          body: {body[:body_limit]}")
    lines.append(f"response: {resp.status_code} {resp.reason}")
    for h, v in resp.headers.items():
        lines.append(f"          {h}: {v}")
    text = resp.text
    if len(text) > body_limit:
        text = text[:body_limit] + "...(truncated)"
    lines.append(f"          body: {text}")
    return "\n".join(lines)


def media_type(resp):
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()


def validate_json(c, name, resp, model):
    """Parses a JSON response body with a fhir.resources model; returns (model, raw dict)."""
    c.check(f"{name}: Content-Type is {FHIR_JSON}", media_type(resp) == FHIR_JSON, describe(resp))
    try:
        raw = resp.json()
    except ValueError as e:
        c.fail(f"{name}: body is JSON", f"{e}\n{describe(resp)}")
        raise Abort(name)
    try:
        parsed = model.parse_obj(raw)
    except ValidationError as e:
        c.fail(f"{name}: body validates as R4 {model.__name__}", f"{e}\n{describe(resp)}")
        raise Abort(name)
    c.ok(f"{name}: body validates as R4 {model.__name__}")
    return parsed, raw


def check_write_headers(c, name, resp, base, rtype, rid):
    loc = resp.headers.get("Location", "")
    want = f"{base}/{rtype}/{rid}/_history/1"
    c.check(f"{name}: Location is {{base}}/{rtype}/{{id}}/_history/1", loc == want,
            f"expected Location {want!r}, got {loc!r}\n{describe(resp)}")
    c.check(f"{name}: ETag is W/\"1\"", resp.headers.get("ETag") == 'W/"1"',
            f"got ETag {resp.headers.get('ETag')!r}\n{describe(resp)}")
    c.check(f"{name}: Last-Modified present", bool(resp.headers.get("Last-Modified")),
            describe(resp))


def check_meta(c, name, parsed, resp):
    version = parsed.meta.versionId if parsed.meta else None
    c.check(f"{name}: meta.versionId == \"1\"", version == "1",
            f"got meta.versionId {version!r}\n{describe(resp)}")
    c.check(f"{name}: meta.lastUpdated present",
            bool(parsed.meta and parsed.meta.lastUpdated), describe(resp))


def check_service_request_content(c, name, sr, sent, resp):
    coding = sr.code.coding[0] if sr.code and sr.code.coding else None
    c.check(
        f"{name}: content round-trips",
        sr.status == sent["status"]
        and sr.intent == sent["intent"]
        and coding is not None
        and coding.system == SNOMED
        and coding.code == "871731000000106"
        and sr.subject.reference == sent["subject"]["reference"],
        f"sent {sent}\n{describe(resp)}",
    )


def run(base, c):
    s = requests.Session()
    # The access token tests/run.sh obtained (tests/python/sp_hub_auth.py).
    if os.environ.get("SP_HUB_TOKEN"):
        s.headers["Authorization"] = f"Bearer {os.environ['SP_HUB_TOKEN']}"
    s.headers["Accept"] = FHIR_JSON
    post_headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    patient_ref = f"Patient/{uuid.uuid4()}"
    authored = "2024-05-01T09:30:00+01:00"

    def section(title, fn):
        print(title)
        try:
            return fn()
        except Abort:
            return None
        except requests.ConnectionError:
            raise  # server gone: nothing else can pass
        except requests.RequestException as e:
            c.fail(f"{title}: HTTP request", repr(e))
            return None

    # -- CapabilityStatement ----------------------------------------------
    def metadata():
        r = s.get(f"{base}/metadata", timeout=TIMEOUT)
        c.require("GET /metadata: status 200", r.status_code == 200, describe(r))
        cs, _ = validate_json(c, "GET /metadata", r, CapabilityStatement)
        c.check("GET /metadata: fhirVersion 4.0.1", cs.fhirVersion == "4.0.1",
                f"got fhirVersion {cs.fhirVersion!r}")

    section("CapabilityStatement", metadata)

    # -- create + read ServiceRequest ---------------------------------------
    sr_body = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "871731000000106",
                    "display": "Referral to social prescribing service",
                }
            ]
        },
        "subject": {"reference": patient_ref},
        "authoredOn": authored,
        "identifier": [{"system": "https://fhir.example.org/sp-hub/referral-id", "value": "PY-1"}],
        "requester": {"display": "GP practice"},
        "reasonCode": [{"coding": [{"system": SP_NEED, "code": "loneliness"}]}],
    }
    ServiceRequest.parse_obj(sr_body)  # our own request must be valid R4

    def create_sr():
        r = s.post(f"{base}/ServiceRequest", json=sr_body, headers=post_headers, timeout=TIMEOUT)
        c.require("POST /ServiceRequest: status 201", r.status_code == 201, describe(r))
        sr, raw = validate_json(c, "POST /ServiceRequest", r, ServiceRequest)
        c.require("POST /ServiceRequest: server assigned an id", bool(sr.id), describe(r))
        check_write_headers(c, "POST /ServiceRequest", r, base, "ServiceRequest", sr.id)
        check_meta(c, "POST /ServiceRequest", sr, r)
        check_service_request_content(c, "POST /ServiceRequest", sr, sr_body, r)
        c.check("POST /ServiceRequest: authoredOn round-trips",
                raw.get("authoredOn") == authored,
                f"sent {authored!r}, got {raw.get('authoredOn')!r}")
        return sr.id

    sr_id = section("ServiceRequest create", create_sr)

    def read_sr():
        r = s.get(f"{base}/ServiceRequest/{sr_id}", timeout=TIMEOUT)
        c.require("GET /ServiceRequest/{id}: status 200", r.status_code == 200, describe(r))
        sr, _ = validate_json(c, "GET /ServiceRequest/{id}", r, ServiceRequest)
        c.check("GET /ServiceRequest/{id}: id matches", sr.id == sr_id,
                f"expected id {sr_id!r}, got {sr.id!r}")
        c.check("GET /ServiceRequest/{id}: ETag is W/\"1\"", r.headers.get("ETag") == 'W/"1"',
                f"got ETag {r.headers.get('ETag')!r}\n{describe(r)}")
        check_meta(c, "GET /ServiceRequest/{id}", sr, r)
        check_service_request_content(c, "GET /ServiceRequest/{id}", sr, sr_body, r)

    def read_sr_xml():
        r = s.get(f"{base}/ServiceRequest/{sr_id}", headers={"Accept": FHIR_XML}, timeout=TIMEOUT)
        c.require("GET /ServiceRequest/{id} as XML: status 200", r.status_code == 200, describe(r))
        c.check(f"GET /ServiceRequest/{{id}} as XML: Content-Type is {FHIR_XML}",
                media_type(r) == FHIR_XML, describe(r))
        try:
            root = ET.fromstring(r.content)
        except ET.ParseError as e:
            c.fail("GET /ServiceRequest/{id} as XML: body is well-formed XML", f"{e}\n{describe(r)}")
            raise Abort("xml")
        c.ok("GET /ServiceRequest/{id} as XML: body is well-formed XML")
        c.check("GET /ServiceRequest/{id} as XML: root is {http://hl7.org/fhir}ServiceRequest",
                root.tag == f"{FHIR_NS}ServiceRequest", f"got root tag {root.tag!r}\n{describe(r)}")
        id_el = root.find(f"{FHIR_NS}id")
        version_el = root.find(f"{FHIR_NS}meta/{FHIR_NS}versionId")
        c.check("GET /ServiceRequest/{id} as XML: id and meta.versionId",
                id_el is not None and id_el.get("value") == sr_id
                and version_el is not None and version_el.get("value") == "1",
                describe(r))
        try:
            sr = ServiceRequest.parse_raw(r.content, content_type=FHIR_XML)
        except (ValidationError, ValueError, KeyError) as e:
            c.fail("GET /ServiceRequest/{id} as XML: body validates as R4 ServiceRequest",
                   f"{type(e).__name__}: {e}\n{describe(r)}")
            raise Abort("xml")
        c.ok("GET /ServiceRequest/{id} as XML: body validates as R4 ServiceRequest")
        check_service_request_content(c, "GET /ServiceRequest/{id} as XML", sr, sr_body, r)

    if sr_id:
        section("ServiceRequest read (JSON)", read_sr)
        section("ServiceRequest read (XML)", read_sr_xml)

    # -- create + read Task ---------------------------------------------------
    task_body = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{sr_id}"},
        "for": {"reference": patient_ref},
        "authoredOn": authored,
        "requester": {"display": "GP practice"},
    }

    def check_task_content(name, task, resp):
        coding = task.code.coding[0] if task.code and task.code.coding else None
        c.check(
            f"{name}: content round-trips",
            task.status == "requested"
            and task.intent == "order"
            and coding is not None
            and coding.system == TASK_CODE
            and coding.code == "fulfill"
            and task.focus is not None
            and task.focus.reference == f"ServiceRequest/{sr_id}"
            and task.for_fhir is not None
            and task.for_fhir.reference == patient_ref,
            f"sent {task_body}\n{describe(resp)}",
        )

    def create_task():
        Task.parse_obj(task_body)  # our own request must be valid R4
        r = s.post(f"{base}/Task", json=task_body, headers=post_headers, timeout=TIMEOUT)
        c.require("POST /Task: status 201", r.status_code == 201, describe(r))
        task, _ = validate_json(c, "POST /Task", r, Task)
        c.require("POST /Task: server assigned an id", bool(task.id), describe(r))
        check_write_headers(c, "POST /Task", r, base, "Task", task.id)
        check_meta(c, "POST /Task", task, r)
        check_task_content("POST /Task", task, r)
        return task.id

    def read_task(task_id):
        r = s.get(f"{base}/Task/{task_id}", timeout=TIMEOUT)
        c.require("GET /Task/{id}: status 200", r.status_code == 200, describe(r))
        task, _ = validate_json(c, "GET /Task/{id}", r, Task)
        c.check("GET /Task/{id}: id matches", task.id == task_id,
                f"expected id {task_id!r}, got {task.id!r}")
        c.check("GET /Task/{id}: ETag is W/\"1\"", r.headers.get("ETag") == 'W/"1"',
                f"got ETag {r.headers.get('ETag')!r}\n{describe(r)}")
        check_meta(c, "GET /Task/{id}", task, r)
        check_task_content("GET /Task/{id}", task, r)

    if sr_id:
        task_id = section("Task create", create_task)
        if task_id:
            section("Task read (JSON)", lambda: read_task(task_id))
    else:
        c.fail("Task create", "skipped: the ServiceRequest could not be created")

    # -- errors are OperationOutcomes ----------------------------------------
    def not_found():
        missing = f"{base}/ServiceRequest/does-not-exist-{uuid.uuid4().hex[:8]}"
        r = s.get(missing, timeout=TIMEOUT)
        c.require("GET unknown ServiceRequest: status 404", r.status_code == 404, describe(r))
        oo, _ = validate_json(c, "GET unknown ServiceRequest", r, OperationOutcome)
        c.check("GET unknown ServiceRequest: issue[0] severity error, code not-found",
                oo.issue[0].severity == "error" and oo.issue[0].code == "not-found",
                describe(r))

    section("OperationOutcome", not_found)

    # -- what the server writes of its own: Provenance and AuditEvents -------
    def provenance():
        r = s.get(f"{base}/Provenance", params={"target": f"ServiceRequest/{sr_id}"}, timeout=TIMEOUT)
        c.require("GET /Provenance?target=: status 200", r.status_code == 200, describe(r))
        bundle, _ = validate_json(c, "GET /Provenance?target=", r, Bundle)
        c.require("the ServiceRequest's create has a Provenance", bool(bundle.entry), describe(r))
        prov = Provenance.parse_obj(bundle.entry[0].resource.dict())
        c.check("Provenance targets the version written",
                any(t.reference == f"ServiceRequest/{sr_id}/_history/1" for t in prov.target),
                describe(r))

    def audit():
        r = s.get(f"{base}/$audit", params={"_count": "50"}, timeout=TIMEOUT)
        c.require("GET /$audit: status 200", r.status_code == 200, describe(r))
        bundle, _ = validate_json(c, "GET /$audit", r, Bundle)
        c.require("GET /$audit: records", bool(bundle.entry), describe(r))
        for e in bundle.entry:
            AuditEvent.parse_obj(e.resource.dict())
        c.check(f"GET /$audit: {len(bundle.entry)} AuditEvents are valid R4", True)

    if sr_id:
        section("Provenance", provenance)
    section("AuditEvent", audit)


def main(argv):
    if len(argv) != 2 or not argv[1].startswith(("http://", "https://")):
        print("usage: check_fhirclient.py BASE_URL   (e.g. http://127.0.0.1:8080)", file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    print(f"python fhirclient check against {base} "
          f"(fhir.resources {fhir.resources.__version__}, FHIR {fhir.resources.__fhir_version__})")
    c = Checker()
    try:
        run(base, c)
    except requests.ConnectionError as e:
        c.fail(f"connect to {base}", e)
    print(f"python fhirclient check: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 and c.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
