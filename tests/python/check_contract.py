#!/usr/bin/env python3
"""Contract check: schemathesis drives the running server from openapi.yaml.

Usage: SP_HUB_TOKEN=<admin access token> check_contract.py BASE_URL

A few resources are written first (a patient and a referral, which brings
its Task), so searches and reads have something to return. Then
schemathesis generates requests for every operation in openapi.yaml (its
examples, coverage, fuzzing and stateful phases) and checks each response
(CHECKS):

  - not_a_server_error: no 5xx, whatever the request;
  - status_code_conformance: the status is one the operation documents
    (every error with its OperationOutcome: 401, 403, 404, 406, 409, 410,
    412, 413, 415, 422, 429, 503, ...);
  - content_type_conformance: the Content-Type is one the operation
    documents for that status (FHIR JSON or XML as negotiated, CSV, ...);
  - response_headers_conformance: the headers the document gives for that
    status are there and well formed (ETag, Location, Content-Location,
    Retry-After, X-Progress, WWW-Authenticate);
  - response_schema_conformance: the body matches the schema the document
    gives for its status and media type;
  - missing_required_header: leaving out a required request header
    (`Prefer: respond-async` on $export) is refused with a 4xx;
  - unsupported_method: a method a path does not document is answered
    405, with `Allow`;
  - allow_header_conformance: that `Allow` names exactly the documented
    methods;
  - ignored_auth: an operation that needs a token refuses a request
    without one, or with a wrong one (401).

Two kinds of failure are dropped (filter_failure below), because they are
about a request the document does not describe, not about the server:

  - requests whose path parameters break the document's own schema for
    them (the stateful phase follows URLs it finds in responses, e.g. the
    SMART configuration's `token_endpoint`, into `/{type}/{id}` as
    `type=auth, id=token`; that request is `POST /auth/token`'s path, and
    its 405 says nothing about `/{type}/{id}`). A server error (5xx) is
    kept whatever the request.
  - a missing Content-Type on an empty 200/201 asked for with `Prefer:
    return=minimal` (FHIR: no body, so no media type).

The run is bounded and repeatable: a fixed seed, a small number of examples
per operation (CONTRACT_MAX_EXAMPLES, default 5), one worker, and a time
limit on the whole run (CONTRACT_TIMEOUT seconds, default 600). schemathesis
runs in a temporary directory, so nothing (reports, example databases) is
left in the repository. Exits with schemathesis's status: 0 when every
check passed.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
OPENAPI = os.path.join(REPO_ROOT, "openapi.yaml")
SEED = 20261126
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
])
# schemathesis imports this file as a module of hooks (SCHEMATHESIS_HOOKS).
HOOKS_MODULE = "check_contract"

FHIR_JSON = "application/fhir+json"
SNOMED = "http://snomed.info/sct"


def seed_data(base, token):
    """A patient and a GP referral (the hub adds its Task)."""
    s = requests.Session()
    s.headers.update({"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}],
        "name": [{"family": "Okafor", "given": ["Grace"]}],
        "birthDate": "1948-03-14",
    }
    r = s.post(f"{base}/Patient", json=patient, timeout=30)
    if r.status_code != 201:
        raise SystemExit(f"check_contract.py: could not create the patient: {r.status_code} {r.text}")
    pid = r.json()["id"]
    referral = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "https://fhir.example.org/sp-hub/referral-id", "value": "REF-CONTRACT-1"}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "306206005"}]}],
        "priority": "routine",
        "code": {"coding": [{"system": SNOMED, "code": "871731000000106"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2024-05-01T09:30:00+01:00",
        "requester": {"display": "Chapel Allerton Medical Centre"},
        "reasonCode": [{"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-need",
                                    "code": "bereavement"}]}],
    }
    r = s.post(f"{base}/ServiceRequest", json=referral, timeout=30)
    if r.status_code != 201:
        raise SystemExit(f"check_contract.py: could not create the referral: {r.status_code} {r.text}")


def register_hooks():
    """The filter_failure hook described in the module docstring; runs
    inside schemathesis, which imports this file as HOOKS_MODULE."""
    import re

    import schemathesis
    import yaml
    from schemathesis.core.failures import ServerError
    from schemathesis.openapi.checks import MissingContentType

    with open(OPENAPI, encoding="utf-8") as f:
        document = yaml.safe_load(f)

    def resolve(node):
        """`node` with its local `$ref`s replaced by what they name."""
        if isinstance(node, dict):
            if "$ref" in node:
                target = document
                for part in node["$ref"].lstrip("#/").split("/"):
                    target = target[part.replace("~1", "/").replace("~0", "~")]
                return resolve(target)
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    path_schemas = {}  # (path template, method) -> {name: schema}
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            params = [resolve(p) for p in item.get("parameters", []) + operation.get("parameters", [])]
            path_schemas[(template, method.upper())] = {
                p["name"]: p["schema"] for p in params if p.get("in") == "path"
            }

    def fits(schema, value):
        """The path parameters' schemas use only `type: string`, `enum`
        and `pattern`."""
        if not isinstance(value, str):
            return False
        if "enum" in schema and value not in schema["enum"]:
            return False
        return "pattern" not in schema or re.search(schema["pattern"], value) is not None

    def documented_path(case):
        schemas = path_schemas.get((case.operation.path, case.method.upper()), {})
        return all(fits(schemas[name], value)
                   for name, value in (case.path_parameters or {}).items() if name in schemas)

    def minimal_return(case, response):
        prefer = (case.headers or {}).get("Prefer", "") or ""
        return response.status_code in (200, 201) and not response.content and "return=minimal" in prefer

    @schemathesis.hook
    def filter_failure(ctx, failure, case, response):
        if isinstance(failure, ServerError):
            return True
        if not documented_path(case):
            return False
        if isinstance(failure, MissingContentType) and minimal_return(case, response):
            return False
        return True


if __name__ == HOOKS_MODULE:
    register_hooks()


def schemathesis_command():
    """The schemathesis CLI of this interpreter's environment."""
    script = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    token = os.environ.get("SP_HUB_TOKEN", "")
    if not token:
        print("check_contract.py: SP_HUB_TOKEN is not set", file=sys.stderr)
        return 2
    max_examples = os.environ.get("CONTRACT_MAX_EXAMPLES", "5")
    timeout = int(os.environ.get("CONTRACT_TIMEOUT", "600"))

    seed_data(base, token)
    cmd = schemathesis_command() + [
        "run", OPENAPI,
        "--url", base,
        "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--max-examples", max_examples,
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "30",
        # Keep the token out of the output.
        "--output-sanitize", "true",
    ]
    work = tempfile.mkdtemp(prefix="sp-hub-contract-")
    try:
        shown = [c if not c.startswith("Authorization:") else "Authorization: Bearer ***" for c in cmd]
        print("running:", " ".join(shown), flush=True)
        try:
            env = dict(os.environ, NO_COLOR="1", SCHEMATHESIS_HOOKS=HOOKS_MODULE,
                       PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
            rc = subprocess.run(cmd, cwd=work, timeout=timeout, env=env).returncode
        except subprocess.TimeoutExpired:
            print(f"check_contract.py: schemathesis did not finish within {timeout} s", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"check_contract.py: schemathesis exited with {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
