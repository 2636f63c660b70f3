#!/usr/bin/env python3
"""Independent check of sp-hub's FHIR data in fhir-profiles/.

Usage (from the repository root):
    target/py-venv/bin/python tests/python/check_profiles.py

Shares no code with the server. Checks:
  * every JSON file under fhir-profiles/ (except search-parameters/ and r4/),
    and every entry of the example Bundle, parses with the FHIR R4 (4.0.1)
    model classes of fhir.resources 6.4.0 (structure and datatypes);
  * our conformance resources are regular: file name = id + ".json", url =
    canonical base + type + id, status active, version 0.1.0, name, title and
    description present; every StructureDefinition element is an R4 element
    (and a restricted choice type one R4 allows);
  * every Coding whose system is one of our CodeSystems names a code that
    CodeSystem defines (and its display, if given, is the defined one); every
    ValueSet's included codes and every ConceptMap's source and target codes
    of ours exist; unmatched ConceptMap targets carry no code;
  * every meta.profile in the examples names a StructureDefinition in
    fhir-profiles/ of the resource's type, and the resource conforms to it:
    cardinality, slices, types and reference targets, fixed values and
    patterns, required bindings to our ValueSets, extensions against their
    own StructureDefinitions, and the profile's invariants (FHIRPath,
    evaluated with fhirpathpy when it is installed, else reported skipped);
  * the example Bundle: every entry is `PUT Type/id` matching its resource,
    ids are unique, every reference resolves to an entry, NHS numbers pass
    the modulus 11 check, SWEMWBS metric scores follow the conversion table,
    a referral's status follows its ended Task, no completed Task has an
    active sub-task, contacts, holding work and outcomes fall between the
    referral and the end of its Task, and the Tasks cover every Task status
    (and requested both in the open pool and owned).

Prints one line per failure and a final `check_profiles: N passed, M failed`
line; exits 1 if anything failed.
"""

import json
import re
import sys
from pathlib import Path

import fhir.resources
from fhir.resources import get_fhir_model_class
from pydantic import ValidationError

try:
    from fhirpathpy import evaluate as fhirpath_evaluate
    from fhirpathpy.models import models as fhirpath_models
except ImportError:  # optional: invariants are then reported as skipped
    fhirpath_evaluate = None

if fhir.resources.__fhir_version__ != "4.0.1":
    sys.exit(
        "check_profiles.py needs the FHIR R4 (4.0.1) models of fhir.resources "
        f"6.4.0, got FHIR {fhir.resources.__fhir_version__}; see requirements.txt"
    )

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "fhir-profiles"
SKIP_DIRS = {"search-parameters", "r4"}
EXAMPLE = PROFILES / "examples" / "demo-pcn.json"
BASE = "https://sp-hub.example/fhir"
OUR_CS = BASE + "/CodeSystem/"
OUR_VS = BASE + "/ValueSet/"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
VERSION = "0.1.0"
CONFORMANCE = {"CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition"}
TASK_STATUSES = {
    "draft", "requested", "accepted", "rejected", "cancelled", "in-progress",
    "on-hold", "failed", "completed", "entered-in-error",
}
ENDED = {"completed": "completed", "rejected": "revoked", "cancelled": "revoked", "failed": "revoked"}
ACTIVE = {"draft", "requested", "accepted", "in-progress", "on-hold"}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = []

    def check(self, where, ok, message):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL  {where}: {message}")
        return ok


def rel(path):
    return str(path.relative_to(ROOT))


def parse_model(report, where, resource):
    """Structure and datatypes, by the R4 model class of the resource type."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    try:
        cls = get_fhir_model_class(rtype)
    except (KeyError, ValueError, TypeError, AttributeError):
        return report.check(where, False, f"unknown resourceType {rtype!r}")
    try:
        cls.parse_obj(resource)
    except ValidationError as e:
        lines = str(e).splitlines()
        return report.check(where, False, "R4 model: " + " | ".join(lines[:6]))
    return report.check(where, True, "")


def walk(value, path="$"):
    """Yields (json path, dict) for every object inside value."""
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def nhs_number_ok(value):
    if not re.fullmatch(r"[0-9]{10}", value or ""):
        return False
    total = sum(int(d) * (10 - i) for i, d in enumerate(value[:9]))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(value[9])


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load(report):
    files = {}
    for path in sorted(PROFILES.rglob("*.json")):
        if path.relative_to(PROFILES).parts[0] in SKIP_DIRS:
            continue
        try:
            files[path] = json.loads(path.read_text(encoding="utf-8"))
            report.check(rel(path), True, "")
        except (OSError, json.JSONDecodeError) as e:
            report.check(rel(path), False, f"not JSON: {e}")
    return files


class Terminology:
    def __init__(self, files):
        self.code_systems = {}  # url -> {code: concept}
        self.value_sets = {}  # url -> {system: {codes}}
        self.structure_definitions = {}  # url -> resource
        for r in files.values():
            if not isinstance(r, dict):
                continue
            if r.get("resourceType") == "CodeSystem":
                self.code_systems[r.get("url")] = {c["code"]: c for c in flatten(r.get("concept", []))}
            elif r.get("resourceType") == "StructureDefinition":
                self.structure_definitions[r.get("url")] = r
        for r in files.values():
            if isinstance(r, dict) and r.get("resourceType") == "ValueSet":
                self.value_sets[r.get("url")] = self.expand(r)

    def expand(self, vs):
        out = {}
        for inc in vs.get("compose", {}).get("include", []):
            system = inc.get("system")
            if "concept" in inc:
                codes = {c.get("code") for c in inc["concept"]}
            else:
                codes = set(self.code_systems.get(system, {}))
            out.setdefault(system, set()).update(codes)
        return out

    def in_value_set(self, vs_url, system, code):
        return code in self.value_sets.get(vs_url, {}).get(system, set())


def flatten(concepts):
    for c in concepts:
        yield c
        yield from flatten(c.get("concept", []))


# ---------------------------------------------------------------------------
# Terminology checks
# ---------------------------------------------------------------------------


def check_conformance_metadata(report, path, r):
    where = rel(path)
    rtype = r.get("resourceType")
    report.check(where, path.stem == r.get("id"), f"file name is not id {r.get('id')!r} + .json")
    report.check(where, path.parent.name == rtype, f"{rtype} is not in folder {rtype}/")
    report.check(where, r.get("url") == f"{BASE}/{rtype}/{r.get('id')}", f"url {r.get('url')!r} is not {BASE}/{rtype}/<id>")
    report.check(where, r.get("status") == "active", "status is not active")
    report.check(where, r.get("version") == VERSION, f"version is not {VERSION}")
    for key in ("name", "title", "description"):
        report.check(where, bool(r.get(key)), f"no {key}")


def check_codings(report, where, resource, term):
    """Every Coding-like object with a system of ours names a defined code."""
    for jpath, obj in walk(resource):
        system = obj.get("system")
        if not (isinstance(system, str) and system.startswith(OUR_CS) and "code" in obj):
            continue
        defined = term.code_systems.get(system)
        if not report.check(where, defined is not None, f"{jpath}: no CodeSystem {system}"):
            continue
        concept = defined.get(obj["code"])
        if report.check(where, concept is not None, f"{jpath}: code {obj['code']!r} is not in {system}"):
            if "display" in obj:
                report.check(
                    where,
                    obj["display"] == concept.get("display"),
                    f"{jpath}: display {obj['display']!r} is not {concept.get('display')!r}",
                )


def check_value_set(report, path, vs, term):
    where = rel(path)
    for i, inc in enumerate(vs.get("compose", {}).get("include", [])):
        system = inc.get("system")
        if not (system or "").startswith(OUR_CS):
            continue
        defined = term.code_systems.get(system)
        if not report.check(where, defined is not None, f"include[{i}]: no CodeSystem {system}"):
            continue
        for c in inc.get("concept", []):
            report.check(where, c.get("code") in defined, f"include[{i}]: code {c.get('code')!r} is not in {system}")


def base_field(path):
    """The fhir.resources field of an R4 element path, or None if R4 has no such element.

    Choice elements ("value[x]") give the list of their typed fields.
    """
    segs = path.split(".")
    try:
        cls = get_fhir_model_class(segs[0])
    except (KeyError, ValueError):
        return None
    for i, seg in enumerate(segs[1:]):
        fields = list(cls.__fields__.values())
        last = i == len(segs) - 2
        if seg.endswith("[x]"):
            typed = [f for f in fields if f.field_info.extra.get("one_of_many") == seg[:-3]]
            return typed if typed and last else None
        match = [f for f in fields if f.alias == seg]
        if not match:
            return None
        if last:
            return match
        try:
            cls = get_fhir_model_class(match[0].type_.fhir_type_name())
        except (AttributeError, KeyError, ValueError):
            return None
    return []


def check_structure_definition(report, path, sd):
    """Every differential element is an R4 element; restricted choice types exist in R4."""
    where = rel(path)
    for e in sd.get("differential", {}).get("element", []):
        fields = base_field(e.get("path", ""))
        if not report.check(where, fields is not None, f"{e.get('id')}: {e.get('path')!r} is no R4 element"):
            continue
        if e.get("path", "").endswith("[x]") and e.get("type"):
            stem = e["path"].rsplit(".", 1)[-1][:-3]
            allowed = {f.alias[len(stem):] for f in fields}
            for t in e["type"]:
                name = t["code"][0].upper() + t["code"][1:]
                report.check(where, name in allowed, f"{e['id']}: type {t['code']} is not allowed by R4")


def check_concept_map(report, path, cm, term):
    where = rel(path)
    for key in ("sourceCanonical", "targetCanonical"):
        url = cm.get(key)
        if url and url.startswith(OUR_VS):
            report.check(where, url in term.value_sets, f"{key} {url} is not a ValueSet here")
    for g, group in enumerate(cm.get("group", [])):
        source, target = group.get("source", ""), group.get("target", "")
        for e, element in enumerate(group.get("element", [])):
            at = f"group[{g}].element[{e}]"
            if source.startswith(OUR_CS):
                report.check(
                    where,
                    element.get("code") in term.code_systems.get(source, {}),
                    f"{at}: source code {element.get('code')!r} is not in {source}",
                )
            for t, tgt in enumerate(element.get("target", [])):
                if tgt.get("equivalence") in ("unmatched", "disjoint"):
                    report.check(where, "code" not in tgt, f"{at}.target[{t}]: unmatched target has a code")
                    continue
                if not report.check(where, bool(tgt.get("code")), f"{at}.target[{t}]: no code"):
                    continue
                if target.startswith(OUR_CS):
                    report.check(
                        where,
                        tgt["code"] in term.code_systems.get(target, {}),
                        f"{at}.target[{t}]: code {tgt['code']!r} is not in {target}",
                    )
                elif target == "http://snomed.info/sct":
                    report.check(where, re.fullmatch(r"[1-9][0-9]{5,17}", tgt["code"]) is not None,
                                 f"{at}.target[{t}]: {tgt['code']!r} is not a SNOMED CT id")


# ---------------------------------------------------------------------------
# Profile conformance (the subset our differentials use)
# ---------------------------------------------------------------------------


def split_id(element_id):
    """'Patient.identifier:nhsNumber.system' -> [('identifier', 'nhsNumber'), ('system', None)]"""
    parts = []
    for seg in element_id.split(".")[1:]:
        name, _, slice_name = seg.partition(":")
        parts.append((name, slice_name or None))
    return parts


def children(parent, name):
    """(value, choice type) pairs of a child element; [x] names match any type."""
    if not isinstance(parent, dict):
        return []
    out = []
    if name.endswith("[x]"):
        stem = name[:-3]
        for key, v in parent.items():
            suffix = key[len(stem):]
            if key.startswith(stem) and suffix[:1].isupper():
                out.extend((x, suffix) for x in (v if isinstance(v, list) else [v]))
    elif name in parent:
        v = parent[name]
        out.extend((x, None) for x in (v if isinstance(v, list) else [v]))
    return out


def matches_pattern(value, pattern):
    if isinstance(pattern, dict) and "coding" in pattern:
        codings = value.get("coding", []) if isinstance(value, dict) else []
        return all(
            any(all(c.get(k) == v for k, v in pc.items()) for c in codings) for pc in pattern["coding"]
        ) and all(value.get(k) == v for k, v in pattern.items() if k != "coding")
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(value.get(k) == v for k, v in pattern.items())
    return value == pattern


class Profile:
    def __init__(self, sd):
        self.sd = sd
        self.elements = sd.get("differential", {}).get("element", [])
        self.by_id = {e["id"]: e for e in self.elements}

    def in_slice(self, base_id, slice_name, value):
        slicing = self.by_id.get(base_id, {}).get("slicing", {})
        slice_id = f"{base_id}:{slice_name}"
        slice_el = self.by_id.get(slice_id, {})
        for d in slicing.get("discriminator", []):
            kind, path = d.get("type"), d.get("path")
            if kind == "pattern" and path == "$this":
                pattern = next((v for k, v in slice_el.items() if k.startswith("pattern")), None)
                if pattern is not None and not matches_pattern(value, pattern):
                    return False
            elif kind == "pattern":
                child = self.by_id.get(f"{slice_id}.{path}", {})
                pattern = next((v for k, v in child.items() if k.startswith("pattern")), None)
                if pattern is not None and not matches_pattern((value or {}).get(path), pattern):
                    return False
            elif kind == "value" and path == "url":
                profiles = [p for t in slice_el.get("type", []) for p in t.get("profile", [])]
                if profiles and (value or {}).get("url") not in profiles:
                    return False
            elif kind == "value":
                child = self.by_id.get(f"{slice_id}.{path}", {})
                fixed = next((v for k, v in child.items() if k.startswith("fixed")), None)
                if fixed is not None and (value or {}).get(path) != fixed:
                    return False
            else:
                return False
        return True

    def resolve(self, root, segments, root_path):
        """[(value, choice type, element id so far)] for the element path."""
        current = [(root, None)]
        id_so_far = root_path
        for name, slice_name in segments:
            nxt = []
            base_id = f"{id_so_far}.{name}"
            for parent, _ in current:
                for v, t in children(parent, name):
                    if slice_name is None or self.in_slice(base_id, slice_name, v):
                        nxt.append((v, t))
            current = nxt
            id_so_far = base_id + (f":{slice_name}" if slice_name else "")
        return current


def check_profile_conformance(report, where, resource, sd, term, root_type=None):
    prof = Profile(sd)
    root_type = root_type or sd.get("type")
    for e in prof.elements:
        segments = split_id(e["id"])
        if not segments:
            check_invariants(report, where, resource, e, root_type)
            continue
        parents = prof.resolve(resource, segments[:-1], root_type)
        name, slice_name = segments[-1]
        base_id = e["id"].rsplit(":", 1)[0] if slice_name and ":" in e["id"].split(".")[-1] else e["id"]
        label = e["id"]
        for parent, _ in parents:
            kids = [
                (v, t)
                for v, t in children(parent, name)
                if slice_name is None or prof.in_slice(base_id, slice_name, v)
            ]
            if "min" in e:
                report.check(where, len(kids) >= e["min"], f"{label}: {len(kids)} found, min {e['min']}")
            if e.get("max") not in (None, "*"):
                report.check(where, len(kids) <= int(e["max"]), f"{label}: {len(kids)} found, max {e['max']}")
            for v, t in kids:
                check_value(report, where, label, v, t, e, term)


def check_value(report, where, label, value, choice_type, e, term):
    types = e.get("type")
    if types:
        codes = [t["code"] for t in types]
        if choice_type is not None:
            report.check(
                where,
                choice_type in {c[0].upper() + c[1:] for c in codes},
                f"{label}: type {choice_type} is not one of {codes}",
            )
        for t in types:
            if t["code"] == "Reference" and t.get("targetProfile") and isinstance(value, dict) and "reference" in value:
                allowed = {p.rsplit("/", 1)[-1] for p in t["targetProfile"]}
                target = value["reference"].split("/")[0]
                report.check(where, target in allowed, f"{label}: reference to {target} is not to {sorted(allowed)}")
            if t["code"] == "Extension" and t.get("profile"):
                ext_sd = term.structure_definitions.get(t["profile"][0])
                if report.check(where, ext_sd is not None, f"{label}: no StructureDefinition {t['profile'][0]}"):
                    check_profile_conformance(report, where, value, ext_sd, term, "Extension")
    for key, fixed in e.items():
        if key.startswith("fixed"):
            report.check(where, value == fixed, f"{label}: {value!r} is not the fixed {fixed!r}")
        elif key.startswith("pattern"):
            report.check(where, matches_pattern(value, fixed), f"{label}: does not match the pattern {json.dumps(fixed)}")
    binding = e.get("binding", {})
    vs_url = binding.get("valueSet", "")
    if binding.get("strength") == "required" and vs_url.startswith(OUR_VS):
        if not report.check(where, vs_url in term.value_sets, f"{label}: no ValueSet {vs_url}"):
            return
        if isinstance(value, dict) and "coding" in value:
            ok = any(term.in_value_set(vs_url, c.get("system"), c.get("code")) for c in value["coding"])
        elif isinstance(value, dict):
            ok = term.in_value_set(vs_url, value.get("system"), value.get("code"))
        else:
            ok = any(value in codes for codes in term.value_sets[vs_url].values())
        report.check(where, ok, f"{label}: no code from {vs_url}")


def check_invariants(report, where, resource, e, root_type):
    for c in e.get("constraint", []):
        if fhirpath_evaluate is None:
            report.skipped.append(c["key"])
            continue
        data = resource if "resourceType" in resource else {"resourceType": root_type, **resource}
        try:
            result = fhirpath_evaluate(data, c["expression"], {}, fhirpath_models["r4"])
        except Exception as ex:  # an expression the evaluator cannot run is a failure too
            report.check(where, False, f"{c['key']}: cannot evaluate {c['expression']!r}: {ex}")
            continue
        report.check(where, result == [True], f"{c['key']} ({c['severity']}): {c['human']} [got {result}]")


# ---------------------------------------------------------------------------
# The example Bundle
# ---------------------------------------------------------------------------


def check_bundle(report, path, bundle, term):
    where = rel(path)
    report.check(where, bundle.get("type") == "transaction", "not a transaction Bundle")
    entries = bundle.get("entry", [])
    keys = {}
    for i, entry in enumerate(entries):
        r = entry.get("resource", {})
        key = f"{r.get('resourceType')}/{r.get('id')}"
        at = f"{where}#entry[{i}] {key}"
        report.check(at, key not in keys, "duplicate resource id")
        keys[key] = r
        req = entry.get("request", {})
        report.check(at, req.get("method") == "PUT" and req.get("url") == key, f"request is not PUT {key}")
        if "fullUrl" in entry:
            report.check(at, entry["fullUrl"] == f"{BASE}/{key}", f"fullUrl is not {BASE}/{key}")
    for i, entry in enumerate(entries):
        r = entry.get("resource", {})
        at = f"{where}#entry[{i}] {r.get('resourceType')}/{r.get('id')}"
        parse_model(report, at, r)
        check_codings(report, at, r, term)
        for jpath, obj in walk(r):
            ref = obj.get("reference")
            if isinstance(ref, str):
                report.check(at, ref in keys, f"{jpath}: reference {ref!r} resolves to no entry")
            if obj.get("system") == NHS_NUMBER and "value" in obj:
                report.check(at, nhs_number_ok(obj["value"]), f"{jpath}: NHS number {obj['value']!r} fails the modulus 11 check")
        profiles = r.get("meta", {}).get("profile", [])
        for url in profiles:
            sd = term.structure_definitions.get(url)
            if not report.check(at, sd is not None, f"meta.profile {url} is no StructureDefinition in fhir-profiles/"):
                continue
            if not report.check(at, sd.get("type") == r.get("resourceType"), f"{url} is a profile on {sd.get('type')}"):
                continue
            check_profile_conformance(report, at, r, sd, term)
        check_swemwbs_metric(report, at, r, term)
    check_workflow(report, where, keys)


def check_swemwbs_metric(report, at, r, term):
    table = term.code_systems.get(OUR_CS + "swemwbs-raw-score", {})
    if r.get("resourceType") != "Observation" or "valueInteger" not in r:
        return
    for comp in r.get("component", []):
        if not any(c.get("code") == "swemwbs-metric" for c in comp.get("code", {}).get("coding", [])):
            continue
        concept = table.get(str(r["valueInteger"]))
        want = next((p.get("valueDecimal") for p in (concept or {}).get("property", []) if p.get("code") == "metric"), None)
        got = comp.get("valueQuantity", {}).get("value")
        report.check(at, want is not None and got == want, f"SWEMWBS metric {got} for raw {r['valueInteger']} is not the table's {want}")


def check_workflow(report, where, keys):
    tasks = [r for k, r in keys.items() if k.startswith("Task/")]
    seen = {t.get("status") for t in tasks}
    missing = sorted(TASK_STATUSES - seen)
    report.check(where, not missing, f"no example Task with status {missing}")
    main = [t for t in tasks if not t.get("partOf")]
    report.check(where, any(t.get("status") == "requested" and "owner" not in t for t in main), "no Task in the open pool")
    report.check(where, any(t.get("status") == "requested" and "owner" in t for t in main), "no requested Task with an owner")
    report.check(where, any(t.get("partOf") for t in tasks), "no onward-referral sub-task")
    for t in main:
        at = f"{where} Task/{t.get('id')}"
        sr = keys.get(t.get("focus", {}).get("reference", ""))
        if sr is None:
            continue
        want = ENDED.get(t.get("status"))
        if want:
            report.check(at, sr.get("status") == want, f"Task is {t['status']} but its referral is {sr.get('status')}, not {want}")
        check_trail_times(report, at, t, sr, keys)
        subs = [s for s in tasks if any(p.get("reference") == f"Task/{t.get('id')}" for p in s.get("partOf", []))]
        if t.get("status") == "completed":
            active = [s["id"] for s in subs if s.get("status") in ACTIVE]
            report.check(at, not active, f"completed with active sub-tasks {active}")


def check_trail_times(report, at, task, sr, keys):
    """Contacts, holding work and outcomes fall between the referral and the Task's end."""
    sr_ref = f"ServiceRequest/{sr.get('id')}"
    start = sr.get("authoredOn", "")
    end = task.get("executionPeriod", {}).get("end") if task.get("status") in ENDED else None
    for key, r in keys.items():
        if not any(b.get("reference") == sr_ref for b in r.get("basedOn", [])):
            continue
        times = [
            r.get("period", {}).get("start"), r.get("period", {}).get("end"),
            r.get("performedPeriod", {}).get("start"), r.get("performedPeriod", {}).get("end"),
            r.get("effectiveDateTime"),
        ]
        for when in filter(None, times):
            report.check(at, when >= start, f"{key} at {when} is before the referral ({start})")
            if end:
                report.check(at, when <= end, f"{key} at {when} is after the Task ended ({end})")


# ---------------------------------------------------------------------------


def main():
    report = Report()
    files = load(report)
    term = Terminology(files)
    for path, r in files.items():
        where = rel(path)
        if not isinstance(r, dict):
            report.check(where, False, "not a JSON object")
            continue
        parse_model(report, where, r)
        # An example ConceptMap is another organisation's (its own url and
        # version), not one of ours.
        if r.get("resourceType") in CONFORMANCE and path.parent.name != "examples":
            check_conformance_metadata(report, path, r)
        if r.get("resourceType") == "ValueSet":
            check_value_set(report, path, r, term)
        if r.get("resourceType") == "ConceptMap":
            check_concept_map(report, path, r, term)
        if r.get("resourceType") == "StructureDefinition":
            check_structure_definition(report, path, r)
        if r.get("resourceType") == "Bundle":
            check_bundle(report, path, r, term)
        else:
            check_codings(report, where, r, term)
    report.check(rel(EXAMPLE), EXAMPLE in files, "the example Bundle is missing")
    if report.skipped:
        print(
            f"SKIP  {len(set(report.skipped))} invariants ({len(report.skipped)} evaluations): "
            "fhirpathpy is not installed"
        )
    print(f"check_profiles: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
