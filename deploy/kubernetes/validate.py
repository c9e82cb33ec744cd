#!/usr/bin/env python3
"""Checks localvol's Kubernetes manifests without a cluster.

  validate.py [--root DIR] [--docs FILE]   check the manifests (exit 1 on a problem)

validate_selftest.py breaks a copy in each checked way and expects each break
to be reported, so that no check here passes by doing nothing.

What is checked: every YAML document parses and is a Kubernetes object; the
kustomizations list every manifest beside them; the references line up: the CSI
socket (csi-address arguments, volume mounts, hostPath and the kubelet
registration path), the driver name (CSIDriver, StorageClass provisioner,
VolumeAttributesClass driverName), the topology key, service accounts, roles
and bindings, config maps and volumes; the sidecar images are pinned by
version; the node provisioner has exactly the flags of issue 19; StorageClass
and VolumeAttributesClass parameters are keys localvold knows, with well-formed
values; each service account holds the permissions its sidecar needs; and the
operator's guide (docs/kubernetes.md) names what an operator must line up.
"""

import argparse
import pathlib
import posixpath
import re
import sys

import yaml

DRIVER = "localvol.io"
TOPOLOGY_KEY = "topology.localvol.io/node"
# localvold's default csi_socket; the kubelet dials it on the host.
HOST_SOCKET = "/var/lib/kubelet/plugins/localvol.io/csi.sock"
REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
PUBLISH_DIR = "/mnt/disks"
NODE_LABEL = "localvol.io/storage"    # nodes of the dynamic mode
STATIC_LABEL = "localvol.io/static"   # nodes of the static mode; never both
NO_PROVISIONER = "kubernetes.io/no-provisioner"

# Issue 19: the node-deployment external-provisioner, besides --csi-address.
PROVISIONER_FLAGS = {
    "--node-deployment=true",
    "--feature-gates=Topology=true",
    "--enable-capacity",
    "--capacity-ownerref-level=1",
    "--strict-topology",
    "--immediate-topology=false",
    "--node-deployment-immediate-binding=false",
    "--extra-create-metadata",
}
PROVISIONER_ENV = {
    "NODE_NAME": "spec.nodeName",
    "NAMESPACE": "metadata.namespace",
    "POD_NAME": "metadata.name",
}

# The parameter keys localvold accepts, with the form of their values.
_INT = re.compile(r"^[0-9]+$")
_SIZE = re.compile(r"^[0-9]+(k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
IO_KEYS = {}
for _dir in ("read", "write"):
    for _kind, _form in (("IOPS", _INT), ("BPS", _SIZE)):
        IO_KEYS[f"{_dir}{_kind}"] = _form
        IO_KEYS[f"{_dir}{_kind}Burst"] = _form
        IO_KEYS[f"{_dir}{_kind}BurstSeconds"] = _INT
MUTABLE_KEYS = set(IO_KEYS) | {"weight"}
CLASS_KEYS = MUTABLE_KEYS | {"inodes", "disk", "readPassthrough"}

CLUSTER_SCOPED = {"Namespace", "CSIDriver", "StorageClass", "VolumeAttributesClass",
                  "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"DaemonSet", "Deployment", "StatefulSet"}
# A pinned image: a version tag (v1.2.3, 1.36.1, 0.1.0) or a digest.
PINNED_TAG = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.-]+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

# What each sidecar's service account must be allowed: (group, resource,
# verbs, namespaced). Namespaced rules are needed in the workload's namespace.
PROVISIONER_RBAC = [
    ("", "persistentvolumes", "get list watch create patch delete", False),
    ("", "persistentvolumeclaims", "get list watch update", False),
    ("storage.k8s.io", "storageclasses", "get list watch", False),
    ("storage.k8s.io", "volumeattributesclasses", "get list watch", False),
    ("storage.k8s.io", "csinodes", "get list watch", False),
    ("", "nodes", "get list watch", False),
    ("", "events", "create patch", False),
    ("storage.k8s.io", "csistoragecapacities", "get list watch create update patch delete", True),
    ("", "pods", "get", True),
    ("apps", "replicasets", "get", True),
]
RESIZER_RBAC = [
    ("", "persistentvolumes", "get list watch patch", False),
    ("", "persistentvolumeclaims", "get list watch", False),
    ("", "persistentvolumeclaims/status", "patch", False),
    ("", "pods", "get list watch", False),
    ("storage.k8s.io", "volumeattributesclasses", "get list watch", False),
    ("", "events", "create patch", False),
    ("coordination.k8s.io", "leases", "get list watch create update", True),
]
STATIC_RBAC = [
    ("", "persistentvolumes", "get list watch create delete", False),
    ("storage.k8s.io", "storageclasses", "get list watch", False),
    ("", "nodes", "get", False),
    ("", "events", "create", False),
]


class Doc:
    """One YAML document of one file."""

    def __init__(self, path, index, obj):
        self.path, self.index, self.obj = path, index, obj

    @property
    def kind(self):
        return self.obj.get("kind")

    @property
    def name(self):
        return (self.obj.get("metadata") or {}).get("name")

    @property
    def namespace(self):
        return (self.obj.get("metadata") or {}).get("namespace")

    def where(self):
        return f"{self.path} ({self.kind} {self.name})"


def _tokens(container):
    return [str(t) for t in (container.get("command") or []) + (container.get("args") or [])]


def _flag(tokens, name):
    """The values of --name=V and of --name V in a container's command line."""
    values = []
    for i, t in enumerate(tokens):
        if t.startswith(name + "="):
            values.append(t[len(name) + 1:])
        elif t == name and i + 1 < len(tokens):
            values.append(tokens[i + 1])
    return values


def _image_repo(image):
    return posixpath.basename(DIGEST.sub("", image).rsplit(":", 1)[0]) if image else ""


class Validator:
    def __init__(self, root, docs):
        self.root, self.docs_path = root, docs
        self.errors = []
        self.docs = []          # every Kubernetes object, examples included
        self.deployed = []      # the objects of some kustomization

    def error(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    # ---- loading -------------------------------------------------------

    def load(self):
        files = sorted(p for p in self.root.rglob("*") if p.suffix in (".yaml", ".yml"))
        kustomizations = []
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            try:
                loaded = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError as e:
                self.error(rel, f"does not parse: {e}")
                continue
            for i, obj in enumerate(loaded):
                if obj is None:
                    continue
                if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                    self.error(f"{rel} document {i + 1}", "not a Kubernetes object (apiVersion and kind)")
                    continue
                doc = Doc(rel, i, obj)
                if doc.kind == "Kustomization":
                    kustomizations.append((path, doc))
                    continue
                if not doc.name:
                    self.error(f"{rel} document {i + 1}", f"{doc.kind} without metadata.name")
                    continue
                self.docs.append(doc)
        if not kustomizations:
            self.error(self.root.as_posix(), "no kustomization.yaml")
        for path, doc in kustomizations:
            self._load_kustomization(path, doc, files)

    def _load_kustomization(self, path, doc, files):
        base = path.parent
        listed = []
        for res in doc.obj.get("resources") or []:
            target = (base / res).resolve()
            if not target.is_file():
                self.error(doc.path, f"resource {res} does not exist")
            listed.append(target)
        for f in files:
            if f.parent == base and f != path and f.resolve() not in listed:
                self.error(doc.path, f"{f.name} is not listed in resources, so apply -k skips it")
        members = [d for d in self.docs if (self.root / d.path).resolve() in listed]
        seen = {}
        for d in members:
            key = (d.kind, d.namespace, d.name)
            if key in seen:
                self.error(d.where(), f"defined twice in {doc.path} (also in {seen[key]})")
            seen[key] = d.path
        namespaces = {d.name for d in members if d.kind == "Namespace"}
        for d in members:
            if d.kind in CLUSTER_SCOPED:
                if d.namespace:
                    self.error(d.where(), "is cluster-scoped but has metadata.namespace")
            elif not d.namespace:
                self.error(d.where(), "has no metadata.namespace")
            elif d.namespace not in namespaces:
                self.error(d.where(), f"namespace {d.namespace} is not defined by {doc.path}")
        self.deployed.extend(m for m in members if m not in self.deployed)

    def of_kind(self, kind, docs=None):
        return [d for d in (self.deployed if docs is None else docs) if d.kind == kind]

    # ---- driver, classes -----------------------------------------------

    def check_csidriver(self):
        drivers = self.of_kind("CSIDriver")
        if len(drivers) != 1:
            self.error(self.root.as_posix(), f"expected one CSIDriver, found {len(drivers)}")
            return
        d = drivers[0]
        if d.name != DRIVER:
            self.error(d.where(), f"name must be {DRIVER}, the name localvold reports")
        want = {"attachRequired": False, "storageCapacity": True, "podInfoOnMount": True,
                "volumeLifecycleModes": ["Persistent"], "fsGroupPolicy": "File"}
        spec = d.obj.get("spec") or {}
        for key, value in want.items():
            if spec.get(key) != value:
                self.error(d.where(), f"spec.{key} is {spec.get(key)!r}, must be {value!r}")

    def check_parameters(self, where, params, allowed, what):
        if not isinstance(params, dict):
            self.error(where, f"{what} must be a map of strings")
            return
        for key, value in params.items():
            if key not in allowed:
                self.error(where, f"{what} key {key!r} is not one localvold accepts "
                           f"({', '.join(sorted(allowed))})")
                continue
            if not isinstance(value, str):
                self.error(where, f"{what} {key}: {value!r} must be a string (quote it)")
                continue
            form = IO_KEYS.get(key)
            if form is not None and not form.match(value):
                kind = "a size such as 100Mi" if form is _SIZE else "a whole number"
                self.error(where, f"{what} {key}: {value!r} is not {kind}")
            elif key.endswith("BurstSeconds") and not 1 <= int(value) <= 3600:
                self.error(where, f"{what} {key}: {value!r} is not in 1..3600 seconds")
            elif key == "weight" and not (_INT.match(value) and 1 <= int(value) <= 10000):
                self.error(where, f"{what} weight: {value!r} is not a whole number in 1..10000")
            elif key == "inodes" and not (_INT.match(value) and int(value) > 0):
                self.error(where, f"{what} inodes: {value!r} is not a positive whole number")
            elif key == "disk" and not value.strip():
                self.error(where, f"{what} disk: empty")
            elif key == "readPassthrough" and value not in ("auto", "off"):
                self.error(where, f"{what} readPassthrough: {value!r} is not auto or off")

    def check_storageclasses(self):
        classes = self.of_kind("StorageClass")
        if not any(sc.obj.get("provisioner") == DRIVER for sc in classes):
            self.error(self.root.as_posix(), f"no StorageClass with provisioner {DRIVER}")
        for sc in classes:
            o = sc.obj
            if o.get("volumeBindingMode") != "WaitForFirstConsumer":
                self.error(sc.where(), "volumeBindingMode must be WaitForFirstConsumer: a local "
                           "volume must be made where the scheduler puts the pod")
            if o.get("provisioner") == NO_PROVISIONER:
                if o.get("parameters"):
                    self.error(sc.where(), "the static provisioner ignores parameters")
                continue
            if o.get("provisioner") != DRIVER:
                self.error(sc.where(), f"provisioner {o.get('provisioner')!r} is neither the "
                           f"CSIDriver {DRIVER} nor {NO_PROVISIONER}")
                continue
            if o.get("allowVolumeExpansion") is not True:
                self.error(sc.where(), "allowVolumeExpansion must be true (NodeExpandVolume grows volumes)")
            if o.get("reclaimPolicy") != "Delete":
                self.error(sc.where(), f"reclaimPolicy is {o.get('reclaimPolicy')!r}, must be Delete")
            self.check_parameters(sc.where(), o.get("parameters") or {}, CLASS_KEYS, "parameters")
            for term in o.get("allowedTopologies") or []:
                for expr in term.get("matchLabelExpressions") or []:
                    if expr.get("key") != TOPOLOGY_KEY:
                        self.error(sc.where(), f"allowedTopologies key {expr.get('key')!r} is not "
                                   f"localvol's topology key {TOPOLOGY_KEY}")

    def check_vacs(self):
        for vac in self.of_kind("VolumeAttributesClass"):
            if vac.obj.get("apiVersion") != "storage.k8s.io/v1":
                self.error(vac.where(), f"apiVersion {vac.obj.get('apiVersion')} is not "
                           "storage.k8s.io/v1, the only version csi-provisioner v6 reads")
            if vac.obj.get("driverName") != DRIVER:
                self.error(vac.where(), f"driverName {vac.obj.get('driverName')!r} is not the "
                           f"CSIDriver {DRIVER}")
            params = vac.obj.get("parameters")
            if not params:
                self.error(vac.where(), "parameters must hold at least one key")
            self.check_parameters(vac.where(), params or {}, MUTABLE_KEYS, "mutable parameters")

    # ---- workloads -----------------------------------------------------

    def workloads(self):
        return [d for d in self.deployed if d.kind in WORKLOADS]

    @staticmethod
    def pod(doc):
        return ((doc.obj.get("spec") or {}).get("template") or {}).get("spec") or {}

    def containers(self, doc):
        return self.pod(doc).get("containers") or []

    def find_workload(self, repo):
        found = [(w, c) for w in self.workloads() for c in self.containers(w)
                 if _image_repo(c.get("image", "")) == repo]
        if len(found) != 1:
            self.error(self.root.as_posix(), f"expected one {repo} container, found {len(found)}")
            return None, None
        return found[0]

    def check_workload(self, w):
        spec = w.obj.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items():
            if labels.get(k) != v:
                self.error(w.where(), f"selector {k}={v} does not match the pod template's labels")
        pod = self.pod(w)
        sa = pod.get("serviceAccountName")
        if not sa:
            self.error(w.where(), "no serviceAccountName (the namespace's default account has no rights)")
        elif not any(s.name == sa and s.namespace == w.namespace for s in self.of_kind("ServiceAccount")):
            self.error(w.where(), f"serviceAccountName {sa} is not a ServiceAccount defined "
                       f"in {w.namespace}")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for v in volumes.values():
            cm = (v.get("configMap") or {}).get("name")
            if cm and not any(c.name == cm and c.namespace == w.namespace
                              for c in self.of_kind("ConfigMap")):
                self.error(w.where(), f"volume {v.get('name')}: ConfigMap {cm} is not defined "
                           f"in {w.namespace}")
        for c in self.containers(w):
            image = c.get("image", "")
            untagged, _, tag = DIGEST.sub("", image).rpartition(":")
            if not DIGEST.search(image) and not (untagged and PINNED_TAG.match(tag)):
                self.error(w.where(), f"container {c.get('name')}: image {image!r} is not pinned "
                           "to a version")
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    self.error(w.where(), f"container {c.get('name')}: volumeMount {m.get('name')} "
                               "has no volume")

    def locate(self, w, c, path, what):
        """Where a socket path of container c lands: ("host", path) or ("emptyDir", volume, rel)."""
        where = f"{w.where()} container {c.get('name')}"
        best = None
        for m in c.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best[0])):
                best = (mp, m)
        if best is None:
            self.error(where, f"{what} {path} is on no volumeMount, so it is not shared")
            return None
        mp, mount = best
        rel = posixpath.join(mount.get("subPath", ""), path[len(mp):].lstrip("/"))
        volume = next((v for v in self.pod(w).get("volumes") or []
                       if v.get("name") == mount.get("name")), None)
        if volume is None:
            return None
        if "hostPath" in volume:
            return ("host", posixpath.normpath(posixpath.join(volume["hostPath"].get("path", ""), rel)))
        return ("emptyDir" if "emptyDir" in volume else "volume", volume.get("name"), rel)

    def check_node(self):
        w, prov = self.find_workload("csi-provisioner")
        if w is None:
            return
        if w.kind != "DaemonSet":
            self.error(w.where(), "the node-deployment provisioner must run in a DaemonSet")
        tokens = _tokens(prov)
        addresses = _flag(tokens, "--csi-address")
        flags = {t for t in tokens if not t.startswith("--csi-address")}
        if len(addresses) != 1:
            self.error(w.where(), "csi-provisioner needs one --csi-address")
        for missing in sorted(PROVISIONER_FLAGS - flags):
            self.error(w.where(), f"csi-provisioner lacks {missing}")
        for extra in sorted(flags - PROVISIONER_FLAGS):
            self.error(w.where(), f"csi-provisioner has {extra}, which issue 19 does not ask for")
        env = {e.get("name"): ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
               for e in prov.get("env") or []}
        for name, path in PROVISIONER_ENV.items():
            if env.get(name) != path:
                self.error(w.where(), f"csi-provisioner env {name} must come from the downward "
                           f"API {path}")
        repos = {_image_repo(c.get("image", "")): c for c in self.containers(w)}
        for needed in ("csi-node-driver-registrar", "livenessprobe"):
            if needed not in repos:
                self.error(w.where(), f"no {needed} container")
        for c in self.containers(w):
            for address in _flag(_tokens(c), "--csi-address"):
                if self.locate(w, c, address, "--csi-address") != ("host", HOST_SOCKET):
                    self.error(w.where(), f"container {c.get('name')}: --csi-address {address} does "
                               f"not reach localvold's socket {HOST_SOCKET} on the host")
        reg = repos.get("csi-node-driver-registrar")
        if reg is not None:
            if _flag(_tokens(reg), "--kubelet-registration-path") != [HOST_SOCKET]:
                self.error(w.where(), "node-driver-registrar --kubelet-registration-path must be "
                           f"{HOST_SOCKET}")
            registration = self.locate(w, reg, "/registration/x", "registration dir")
            if registration != ("host", REGISTRY_DIR + "/x"):
                self.error(w.where(), f"node-driver-registrar must mount the host's {REGISTRY_DIR} "
                           "at /registration")
        if (self.pod(w).get("nodeSelector") or {}).get(NODE_LABEL) != "true":
            self.error(w.where(), f'nodeSelector must hold {NODE_LABEL}: "true" (the nodes running '
                       "localvold)")
        self.check_rbac(w, PROVISIONER_RBAC)

    def check_controller(self):
        w, resizer = self.find_workload("csi-resizer")
        if w is None:
            return
        if w.kind != "Deployment":
            self.error(w.where(), "the central resizer must run in a Deployment")
        agents = [c for c in self.containers(w) if "--csi-controller-only" in _tokens(c)]
        if len(agents) != 1:
            self.error(w.where(), "needs one `localvold --csi-controller-only` container beside "
                       "the resizer")
            return
        served = _flag(_tokens(agents[0]), "--csi-socket")
        used = _flag(_tokens(resizer), "--csi-address")
        if len(served) != 1 or len(used) != 1:
            self.error(w.where(), "localvold needs one --csi-socket and the resizer one --csi-address")
            return
        a = self.locate(w, agents[0], served[0], "--csi-socket")
        b = self.locate(w, resizer, used[0], "--csi-address")
        if a is None or a != b:
            self.error(w.where(), f"the resizer's --csi-address {used[0]} is not localvold's "
                       f"--csi-socket {served[0]}")
        self.check_rbac(w, RESIZER_RBAC)

    def check_static(self):
        w, prov = self.find_workload("local-volume-provisioner")
        if w is None:
            return
        self.check_rbac(w, STATIC_RBAC)
        if (self.pod(w).get("nodeSelector") or {}).get(STATIC_LABEL) != "true":
            self.error(w.where(), f'nodeSelector must hold {STATIC_LABEL}: "true", not the CSI '
                       "nodes' label: it would offer the driver's volumes as PVs too")
        mounts = {m.get("mountPath"): m for m in prov.get("volumeMounts") or []}
        mounted = {(v.get("configMap") or {}).get("name") for v in self.pod(w).get("volumes") or []}
        config = [c for c in self.of_kind("ConfigMap") if c.namespace == w.namespace and c.name in mounted]
        if not config:
            self.error(w.where(), "mounts no ConfigMap with a storageClassMap")
            return
        try:
            classes = yaml.safe_load((config[0].obj.get("data") or {}).get("storageClassMap", "")) or {}
        except yaml.YAMLError as e:
            self.error(config[0].where(), f"storageClassMap does not parse: {e}")
            return
        if not classes:
            self.error(config[0].where(), "storageClassMap names no class")
        for name, cls in classes.items():
            where = f"{config[0].where()} class {name}"
            if not any(sc.name == name and sc.obj.get("provisioner") == NO_PROVISIONER
                       for sc in self.of_kind("StorageClass")):
                self.error(where, f"no StorageClass {name} with provisioner {NO_PROVISIONER}")
            if cls.get("hostDir") != PUBLISH_DIR:
                self.error(where, f"hostDir {cls.get('hostDir')} is not localvold's publish_dir "
                           f"{PUBLISH_DIR}")
            mount = mounts.get(cls.get("mountDir") or cls.get("hostDir"))
            seen = mount and self.locate(w, prov, mount.get("mountPath"), "mountDir")
            if seen != ("host", cls.get("hostDir")):
                self.error(where, f"mountDir is not the host's {cls.get('hostDir')} mounted into the "
                           "provisioner")
            elif mount.get("mountPropagation") != "HostToContainer":
                self.error(where, "the discovery mount needs mountPropagation HostToContainer, "
                           "or volumes mounted later stay invisible")

    # ---- RBAC ------------------------------------------------------------

    def check_bindings(self):
        for b in self.of_kind("RoleBinding") + self.of_kind("ClusterRoleBinding"):
            ref = b.obj.get("roleRef") or {}
            if ref.get("apiGroup") != "rbac.authorization.k8s.io":
                self.error(b.where(), "roleRef.apiGroup must be rbac.authorization.k8s.io")
            if ref.get("kind") == "Role" and b.kind == "RoleBinding":
                ok = any(r.name == ref.get("name") and r.namespace == b.namespace
                         for r in self.of_kind("Role"))
            elif ref.get("kind") == "ClusterRole":
                ok = any(r.name == ref.get("name") for r in self.of_kind("ClusterRole"))
            else:
                ok = False
            if not ok:
                self.error(b.where(), f"roleRef {ref.get('kind')} {ref.get('name')} is not defined")
            for s in b.obj.get("subjects") or []:
                if s.get("kind") != "ServiceAccount":
                    continue
                if not any(a.name == s.get("name") and a.namespace == s.get("namespace")
                           for a in self.of_kind("ServiceAccount")):
                    self.error(b.where(), f"subject ServiceAccount {s.get('namespace')}/{s.get('name')} "
                               "is not defined")
        used = {(w.namespace, self.pod(w).get("serviceAccountName")) for w in self.workloads()}
        for a in self.of_kind("ServiceAccount"):
            if (a.namespace, a.name) not in used:
                self.error(a.where(), "no workload uses this ServiceAccount")

    def rules_of(self, namespace, account):
        """(rules, namespace or None for cluster-wide) granted to a service account."""
        granted = []
        for b in self.of_kind("RoleBinding") + self.of_kind("ClusterRoleBinding"):
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                       and s.get("namespace") == namespace for s in b.obj.get("subjects") or []):
                continue
            ref = b.obj.get("roleRef") or {}
            roles = [r for r in self.of_kind(ref.get("kind")) if r.name == ref.get("name")
                     and (ref.get("kind") == "ClusterRole" or r.namespace == b.namespace)]
            scope = b.namespace if b.kind == "RoleBinding" else None
            granted.extend((rule, scope) for r in roles for rule in r.obj.get("rules") or [])
        return granted

    def check_rbac(self, w, needs):
        account = self.pod(w).get("serviceAccountName")
        granted = self.rules_of(w.namespace, account)
        for group, resource, verbs, namespaced in needs:
            for verb in verbs.split():
                # A rule limited to resourceNames does not grant the sidecar's generic need.
                if not any((scope is None or (namespaced and scope == w.namespace))
                           and not rule.get("resourceNames")
                           and any(g in (group, "*") for g in rule.get("apiGroups") or [])
                           and any(r in (resource, "*") for r in rule.get("resources") or [])
                           and any(v in (verb, "*") for v in rule.get("verbs") or [])
                           for rule, scope in granted):
                    self.error(w.where(), f"ServiceAccount {account} may not {verb} "
                               f"{resource}{'.' + group if group else ''}"
                               f"{' in ' + w.namespace if namespaced else ''}")

    # ---- examples and docs -------------------------------------------------

    def check_examples(self):
        classes = {sc.name for sc in self.of_kind("StorageClass")}
        vacs = {v.name for v in self.of_kind("VolumeAttributesClass")}
        for pvc in self.of_kind("PersistentVolumeClaim", self.docs):
            spec = pvc.obj.get("spec") or {}
            if spec.get("storageClassName") not in classes:
                self.error(pvc.where(), f"storageClassName {spec.get('storageClassName')} is not a "
                           "class here")
            vac = spec.get("volumeAttributesClassName")
            if vac and vac not in vacs:
                self.error(pvc.where(), f"volumeAttributesClassName {vac} is not a class here")

    def check_docs(self):
        if self.docs_path is None:
            return
        if not self.docs_path.is_file():
            self.error(str(self.docs_path), "is not a readable file")
            return
        text = self.docs_path.read_text()
        needed = [DRIVER, TOPOLOGY_KEY, HOST_SOCKET, "csi_socket", "node_name", f"{NODE_LABEL}=true",
                  f"{STATIC_LABEL}=true", "localvolctl volume set-limits"]
        needed += [d.name for d in self.of_kind("StorageClass") + self.of_kind("VolumeAttributesClass")]
        needed += [f"`{k}`" for k in sorted(CLASS_KEYS)]
        for word in needed:
            if word not in text:
                self.error(self.docs_path.name, f"does not mention {word}")

    def run(self):
        self.load()
        checks = [self.check_csidriver, self.check_storageclasses, self.check_vacs, self.check_bindings,
                  self.check_node, self.check_controller, self.check_static, self.check_examples,
                  self.check_docs]
        checks += [lambda w=w: self.check_workload(w) for w in self.workloads()]
        for check in checks:
            # A document of the wrong shape (a list where a map belongs) must
            # fail the check with a message, not stop the others.
            try:
                check()
            except (AttributeError, TypeError, KeyError, ValueError) as e:
                self.error(self.root.as_posix(), f"malformed manifest ({type(e).__name__}: {e})")
        return self.errors


def validate(root, docs):
    return Validator(pathlib.Path(root), pathlib.Path(docs) if docs else None).run()


def main():
    here = pathlib.Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=here,
                        help="the manifests (deploy/kubernetes)")
    parser.add_argument("--docs", type=pathlib.Path,
                        default=here.parent.parent / "docs" / "kubernetes.md",
                        help="the operator's guide that must name the driver, socket and keys")
    args = parser.parse_args()
    errors = validate(args.root, args.docs)
    for e in errors:
        print(f"validate.py: {e}", file=sys.stderr)
    if errors:
        print(f"validate.py: {len(errors)} problem(s) in {args.root}", file=sys.stderr)
        return 1
    print(f"validate.py: {args.root}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
