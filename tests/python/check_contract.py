#!/usr/bin/env python3
"""Contract check: schemathesis drives the running server from openapi.yaml.

Usage: SP_HUB_TOKEN=<admin access token> check_contract.py BASE_URL

A few resources are written first (a patient and a referral, which brings
its Task), so searches and reads have something to return. Then
schemathesis generates requests for every operation in openapi.yaml (its
examples, coverage, fuzzing and stateful phases) and checks each response:

  - not_a_server_error: no 5xx, whatever the request;
  - response_schema_conformance: every response matches the schema the
    document gives for its status and media type.

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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENAPI = os.path.join(REPO_ROOT, "openapi.yaml")
SEED = 20261126
CHECKS = "not_a_server_error,response_schema_conformance"

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
            rc = subprocess.run(cmd, cwd=work, timeout=timeout, env=dict(os.environ, NO_COLOR="1")).returncode
        except subprocess.TimeoutExpired:
            print(f"check_contract.py: schemathesis did not finish within {timeout} s", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"check_contract.py: schemathesis exited with {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
