#!/usr/bin/env python3
"""Independent check of sp-hub's search with the `fhirpy` client.

Usage: check_fhirpy.py BASE_URL      (e.g. http://127.0.0.1:8080)

Needs a fresh, empty server (tests/run.sh starts one on a new SQLite file).
Everything goes through fhirpy's synchronous client (`SyncFHIRClient`): it
builds the search URLs, follows the Bundle `next` links and parses the
Bundles, so none of sp-hub's own code or query-string conventions are
involved on the client side.

The data is a social prescribing caseload:
  * 3 GP practices (Organization, ODS codes B86030/B86031/B86032) and one
    voluntary and community sector (VCS) organisation;
  * 25 Patients with NHS numbers;
  * 25 ServiceRequests (SNOMED CT 871731000000106), requester rotating over
    the practices, authoredOn spread over January to March 2026;
  * the Task (task-code#fulfill) sp-hub adds for each ServiceRequest posted
    alone; every other one is then given to the VCS organisation (owner) and
    some of the owned ones are updated to `accepted` (so that status
    searches and `_has` select a proper subset).

Searches (expected results computed here from what was created): chained
with and without the `:Organization` type, `_has`, `_include` (and
`_include:iterate`) and `_revinclude` checked page by page, paging with
`_count=7` through every `next` link, date prefixes, tokens and `:missing`.

Prints one line per check and a final `python fhirpy check: N passed,
M failed` line; exits 1 if any check failed, after printing the requests
of the failed check, the last response and what differed.
"""

import datetime
import json
import os
import sys
from urllib.parse import unquote

import fhirpy
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import BaseFHIRError
from fhirpy.base.utils import encode_params

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
SNOMED = "http://snomed.info/sct"
SOCIAL_PRESCRIBING_REFERRAL = "871731000000106"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
# The server validates SP referrals and Tasks against its own profiles
# (fhir-profiles/StructureDefinition/sp-referral, sp-task).
SP_NEED = "https://sp-hub.example/fhir/CodeSystem/sp-need"
PRACTICES = [("B86030", "Practice A"), ("B86031", "Practice B"), ("B86032", "Practice C")]
N = 25
TIMEOUT = 30


class Abort(Exception):
    """A failed check that later checks depend on."""


class Recorder:
    """Keeps every HTTP exchange fhirpy makes (a `requests` response hook)."""

    def __init__(self):
        self.log = []

    def hook(self, resp, *args, **kwargs):
        self.log.append(resp)
        return resp

    def mark(self):
        return len(self.log)

    def since(self, mark):
        return self.log[mark:]


def describe(exchanges, body_limit=1500):
    """The requests of one check, and the last response in full, for failure messages."""
    if not exchanges:
        return "(no HTTP request was made)"
    lines = []
    for r in exchanges:
        lines.append(f"request:  {r.request.method} {unquote(r.request.url)}  -> {r.status_code}")
    last = exchanges[-1]
    if last.request.body:
        body = last.request.body
        body = body.decode() if isinstance(body, bytes) else body
        lines.append(f"last request body: {body[:body_limit]}")
    text = last.text
    if len(text) > body_limit:
        text = text[:body_limit] + "...(truncated)"
    lines.append(f"last response: {last.status_code} {last.reason}")
    lines.append(f"          body: {text}")
    return "\n".join(lines)


class Checker:
    def __init__(self, rec):
        self.rec = rec
        self.passed = 0
        self.failed = 0
        self._mark = 0

    def start(self):
        """Begins a check: its failure message shows the requests made from here on."""
        self._mark = self.rec.mark()

    def ok(self, name):
        self.passed += 1
        print(f"  ok    {name}")

    def fail(self, name, detail):
        self.failed += 1
        print(f"  FAIL  {name}")
        for line in str(detail).rstrip().splitlines():
            print(f"        {line}")
        for line in describe(self.rec.since(self._mark)).splitlines():
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


def query_of(ss):
    """`Type?params` as fhirpy sends it, unescaped for reading."""
    return f"{ss.resource_type}?{unquote(encode_params(ss.params))}"


def nhs_numbers(n):
    """n distinct valid NHS numbers (modulus 11) from the 999 test range."""
    out = []
    stem = 999000000
    while len(out) < n:
        digits = [int(d) for d in str(stem)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check == 11:
            check = 0
        if check != 10:
            out.append(f"{stem}{check}")
        stem += 1
    return out


def authored_on(i):
    """Day i of 25 over 2026-01-01..2026-03-31, with 2026-01-31 and 2026-02-01
    (either side of the ge2026-02-01 boundary) and 2026-03-01 present; even i
    as a date, odd i as a dateTime."""
    offset = {8: 30, 9: 31}.get(i, i * 89 // (N - 1))
    day = datetime.date(2026, 1, 1) + datetime.timedelta(days=offset)
    return (day, day.isoformat() if i % 2 == 0 else f"{day.isoformat()}T09:30:00+00:00")


def run(base, c):
    client = SyncFHIRClient(
        base,
        # The access token tests/run.sh obtained (tests/python/sp_hub_auth.py).
        authorization=f"Bearer {os.environ['SP_HUB_TOKEN']}" if os.environ.get("SP_HUB_TOKEN") else None,
        requests_config={"timeout": TIMEOUT, "hooks": {"response": [c.rec.hook]}},
    )

    def section(title, fn):
        print(title)
        c.start()
        try:
            return fn()
        except Abort:
            return None
        except requests.ConnectionError:
            raise  # server gone: nothing else can pass
        except (BaseFHIRError, requests.RequestException, ValueError, KeyError, AttributeError) as e:
            c.fail(f"{title}: {type(e).__name__}", str(e)[:2000])
            return None

    # -- the server must be empty ---------------------------------------------
    def fresh():
        for rtype in ("Organization", "Patient", "ServiceRequest", "Task"):
            n = client.resources(rtype).count()
            c.require(f"{rtype}: server holds none yet (count() == 0)", n == 0,
                      f"got {n}: check_fhirpy.py needs a fresh, empty server")
        return True

    if not section("Fresh server", fresh):
        return

    # -- create the caseload ----------------------------------------------------
    data = {}

    def create():
        def saved(res, what):
            c.start()
            res.save()
            if not res.get("id"):
                c.fail(f"{what}: server assigned an id", f"got {dict(res)}")
                raise Abort(what)
            return res

        gps = []
        for code, name in PRACTICES:
            org = client.resource(
                "Organization",
                active=True,
                identifier=[{"system": ODS_CODE, "value": code}],
                type=[{"coding": [{"system": ORG_TYPE, "code": "prov"}]}],
                name=name,
            )
            gps.append(saved(org, f"create Organization {name} ({code})"))
        c.ok(f"created {len(gps)} GP practice Organizations")
        vcs = saved(
            client.resource(
                "Organization",
                active=True,
                type=[{"coding": [{"system": ORG_TYPE, "code": "cg"}]}],
                name="Riverside Community Connectors",
            ),
            "create Organization (VCS)",
        )
        c.ok("created the VCS Organization")

        patients, srs, tasks = [], [], []
        for i, nhs in enumerate(nhs_numbers(N)):
            patients.append(saved(client.resource(
                "Patient",
                identifier=[{"system": NHS_NUMBER, "value": nhs}],
                name=[{"family": f"Test{i:02d}", "given": ["Pat"]}],
            ), f"create Patient {i}"))
        c.ok(f"created {N} Patients")

        for i in range(N):
            gp = i % len(gps)
            day, authored = authored_on(i)
            sr = saved(client.resource(
                "ServiceRequest",
                status="active",
                intent="order",
                code={"coding": [{
                    "system": SNOMED,
                    "code": SOCIAL_PRESCRIBING_REFERRAL,
                    "display": "Referral to social prescribing service",
                }]},
                subject=patients[i].to_reference(),
                requester=gps[gp].to_reference(),
                authoredOn=authored,
                identifier=[{"system": "https://fhir.example.org/sp-hub/referral-id",
                             "value": f"PY-{i}"}],
                reasonCode=[{"coding": [{"system": SP_NEED, "code": "loneliness"}]}],
            ), f"create ServiceRequest {i}")
            srs.append({"res": sr, "gp": gp, "day": day})
        c.ok(f"created {N} ServiceRequests")

        for i in range(N):
            owned = i % 2 == 0
            sr_ref = f"ServiceRequest/{srs[i]['res']['id']}"
            found = client.resources("Task").search(focus=sr_ref).fetch()
            c.require(f"sp-hub added the Task of ServiceRequest {i}",
                      len(found) == 1
                      and found[0]["status"] == "requested"
                      and found[0].get_by_path(["code", "coding", 0, "code"]) == "fulfill"
                      and found[0].get_by_path(["for", "reference"])
                      == srs[i]["res"].get_by_path(["subject", "reference"]),
                      f"got {[dict(t) for t in found]}")
            task = found[0]
            if owned:
                task["owner"] = vcs.to_reference()
                task.save()
            tasks.append({"res": task, "sr": i, "owned": owned, "status": "requested"})
        c.ok(f"found the {N} Tasks sp-hub added "
             f"({sum(t['owned'] for t in tasks)} then given to the VCS organisation)")

        # The VCS organisation accepts some of its referrals (update, PUT).
        for t in tasks:
            if t["owned"] and t["sr"] % 4 == 0:
                t["res"]["status"] = "accepted"
                t["res"].save()
                c.require(f"update Task {t['sr']} to accepted",
                          t["res"]["status"] == "accepted"
                          and t["res"].get_by_path(["meta", "versionId"]) == "3",
                          f"got {dict(t['res'])}")
                t["status"] = "accepted"
        c.ok(f"{sum(t['status'] == 'accepted' for t in tasks)} Tasks updated to accepted")

        data.update(gps=gps, vcs=vcs, patients=patients, srs=srs, tasks=tasks)
        return True

    if not section("Create the caseload with fhirpy", create):
        return

    gps, vcs, srs, tasks = data["gps"], data["vcs"], data["srs"], data["tasks"]
    sr_ids = [s["res"]["id"] for s in srs]
    task_ids = [t["res"]["id"] for t in tasks]
    labels = {}
    for i, s in enumerate(srs):
        labels[sr_ids[i]] = f"ServiceRequest {i} ({PRACTICES[s['gp']][1]}, {s['day']})"
    for i, t in enumerate(tasks):
        labels[task_ids[i]] = (f"Task {i} ({PRACTICES[srs[i]['gp']][1]}, {t['status']}, "
                               f"{'owned' if t['owned'] else 'no owner'})")
    for g in gps + [vcs]:
        labels[g["id"]] = f"Organization {g['name']}"

    def diff(expected, got):
        exp, got_set = set(expected), set(got)
        lines = [f"expected {len(exp)}, got {len(got)} ({len(got_set)} distinct)"]
        for rid in sorted(exp - got_set, key=str):
            lines.append(f"  missing:    {rid}  {labels.get(rid, '')}")
        for rid in sorted(got_set - exp, key=str):
            lines.append(f"  unexpected: {rid}  {labels.get(rid, '(not created by this check)')}")
        dupes = sorted({x for x in got if got.count(x) > 1}, key=str)
        for rid in dupes:
            lines.append(f"  repeated:   {rid} ({got.count(rid)} times)  {labels.get(rid, '')}")
        return "\n".join(lines)

    def expect(ss, expected, what):
        """Every match of `ss` (all pages, via fhirpy) is exactly `expected`,
        each once, and the first page's Bundle.total says how many."""
        c.start()
        name = f"{query_of(ss)}: {what}"
        got = [r["id"] for r in ss.fetch_all()]
        c.check(f"{name} ({len(expected)})",
                sorted(got) == sorted(expected), diff(expected, got))
        bundle = ss.fetch_raw()
        c.check(f"{name}: Bundle.total == {len(expected)}",
                bundle.get("type") == "searchset" and bundle.get("total") == len(expected),
                f"got type {bundle.get('type')!r}, total {bundle.get('total')!r}")

    Task = client.resources("Task")
    SR = client.resources("ServiceRequest")

    # -- chained -----------------------------------------------------------------
    def tasks_of_practices(gp_indexes):
        return [task_ids[i] for i in range(N) if srs[i]["gp"] in gp_indexes]

    def chained():
        for gp, (code, name) in enumerate(PRACTICES):
            expect(Task.search(focus__ServiceRequest__requester__Organization__identifier=f"{ODS_CODE}|{code}"),
                   tasks_of_practices({gp}), f"Tasks referred by {name}")
        expect(Task.search(**{"focus:ServiceRequest.requester:Organization.identifier":
                              f"{ODS_CODE}|B86030,{ODS_CODE}|B86032"}),
               tasks_of_practices({0, 2}), "Tasks referred by Practice A or C")
        expect(Task.search(**{"focus:ServiceRequest.requester:Organization.identifier":
                              f"{ODS_CODE}|Z99999"}),
               [], "no Tasks for an unknown practice")

    section("Chained search (focus:ServiceRequest.requester:Organization.identifier)", chained)

    def chained_untyped():
        for gp, (code, name) in enumerate(PRACTICES):
            expect(Task.search(focus__ServiceRequest__requester__identifier=f"{ODS_CODE}|{code}"),
                   tasks_of_practices({gp}), f"Tasks referred by {name}")
        expect(Task.search(**{"focus:ServiceRequest.requester.name": "Practice B"}),
               tasks_of_practices({1}), "Tasks referred by Practice B, by name")

    section("Chained search without the :Organization type "
            "(focus:ServiceRequest.requester.identifier)", chained_untyped)

    # -- reverse chained -----------------------------------------------------------
    def has():
        expect(SR.has("Task", "focus", status="requested"),
               [sr_ids[t["sr"]] for t in tasks if t["status"] == "requested"],
               "ServiceRequests with a requested Task")
        expect(SR.has("Task", "focus", status="accepted"),
               [sr_ids[t["sr"]] for t in tasks if t["status"] == "accepted"],
               "ServiceRequests with an accepted Task")
        expect(SR.has("Task", "focus", owner=vcs.to_reference()),
               [sr_ids[t["sr"]] for t in tasks if t["owned"]],
               "ServiceRequests whose Task the VCS organisation owns")

    section("Reverse chaining (_has:Task:focus:...)", has)

    # -- _include / _revinclude, page by page ----------------------------------------
    def pages(ss):
        """Every Bundle of a search: the first from fhirpy's fetch_raw(), the
        rest by following each Bundle's `next` link with the fhirpy client."""
        bundle = ss.fetch_raw()
        out = [bundle]
        while True:
            nxt = [lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"]
            if not nxt:
                return out
            if len(out) > 50:
                raise Abort("more than 50 pages")
            bundle = client.execute(nxt[0], method="get")
            out.append(bundle)

    def ref_id(ref, rtype):
        """The id of a local `rtype/id` reference (a plain dict or a fhirpy reference)."""
        typ, _, rid = ref["reference"].partition("/")
        return rid if typ == rtype else ref["reference"]

    def split(bundle):
        matches, included, other = [], [], []
        for e in bundle.get("entry", []):
            mode = e.get("search", {}).get("mode")
            (matches if mode == "match" else included if mode == "include" else other).append(
                e["resource"])
        return matches, included, other

    def check_paged_includes(ss, match_type, inc_type, expected_matches, inc_for):
        """Pages through `ss`; on each page the included `inc_type` resources
        must be exactly inc_for(match) over that page's matches."""
        c.start()
        name = query_of(ss)
        bundles = pages(ss)
        seen, problems = [], []
        for n, b in enumerate(bundles, 1):
            matches, included, other = split(b)
            if b.get("total") != len(expected_matches):
                problems.append(f"page {n}: Bundle.total {b.get('total')!r}, "
                                f"expected {len(expected_matches)} (includes do not count)")
            if other:
                problems.append(f"page {n}: {len(other)} entries without search.mode match/include")
            if any(r["resourceType"] != match_type for r in matches):
                problems.append(f"page {n}: a match that is not a {match_type}")
            want = sorted({x for m in matches for x in inc_for(m)})
            got = [r["id"] for r in included if r["resourceType"] == inc_type]
            if sorted(got) != want:
                problems.append(f"page {n}: included {inc_type}s differ from the page's matches':\n"
                                + diff(want, got))
            extra = [f"{r['resourceType']}/{r['id']}" for r in included
                     if r["resourceType"] != inc_type]
            if extra:
                problems.append(f"page {n}: unexpected included resources {extra}")
            seen += [m["id"] for m in matches]
        c.check(f"{name}: matches over {len(bundles)} page(s) are the {len(expected_matches)} "
                f"{match_type}s, each once",
                sorted(seen) == sorted(expected_matches), diff(expected_matches, seen))
        c.check(f"{name}: each page includes exactly its matches' {inc_type}s, total counts "
                f"matches only", not problems, "\n".join(problems))

    def include():
        focus_of = lambda task: [ref_id(task["focus"], "ServiceRequest")]  # noqa: E731
        check_paged_includes(Task.include("Task", "focus").limit(10), "Task", "ServiceRequest",
                             task_ids, focus_of)
        check_paged_includes(Task.include("Task", "focus", "ServiceRequest"), "Task",
                             "ServiceRequest", task_ids, focus_of)

        # :iterate goes on from the included ServiceRequests to their requesters.
        c.start()
        accepted = [t for t in tasks if t["status"] == "accepted"]
        ss = (Task.search(status="accepted").include("Task", "focus")
              .include("ServiceRequest", "requester", iterate=True))
        matches, included, other = split(ss.fetch_raw())
        want = sorted([f"ServiceRequest/{sr_ids[t['sr']]}" for t in accepted]
                      + list({f"Organization/{gps[srs[t['sr']]['gp']]['id']}" for t in accepted}))
        got = [f"{r['resourceType']}/{r['id']}" for r in included]
        c.check(f"{query_of(ss)}: matches are the {len(accepted)} accepted Tasks",
                sorted(m["id"] for m in matches) == sorted(task_ids[t["sr"]] for t in accepted)
                and not other,
                diff([task_ids[t["sr"]] for t in accepted], [m["id"] for m in matches]))
        c.check(f"{query_of(ss)}: includes their ServiceRequests and, iterating, "
                f"the requesting practices, each once",
                sorted(got) == want,
                "expected " + ", ".join(want) + "\ngot      " + ", ".join(sorted(got)))

    section("_include (Task:focus, page by page; :iterate)", include)

    def revinclude():
        task_of_sr = {sr_ids[t["sr"]]: task_ids[i] for i, t in enumerate(tasks)}
        check_paged_includes(SR.revinclude("Task", "focus").limit(10), "ServiceRequest", "Task",
                             sr_ids, lambda sr: [task_of_sr[sr["id"]]])

    section("_revinclude (Task:focus, page by page)", revinclude)

    # -- paging ---------------------------------------------------------------------------
    def paging():
        c.start()
        ss = Task.limit(7)
        mark = c.rec.mark()
        got = [t["id"] for t in ss.fetch_all()]
        exchanges = c.rec.since(mark)
        c.check(f"{query_of(ss)}: fetch_all() over the next links returns every Task exactly once",
                sorted(got) == sorted(task_ids), diff(task_ids, got))
        sizes, totals, statuses = [], [], []
        for r in exchanges:
            statuses.append(r.status_code)
            b = r.json() if r.status_code == 200 else {}
            sizes.append(len(b.get("entry", [])))
            totals.append(b.get("total"))
        want_sizes = [7] * (N // 7) + ([N % 7] if N % 7 else [])
        c.check(f"{query_of(ss)}: {len(want_sizes)} pages of {want_sizes}",
                statuses == [200] * len(want_sizes) and sizes == want_sizes,
                f"got statuses {statuses}, page sizes {sizes}")
        c.check(f"{query_of(ss)}: every page has Bundle.total == {N}", totals == [N] * len(totals),
                f"got totals {totals}")
        c.check(f"{query_of(ss)}: count() == {N}", ss.count() == N, "")

    section("Paging (_count=7)", paging)

    # -- date prefixes, tokens, :missing -------------------------------------------------
    def dates():
        feb1, mar1 = datetime.date(2026, 2, 1), datetime.date(2026, 3, 1)
        ge = [sr_ids[i] for i, s in enumerate(srs) if s["day"] >= feb1]
        ss = SR.search(authored__ge="2026-02-01")
        c.start()
        n = ss.count()
        c.check(f"{query_of(ss)}: count() == {len(ge)}", n == len(ge), f"got {n}")
        expect(ss, ge, "ServiceRequests authored on or after 1 February")
        expect(SR.search(authored__lt="2026-02-01"),
               [sr_ids[i] for i, s in enumerate(srs) if s["day"] < feb1],
               "ServiceRequests authored before 1 February")
        expect(SR.search(authored__ge=feb1, authored__lt=mar1),
               [sr_ids[i] for i, s in enumerate(srs) if feb1 <= s["day"] < mar1],
               "ServiceRequests authored in February")
        expect(SR.search(authored="2026-02-01"),
               [sr_ids[i] for i, s in enumerate(srs) if s["day"] == feb1],
               "ServiceRequests authored on 1 February")

    section("Date prefixes (ServiceRequest authored)", dates)

    def tokens():
        expect(Task.search(status="requested"),
               [task_ids[i] for i, t in enumerate(tasks) if t["status"] == "requested"],
               "requested Tasks")
        expect(Task.search(code=f"{TASK_CODE}|fulfill"), task_ids, "fulfil Tasks")
        expect(SR.search(code=f"{SNOMED}|{SOCIAL_PRESCRIBING_REFERRAL}", status="active"), sr_ids,
               "active social prescribing referrals")

    section("Tokens", tokens)

    def missing():
        expect(Task.search(owner__missing=True),
               [task_ids[i] for i, t in enumerate(tasks) if not t["owned"]], "Tasks with no owner")
        expect(Task.search(owner__missing=False),
               [task_ids[i] for i, t in enumerate(tasks) if t["owned"]], "Tasks with an owner")

    section(":missing (Task owner)", missing)


def main(argv):
    if len(argv) != 2 or not argv[1].startswith(("http://", "https://")):
        print("usage: check_fhirpy.py BASE_URL   (e.g. http://127.0.0.1:8080)", file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    print(f"python fhirpy check against {base} (fhirpy {fhirpy.__version__}, SyncFHIRClient)")
    c = Checker(Recorder())
    try:
        run(base, c)
    except requests.ConnectionError as e:
        c.fail(f"connect to {base}", e)
    print(f"python fhirpy check: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 and c.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
