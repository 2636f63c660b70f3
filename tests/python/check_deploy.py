#!/usr/bin/env python3
"""Offline check of the deployment files in deploy/.

Usage (from the repository root):
    target/py-venv/bin/python tests/python/check_deploy.py [DEPLOY_DIR]

DEPLOY_DIR defaults to the repository's deploy/. Needs only PyYAML; no
container engine or cluster. Checks:
  * every YAML file under deploy/ parses;
  * deploy/k8s/: a Deployment (2+ replicas, readinessProbe GET /readyz,
    livenessProbe GET /healthz on a port the container has, cpu and memory
    requests and limits, runAsNonRoot, readOnlyRootFilesystem, no privilege
    escalation, ALL capabilities dropped, seccomp RuntimeDefault, the
    database URL from the Secret, the rest from the ConfigMap), a Service
    and a PodDisruptionBudget (minAvailable >= 1) that select its pods, a
    ConfigMap of SP_HUB_* settings without the database URL, a Job that runs
    `sp-hub migrate`, a Secret template whose values are empty, no
    namespace anywhere, and a kustomization.yaml listing exactly the
    manifests (every *.yaml but itself and *.example.yaml);
  * deploy/compose.yaml: 2+ sp-hub `serve` replicas with a /healthz
    healthcheck, no fixed host port shared by replicas, a one-shot
    `migrate` they wait for, PostgreSQL 16 with a named volume and a
    pg_isready healthcheck;
  * deploy/Dockerfile: multi-stage, a non-root USER, a HEALTHCHECK.

Prints one line per check and a final `check_deploy: N passed, M failed`
line; exits 1 if any check failed.
"""

import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check_deploy.py needs PyYAML (pip install PyYAML; see requirements.txt)")

ROOT = Path(__file__).resolve().parents[2]


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
            if detail:
                print(f"        {detail}")
        return bool(cond)


def dig(value, *path):
    """value[path[0]][path[1]]…, or None where a step is missing."""
    for step in path:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            return None
    return value


def load_yaml_files(c, deploy):
    """Parses every YAML file; returns {path: [documents]} of those that parse."""
    docs = {}
    files = sorted(p for p in deploy.rglob("*") if p.suffix in (".yaml", ".yml"))
    c.check("deploy/ holds YAML files", files, f"none under {deploy}")
    for path in files:
        name = path.relative_to(deploy.parent)
        try:
            parsed = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            c.check(f"{name} parses", False, str(e).replace("\n", " "))
            continue
        c.check(f"{name} parses", parsed and all(isinstance(d, dict) for d in parsed),
                "no document, or a document that is not a mapping")
        docs[path] = parsed
    return docs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------


def check_secure(c, where, pod, container):
    """Pod-level settings count for every container unless it overrides them."""
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def setting(key):
        return sc[key] if key in sc else pod_sc.get(key)

    c.check(f"{where}: runAsNonRoot", setting("runAsNonRoot") is True)
    c.check(f"{where}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True)
    c.check(f"{where}: allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False)
    c.check(f"{where}: drops ALL capabilities", "ALL" in (dig(sc, "capabilities", "drop") or []))
    c.check(f"{where}: seccompProfile RuntimeDefault",
            dig(setting("seccompProfile"), "type") == "RuntimeDefault")


def check_resources(c, where, container):
    res = container.get("resources") or {}
    for kind in ("requests", "limits"):
        got = res.get(kind) or {}
        c.check(f"{where}: resources.{kind} cpu and memory", "cpu" in got and "memory" in got,
                f"{kind}: {got}")


def check_env(c, where, container, secret_name, configmap_name):
    env = {e.get("name"): e for e in container.get("env") or []}
    ref = dig(env.get("SP_HUB_DATABASE_URL"), "valueFrom", "secretKeyRef") or {}
    c.check(f"{where}: SP_HUB_DATABASE_URL from Secret {secret_name}, key database-url",
            ref.get("name") == secret_name and ref.get("key") == "database-url", f"got {ref}")
    c.check(f"{where}: no literal SP_HUB_DATABASE_URL",
            "value" not in (env.get("SP_HUB_DATABASE_URL") or {}))
    from_cm = [dig(e, "configMapRef", "name") for e in container.get("envFrom") or []]
    c.check(f"{where}: settings from ConfigMap {configmap_name}", configmap_name in from_cm,
            f"envFrom: {from_cm}")


def probe_path(c, where, container, probe, path):
    get = dig(container, probe, "httpGet") or {}
    ports = {p.get("name") for p in container.get("ports") or []} | {
        p.get("containerPort") for p in container.get("ports") or []}
    c.check(f"{where}: {probe} GET {path}", get.get("path") == path, f"got {get.get('path')!r}")
    c.check(f"{where}: {probe} port is a container port", get.get("port") in ports,
            f"{get.get('port')!r} not in {sorted(map(str, ports))}")


def check_k8s(c, deploy, docs):
    k8s = deploy / "k8s"
    manifests = {p: d for p, d in docs.items() if p.parent == k8s}
    kustomization = manifests.pop(k8s / "kustomization.yaml", None)
    if not c.check("deploy/k8s/kustomization.yaml exists and parses", kustomization):
        kustomization = [{}]
    objects = [(p, d) for p, ds in manifests.items() for d in ds]
    by_kind = {}
    for path, obj in objects:
        by_kind.setdefault(obj.get("kind"), []).append((path, obj))
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "Job"):
        c.check(f"k8s: a {kind}", len(by_kind.get(kind, [])) >= 1, f"kinds: {sorted(map(str, by_kind))}")
    for path, obj in objects:
        c.check(f"k8s: {path.name} {obj.get('kind')} has no namespace (one set for any namespace)",
                dig(obj, "metadata", "namespace") is None)

    secret_name = configmap_name = None
    for path, secret in by_kind.get("Secret", []):
        secret_name = dig(secret, "metadata", "name")
        values = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
        c.check(f"k8s: Secret {secret_name} documents key database-url", "database-url" in values)
        c.check(f"k8s: Secret {secret_name} is not filled in", all(v in (None, "") for v in values.values()),
                "a value is set; the real Secret never belongs in the repository")
        c.check(f"k8s: Secret {secret_name} lives in a *.example.yaml file", path.name.endswith(".example.yaml"),
                path.name)
    for _, cm in by_kind.get("ConfigMap", []):
        configmap_name = dig(cm, "metadata", "name")
        data = cm.get("data") or {}
        c.check(f"k8s: ConfigMap {configmap_name} holds only SP_HUB_* settings",
                data and all(k.startswith("SP_HUB_") for k in data), f"keys: {sorted(data)}")
        c.check(f"k8s: ConfigMap {configmap_name} has no database URL (secret)",
                "SP_HUB_DATABASE_URL" not in data)

    pod_labels = {}
    for _, dep in by_kind.get("Deployment", []):
        name = dig(dep, "metadata", "name")
        pod = dig(dep, "spec", "template", "spec") or {}
        pod_labels = dig(dep, "spec", "template", "metadata", "labels") or {}
        c.check(f"k8s: Deployment {name} has 2+ replicas", (dig(dep, "spec", "replicas") or 1) >= 2,
                f"replicas: {dig(dep, 'spec', 'replicas')}")
        c.check(f"k8s: Deployment {name} selector matches its pods",
                selects(dig(dep, "spec", "selector", "matchLabels"), pod_labels))
        containers = pod.get("containers") or []
        c.check(f"k8s: Deployment {name} has containers", containers)
        for ct in containers:
            where = f"Deployment {name} container {ct.get('name')}"
            c.check(f"{where}: runs `serve`", (ct.get("args") or ct.get("command") or [None])[0] == "serve",
                    f"args: {ct.get('args')}")
            probe_path(c, where, ct, "readinessProbe", "/readyz")
            probe_path(c, where, ct, "livenessProbe", "/healthz")
            check_resources(c, where, ct)
            check_secure(c, where, pod, ct)
            check_env(c, where, ct, secret_name, configmap_name)

    for _, svc in by_kind.get("Service", []):
        name = dig(svc, "metadata", "name")
        c.check(f"k8s: Service {name} selects the Deployment's pods", selects(dig(svc, "spec", "selector"), pod_labels))
    for _, pdb in by_kind.get("PodDisruptionBudget", []):
        name = dig(pdb, "metadata", "name")
        c.check(f"k8s: PodDisruptionBudget {name} minAvailable >= 1",
                isinstance(dig(pdb, "spec", "minAvailable"), int) and dig(pdb, "spec", "minAvailable") >= 1)
        c.check(f"k8s: PodDisruptionBudget {name} selects the Deployment's pods",
                selects(dig(pdb, "spec", "selector", "matchLabels"), pod_labels))
    for _, job in by_kind.get("Job", []):
        name = dig(job, "metadata", "name")
        pod = dig(job, "spec", "template", "spec") or {}
        containers = pod.get("containers") or []
        c.check(f"k8s: Job {name} runs `sp-hub migrate`",
                any("migrate" in (ct.get("args") or []) + (ct.get("command") or []) for ct in containers))
        c.check(f"k8s: Job {name} restartPolicy Never or OnFailure", pod.get("restartPolicy") in ("Never", "OnFailure"))
        for ct in containers:
            where = f"Job {name} container {ct.get('name')}"
            check_resources(c, where, ct)
            check_secure(c, where, pod, ct)
            check_env(c, where, ct, secret_name, configmap_name)

    listed = kustomization[0].get("resources") or []
    expected = sorted(p.name for p in k8s.glob("*.y*ml")
                      if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml"))
    c.check("k8s: kustomization lists every manifest", not set(expected) - set(listed),
            f"missing: {sorted(set(expected) - set(listed))}")
    c.check("k8s: kustomization lists only files that exist", not set(listed) - set(expected),
            f"not found (or templates): {sorted(set(listed) - set(expected))}")


# ---------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------


def command_of(service):
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else cmd


def check_compose(c, deploy, docs):
    compose = (docs.get(deploy / "compose.yaml") or [{}])[0]
    services = compose.get("services") or {}
    if not c.check("compose: services present", services):
        return
    hubs = {n: s for n, s in services.items() if command_of(s)[:1] == ["serve"]}
    replicas = sum(dig(s, "deploy", "replicas") or 1 for s in hubs.values())
    c.check("compose: 2+ sp-hub serve replicas", replicas >= 2, f"{replicas} in {sorted(hubs)}")
    host_ports = [str(p).rsplit(":", 1)[0] for s in hubs.values() for p in s.get("ports") or []
                  if ":" in str(p)]
    c.check("compose: replicas share no fixed host port",
            not any((dig(s, "deploy", "replicas") or 1) > 1 and s.get("ports") for s in hubs.values())
            and len(host_ports) == len(set(host_ports)), f"ports: {host_ports}")
    migrate = [n for n, s in services.items() if command_of(s)[:1] == ["migrate"]]
    c.check("compose: a one-shot `migrate` service", migrate)
    pg = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith("postgres:")]
    c.check("compose: a PostgreSQL service", pg)
    for name, hub in hubs.items():
        test = " ".join(map(str, dig(hub, "healthcheck", "test") or []))
        c.check(f"compose: {name} healthcheck GETs /healthz", "/healthz" in test, test)
        deps = hub.get("depends_on") or {}
        for m in migrate:
            c.check(f"compose: {name} waits for {m} to complete",
                    dig(deps, m, "condition") == "service_completed_successfully", f"depends_on: {deps}")
        for p, _ in pg:
            c.check(f"compose: {name} waits for {p} to be healthy", dig(deps, p, "condition") == "service_healthy")
    named = set(compose.get("volumes") or {})
    for name, s in pg:
        c.check(f"compose: {name} is PostgreSQL 16", re.fullmatch(r"postgres:16([.\-].*)?", s["image"]),
                s["image"])
        data = [str(v).split(":")[0] for v in s.get("volumes") or []
                if str(v).split(":")[1:2] == ["/var/lib/postgresql/data"]]
        c.check(f"compose: {name} keeps its data in a named volume", data and data[0] in named,
                f"volumes: {s.get('volumes')}, declared: {sorted(named)}")
        test = " ".join(map(str, dig(s, "healthcheck", "test") or []))
        c.check(f"compose: {name} healthcheck uses pg_isready", "pg_isready" in test, test)


def check_dockerfile(c, deploy):
    path = deploy / "Dockerfile"
    if not c.check("Dockerfile exists", path.is_file()):
        return
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.strip().startswith("#")]
    c.check("Dockerfile: multi-stage", sum(l.upper().startswith("FROM ") for l in lines) >= 2)
    users = [l.split()[1] for l in lines if l.upper().startswith("USER ")]
    c.check("Dockerfile: runs as a non-root USER", users and users[-1].split(":")[0] not in ("root", "0"),
            f"USER: {users}")
    c.check("Dockerfile: HEALTHCHECK", any(l.upper().startswith("HEALTHCHECK ") for l in lines))


def main(argv):
    deploy = Path(argv[1]).resolve() if len(argv) > 1 else ROOT / "deploy"
    print(f"check_deploy: {deploy} (PyYAML {yaml.__version__})")
    c = Checker()
    docs = load_yaml_files(c, deploy)
    check_k8s(c, deploy, docs)
    check_compose(c, deploy, docs)
    check_dockerfile(c, deploy)
    print(f"check_deploy: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
