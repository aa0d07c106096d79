#!/usr/bin/env python3
"""Static checks of the rendered manifests that no schema validator does.

    manifests.py check OVERLAY_NAME RENDERED.yaml BASE_DIR     # exit 1 with reasons
    manifests.py split RENDERED.yaml OUTDIR                     # one file per object
    manifests.py kubeplay RENDERED.yaml OUT.yaml KEY=>VALUE...  # podman-playable subset
    manifests.py pinned RENDERED.yaml                           # release gate: real digests only

Custom resources (CloudNativePG, cert-manager, Prometheus Operator) are not in
the Kubernetes schemas kubernetes-validate carries, and the operators' CRDs
cannot be fetched here: their fields are checked against the lists below,
taken from the operators' API references.
"""
import ipaddress
import re
import sys
import tomllib

import yaml

CR_FIELDS = {
    ("postgresql.cnpg.io/v1", "Cluster"): {
        "spec": {"instances", "imageName", "primaryUpdateStrategy", "minSyncReplicas", "maxSyncReplicas",
                 "enableSuperuserAccess", "postgresql", "bootstrap", "managed", "storage", "walStorage",
                 "resources", "affinity", "monitoring", "backup"},
        "spec.bootstrap.initdb": {"database", "owner", "secret", "postInitApplicationSQLRefs"},
        "spec.backup": {"retentionPolicy", "barmanObjectStore"},
        "spec.backup.barmanObjectStore": {"destinationPath", "endpointURL", "s3Credentials", "wal", "data"},
        "spec.backup.barmanObjectStore.wal": {"compression", "encryption", "maxParallel"},
        "spec.backup.barmanObjectStore.data": {"compression", "encryption", "jobs", "immediateCheckpoint"},
        "spec.monitoring": {"enablePodMonitor", "customQueriesConfigMap"},
        "spec.affinity": {"enablePodAntiAffinity", "podAntiAffinityType", "topologyKey"},
    },
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): {
        "spec": {"schedule", "backupOwnerReference", "cluster", "method", "target"},
    },
    ("cert-manager.io/v1", "Certificate"): {
        "spec": {"secretName", "dnsNames", "issuerRef", "privateKey", "isCA", "commonName", "duration",
                 "renewBefore"},
        "spec.issuerRef": {"name", "kind", "group"},
        "spec.privateKey": {"algorithm", "size", "encoding", "rotationPolicy"},
    },
    ("cert-manager.io/v1", "Issuer"): {
        "spec": {"selfSigned", "ca"},
        "spec.ca": {"secretName"},
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "spec": {"selector", "endpoints"},
    },
}
REQUIRED = {
    "Cluster": ["spec.instances", "spec.storage.size", "spec.bootstrap.initdb.database"],
    "ScheduledBackup": ["spec.schedule", "spec.cluster.name"],
    "Certificate": ["spec.secretName", "spec.issuerRef.name", "spec.dnsNames"],
    "ServiceMonitor": ["spec.selector", "spec.endpoints"],
}


DB_POD_LABELS = {"cnpg.io/cluster": "waterworks-db", "cnpg.io/instanceRole": "primary", "role": "primary"}
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def selects(selector, labels):
    """Whether a NetworkPolicy podSelector selects a pod with these labels
    (matchLabels; any matchExpressions is taken as selecting, to be safe)."""
    if selector.get("matchExpressions"):
        return True
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def db_egress_errors(where, np):
    """The database pods reach nothing on the internet: every egress rule of a
    policy that selects them names its ports and peers, and every ipBlock is
    a private block of /16 or narrower."""
    errs = []
    spec = np["spec"]
    if not selects(spec.get("podSelector") or {}, DB_POD_LABELS):
        return errs
    if "Egress" not in spec.get("policyTypes", []) and "egress" not in spec:
        return errs
    for i, rule in enumerate(spec.get("egress") or []):
        if not rule.get("ports"):
            errs.append(f"{where}: egress rule {i} selects the database pods without naming ports")
        peers = rule.get("to")
        if not peers:
            errs.append(f"{where}: egress rule {i} lets the database pods reach any address")
            continue
        for peer in peers:
            block = peer.get("ipBlock")
            if block is None:
                continue  # pods of the cluster (podSelector / namespaceSelector)
            net = ipaddress.ip_network(block["cidr"], strict=False)
            if not any(net.subnet_of(p) for p in PRIVATE if p.version == net.version):
                errs.append(f"{where}: egress rule {i} lets the database pods reach {net} (not a private range)")
            elif net.prefixlen < 16:
                errs.append(f"{where}: egress rule {i} lets the database pods reach {net} (wider than /16)")
    return errs


DB_CA_SECRET = "waterworks-db-ca"      # CloudNativePG's <cluster>-ca
DB_CA_DIR = "/etc/waterworks-db-ca"    # sslrootcert=/etc/waterworks-db-ca/ca.crt
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
BROKER_SERVICE = "mosquitto"           # the internal listener's Service (mosquitto.yaml)
BROKER_INTERNAL_PORT = 1883


def ingest_broker_tls_errors(overlay, objs, by):
    """Ingest reaches the broker over TLS: every ingest-N.toml says
    mqtts://mosquitto:1883 with a tls_ca_file inside a directory the ingest
    container mounts from the Secret of a cert-manager Certificate naming the
    Service (short and namespace-qualified names), the ca.crt key projected;
    the broker's internal listener serves that Certificate's key pair."""
    errs = []
    ns = next((o["metadata"].get("namespace") for o in objs if o["kind"] == "StatefulSet"), None)
    names = {BROKER_SERVICE, f"{BROKER_SERVICE}.{ns}.svc", f"{BROKER_SERVICE}.{ns}.svc.cluster.local"}
    certs = {get(o, "spec.secretName"): o for o in objs
             if o["kind"] == "Certificate" and names <= set(get(o, "spec.dnsNames") or [])}
    if not certs:
        return [f"{overlay}: no Certificate names the broker Service as {sorted(names)}"]
    want_url = f"mqtts://{BROKER_SERVICE}:{BROKER_INTERNAL_PORT}"
    sts = by.get(("StatefulSet", "ingest"))
    cm = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ingest-config")), None)
    if not sts or not cm:
        return [f"{overlay}: ingest StatefulSet or ingest-config missing"]
    ps = pod_spec(sts)
    c = next(c for c in ps["containers"] if c["name"] == "ingest")
    vols = {v["name"]: v for v in ps.get("volumes") or []}
    for fname, text in cm["data"].items():
        mqtt = tomllib.loads(text).get("mqtt", {})
        if mqtt.get("url") != want_url:
            errs.append(f"{overlay}: {fname}: mqtt.url is {mqtt.get('url')!r}, not {want_url} (TLS)")
        ca = mqtt.get("tls_ca_file") or ""
        mount = next((m for m in c.get("volumeMounts") or [] if ca.startswith(m["mountPath"].rstrip("/") + "/")), None)
        vol = vols.get(mount["name"], {}) if mount else {}
        item = ca[len(mount["mountPath"].rstrip("/")) + 1:] if mount else None
        if not mount or get(vol, "secret.secretName") not in certs \
                or {"key": "ca.crt", "path": item} not in (get(vol, "secret.items") or []):
            errs.append(f"{overlay}: {fname}: mqtt.tls_ca_file {ca!r} is not the ca.crt of the broker "
                        f"certificate's Secret ({', '.join(sorted(certs))}) mounted in the ingest container")
    # the broker's listener 1883 serves that certificate
    conf = next((o["data"]["mosquitto.conf"] for o in objs
                 if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("mosquitto-config")), "")
    block = re.search(rf"^listener {BROKER_INTERNAL_PORT}\b(.*?)(?=^listener |\Z)", conf, re.M | re.S)
    files = dict(re.findall(r"^(certfile|keyfile) (\S+)", block.group(1), re.M)) if block else {}
    broker = by.get(("StatefulSet", BROKER_SERVICE))
    bps = pod_spec(broker) if broker else {"containers": [{}]}
    bvols = {v["name"]: v for v in bps.get("volumes") or []}
    for key in ("certfile", "keyfile"):
        path = files.get(key, "")
        m = next((m for m in bps["containers"][0].get("volumeMounts") or []
                  if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if not m or get(bvols.get(m["name"], {}), "secret.secretName") not in certs:
            errs.append(f"{overlay}: broker listener {BROKER_INTERNAL_PORT} {key} {path or '(none)'} is not from "
                        f"the Secret of the certificate naming the Service {BROKER_SERVICE}")
    return errs


def images(objs):
    """(where, image reference) of every container and of CloudNativePG's
    Cluster spec.imageName."""
    out = []
    for o in objs:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Cluster" and get(o, "spec.imageName"):
            out.append((where, o["spec"]["imageName"]))
        ps = pod_spec(o)
        if ps is not None:
            for c in (ps.get("initContainers") or []) + ps["containers"]:
                out.append((f"{where} container {c['name']}", c["image"]))
    return out


def pinned(path):
    """The release gate: every image of the rendering is name@sha256:<64 hex>.
    The committed prod overlay carries UNPINNED markers, which fail here."""
    bad = [(w, i) for w, i in images(load(path)) if not DIGEST.search(i)]
    for w, i in bad:
        print(f"  not pinned to a real digest: {w}: {i}")
    return not bad


def load(path):
    return [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]


def get(d, dotted):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def pod_spec(o):
    k = o["kind"]
    if k in ("Deployment", "StatefulSet"):
        return o["spec"]["template"]["spec"]
    if k == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def check(overlay, path, base_dir):
    objs = load(path)
    errs = []
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        where = f"{overlay}: {kind}/{name}"
        if kind == "Secret":
            errs.append(f"{where}: a Secret is rendered; secrets are referenced, never committed")
        key = (o["apiVersion"], kind)
        if key in CR_FIELDS:
            for dotted, allowed in CR_FIELDS[key].items():
                sub = get(o, dotted)
                if isinstance(sub, dict):
                    for f in sub:
                        if f not in allowed:
                            errs.append(f"{where}: unknown field {dotted}.{f}")
            # backups encrypted: WAL and base backups in the object store
            if kind == "Cluster" and get(o, "spec.backup.barmanObjectStore"):
                for part in ("wal", "data"):
                    if get(o, f"spec.backup.barmanObjectStore.{part}.encryption") not in ("AES256", "aws:kms"):
                        errs.append(f"{where}: barmanObjectStore.{part} without encryption (AES256 or aws:kms)")
            reqs = REQUIRED.get(kind, [])
            if kind == "Certificate" and get(o, "spec.isCA"):
                # a CA certificate names no host: its common name instead
                reqs = [r for r in reqs if r != "spec.dnsNames"] + ["spec.commonName"]
            for req in reqs:
                if get(o, req) in (None, "", []):
                    errs.append(f"{where}: missing {req}")
        for ak, av in (o["metadata"].get("annotations") or {}).items():
            if ak.startswith("checkov.io/skip"):
                check_id, _, reason = av.partition("=")
                if not re.match(r"^CKV2?_K8S_\d+$", check_id) or len(reason.strip()) < 20:
                    errs.append(f"{where}: checkov skip {av!r} carries no reason")
        if kind == "NetworkPolicy":
            errs.extend(db_egress_errors(where, o))
        ps = pod_spec(o)
        if ps is not None:
            sc = ps.get("securityContext") or {}
            if not sc.get("runAsNonRoot"):
                errs.append(f"{where}: pod not runAsNonRoot")
            if ps.get("automountServiceAccountToken") is not False:
                errs.append(f"{where}: service account token mounted")
            for c in ps["containers"]:
                csc = c.get("securityContext") or {}
                if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False \
                        or "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
                    errs.append(f"{where}: container {c['name']} securityContext incomplete")
                if not (c.get("resources") or {}).get("limits") or not (c.get("resources") or {}).get("requests"):
                    errs.append(f"{where}: container {c['name']} without requests and limits")
                for e in c.get("env") or []:
                    if re.search(r"password|secret|token|DATABASE_URL", e["name"], re.I) and "value" in e:
                        errs.append(f"{where}: env {e['name']} is a literal")
                # the database URL's sslrootcert (sslmode=verify-full): the
                # cluster's CA Secret mounted where the URLs point
                if any(e["name"] == "DATABASE_URL" for e in c.get("env") or []):
                    vols = {v["name"]: v for v in ps.get("volumes") or []}
                    ca = [m for m in c.get("volumeMounts") or []
                          if m.get("mountPath") == DB_CA_DIR
                          and get(vols.get(m["name"], {}), "secret.secretName") == DB_CA_SECRET]
                    if not ca:
                        errs.append(f"{where}: container {c['name']} uses DATABASE_URL without the database CA "
                                    f"(Secret {DB_CA_SECRET} at {DB_CA_DIR}) for sslmode=verify-full")
                if kind != "CronJob" and (not c.get("readinessProbe") or not c.get("livenessProbe")):
                    errs.append(f"{where}: container {c['name']} without probes")
                if kind != "CronJob" and c["name"] in ("ingest", "billing"):
                    if c["readinessProbe"].get("httpGet", {}).get("path") != "/ready" \
                            or c["livenessProbe"].get("httpGet", {}).get("path") != "/health":
                        errs.append(f"{where}: probes must be /ready and /health")
    # ingest: one config per possible ordinal, identical but for the client id
    hpa = by.get(("HorizontalPodAutoscaler", "ingest"))
    cm = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ingest-config")), None)
    if not hpa or not cm:
        errs.append(f"{overlay}: ingest HPA or ingest-config missing")
    else:
        files = cm["data"]
        for i in range(hpa["spec"]["maxReplicas"]):
            if f"ingest-{i}.toml" not in files:
                errs.append(f"{overlay}: HPA maxReplicas {hpa['spec']['maxReplicas']} but no ingest-{i}.toml")
        norm = set()
        for fname, text in files.items():
            i = fname.removeprefix("ingest-").removesuffix(".toml")
            if f'client_id = "ingest-{i}"' not in text:
                errs.append(f"{overlay}: {fname} does not carry client_id ingest-{i}")
            body = "\n".join(l for l in text.splitlines() if not l.startswith("#"))
            norm.add(body.replace(f"ingest-{i}", "ingest-N"))
        if len(norm) != 1:
            errs.append(f"{overlay}: ingest-N.toml files differ beyond their client id")
        if hpa["spec"]["scaleTargetRef"]["kind"] != "StatefulSet":
            errs.append(f"{overlay}: HPA must scale the ingest StatefulSet")
    # production: every image by digest (the overlay's table; real digests are
    # enforced by the release gate `pinned`)
    if overlay == "prod":
        for w, i in images(objs):
            if "@sha256:" not in i:
                errs.append(f"{overlay}: {w}: image {i} is not pinned by digest (name@sha256:...)")
    # the logical backup is encrypted to a public key (logical-backup.sh)
    lb = by.get(("CronJob", "waterworks-logical-backup"))
    if lb:
        c = pod_spec(lb)["containers"][0]
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        vols = {v["name"]: v for v in pod_spec(lb).get("volumes") or []}
        key = env.get("BACKUP_PUBLIC_KEY") or ""
        mount = next((p for p in mounts if key.startswith(p + "/")), None)
        if not mount or "secret" not in vols.get(mounts[mount], {}):
            errs.append(f"{overlay}: logical backup without BACKUP_PUBLIC_KEY from a mounted Secret")
    errs.extend(ingest_broker_tls_errors(overlay, objs, by))
    for name in ("default-deny",):
        if ("NetworkPolicy", name) not in by:
            errs.append(f"{overlay}: NetworkPolicy {name} missing")
    ing = [o for o in objs if o["kind"] == "Ingress"]
    if len(ing) != 1 or len(ing[0]["spec"]["rules"]) != 1 or "cert-manager.io/cluster-issuer" not in ing[0]["metadata"].get("annotations", {}):
        errs.append(f"{overlay}: exactly one Ingress, one host, cert-manager annotated")
    for e in errs:
        print("  " + e)
    return not errs


def split(path, outdir):
    for i, o in enumerate(load(path)):
        with open(f"{outdir}/{i:03d}-{o['kind']}-{o['metadata']['name']}.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(o, f)


def kubeplay(path, out, subs):
    """The part of the dev overlay podman runs: the service workloads and their
    ConfigMaps. StatefulSet -> Deployment (podman has no StatefulSet; the pod
    name is then pinned to ingest-0 by the substituted POD_NAME), host network
    (the machine's PostgreSQL and Mosquitto), Secret references -> values
    given on the command line (Secrets are never in the manifests)."""
    kv = dict(s.split("=>", 1) for s in subs)
    objs = load(path)
    keep = []
    for o in objs:
        k, n = o["kind"], o["metadata"]["name"]
        if k == "ConfigMap" and (n.startswith("ingest-config") or n.startswith("billing-config")):
            for fname in list(o["data"]):
                text = o["data"][fname]
                for a, b in kv.items():
                    if a.startswith("cfg:"):
                        text = text.replace(a[4:], b)
                o["data"][fname] = text
            keep.append(o)
        elif (k, n) in (("StatefulSet", "ingest"), ("Deployment", "billing")):
            o = {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": kv.get("prefix", "") + n, "labels": o["metadata"].get("labels", {})},
                 "spec": {"replicas": 1, "selector": o["spec"]["selector"], "template": o["spec"]["template"]}}
            ps = o["spec"]["template"]["spec"]
            ps["hostNetwork"] = True
            # the test's database is local and plaintext: no CA Secret to mount
            ca_vols = {v["name"] for v in ps.get("volumes", []) if get(v, "secret.secretName") == DB_CA_SECRET}
            ps["volumes"] = [v for v in ps.get("volumes", []) if v["name"] not in ca_vols]
            for c in ps["containers"]:
                c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] not in ca_vols]
            for c in ps["containers"]:
                # host network: no port mappings; podman runs httpGet probes
                # with curl INSIDE the container, which a scratch image has
                # not: the test polls /ready and /health from outside instead.
                c.pop("ports", None)
                c.pop("readinessProbe", None)
                c.pop("livenessProbe", None)
                for e in c.get("env", []):
                    vf = e.get("valueFrom", {})
                    if "secretKeyRef" in vf:
                        e.pop("valueFrom")
                        e["value"] = kv[f"secret:{vf['secretKeyRef']['name']}/{vf['secretKeyRef']['key']}"]
                    elif "fieldRef" in vf:
                        e.pop("valueFrom")
                        e["value"] = kv[f"field:{n}/{vf['fieldRef']['fieldPath']}"]
                c["args"] = [a.replace("$(POD_NAME)", kv.get(f"field:{n}/metadata.name", "")) for a in c.get("args", [])]
            # Secret volumes (the bearer-token directory) -> a host directory
            # the test wrote ("secretdir:NAME=>PATH").
            for v in ps.get("volumes", []):
                if "secret" in v:
                    name = v.pop("secret")["secretName"]
                    v["hostPath"] = {"path": kv[f"secretdir:{name}"], "type": "Directory"}
            keep.append(o)
    # Unique ConfigMap names per run (podman may keep volumes made from them).
    prefix = kv.get("prefix", "")
    for o in keep:
        if o["kind"] == "ConfigMap":
            o["metadata"]["name"] = prefix + o["metadata"]["name"]
        else:
            for v in o["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in v:
                    v["configMap"]["name"] = prefix + v["configMap"]["name"]
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(keep, f)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "check":
        sys.exit(0 if check(sys.argv[2], sys.argv[3], sys.argv[4]) else 1)
    elif cmd == "split":
        split(sys.argv[2], sys.argv[3])
    elif cmd == "pinned":
        sys.exit(0 if pinned(sys.argv[2]) else 1)
    elif cmd == "kubeplay":
        kubeplay(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
