#!/usr/bin/env python3
"""Proves that validate.py fails: each mutation breaks one rule in a copy of
the manifests (or of docs/kubernetes.md) and must be reported with the
expected message; the unbroken copy must pass.

  validate_selftest.py [--root DIR] [--docs FILE]
"""

import argparse
import pathlib
import shutil
import sys
import tempfile

from validate import validate

DOCS = "DOCS"
MUTATIONS = [
    ("a file that does not parse", "csidriver.yaml", "fsGroupPolicy: File", "fsGroupPolicy: [File", "does not parse"),
    ("a CSIDriver field", "csidriver.yaml", "attachRequired: false", "attachRequired: true", "spec.attachRequired"),
    ("the driver name", "csidriver.yaml", "name: localvol.io", "name: localvol.example", "must be localvol.io"),
    ("a StorageClass provisioner", "storageclass.yaml", "provisioner: localvol.io",
     "provisioner: localvol.example", "is neither the CSIDriver"),
    ("immediate binding", "storageclass.yaml", "volumeBindingMode: WaitForFirstConsumer",
     "volumeBindingMode: Immediate", "must be WaitForFirstConsumer"),
    ("an unknown parameter", "storageclass.yaml", "readIOPS:", "readIops:", "key 'readIops' is not"),
    ("an unquoted parameter", "storageclass.yaml", 'writeIOPS: "1000"', "writeIOPS: 1000", "must be a string"),
    ("a malformed size", "storageclass.yaml", 'readBPS: "200Mi"', 'readBPS: "200MB"', "is not a size"),
    ("a burst too long", "volumeattributesclass.yaml", 'writeIOPSBurstSeconds: "30"',
     'writeIOPSBurstSeconds: "7200"', "1..3600 seconds"),
    ("a weight out of range", "storageclass.yaml", 'weight: "50"', 'weight: "0"', "1..10000"),
    ("a foreign topology key", "storageclass.yaml", "reclaimPolicy: Delete\n---",
     "reclaimPolicy: Delete\nallowedTopologies:\n  - matchLabelExpressions:\n"
     "      - key: kubernetes.io/hostname\n        values: [n1]\n---", "topology key"),
    ("an immutable key in a VolumeAttributesClass", "volumeattributesclass.yaml", 'weight: "400"',
     'disk: "d1"', "key 'disk' is not"),
    ("a beta VolumeAttributesClass", "volumeattributesclass.yaml", "apiVersion: storage.k8s.io/v1\n",
     "apiVersion: storage.k8s.io/v1beta1\n", "is not storage.k8s.io/v1"),
    ("a VolumeAttributesClass of another driver", "volumeattributesclass.yaml", "driverName: localvol.io",
     "driverName: other.io", "driverName 'other.io'"),
    ("a number where a list belongs", "node-daemonset.yaml", "      volumes:\n", "      volumes: 7\n      x:\n",
     "malformed manifest"),
    ("a file missing from the kustomization", "kustomization.yaml", "  - csidriver.yaml\n", "",
     "csidriver.yaml is not listed"),
    ("a kustomization resource that is not there", "kustomization.yaml", "  - csidriver.yaml\n",
     "  - csidriver.yaml\n  - missing.yaml\n", "missing.yaml does not exist"),
    ("a missing provisioner flag", "node-daemonset.yaml", "            - --strict-topology\n", "",
     "lacks --strict-topology"),
    ("an extra provisioner flag", "node-daemonset.yaml", "            - --strict-topology\n",
     "            - --strict-topology\n            - --leader-election\n", "has --leader-election"),
    ("a wrong downward API field", "node-daemonset.yaml", "fieldPath: metadata.name\n", "fieldPath: metadata.uid\n",
     "env POD_NAME"),
    ("a csi-address off the socket", "node-daemonset.yaml", "--csi-address=/csi/csi.sock",
     "--csi-address=/csi/other.sock", "does not reach localvold's socket"),
    ("a csi-address on no mount", "node-daemonset.yaml", "--csi-address=/csi/csi.sock",
     "--csi-address=/run/csi.sock", "on no volumeMount"),
    ("the hostPath of the socket directory", "node-daemonset.yaml", "path: /var/lib/kubelet/plugins/localvol.io\n",
     "path: /var/lib/kubelet/plugins/localvol\n", "does not reach localvold's socket"),
    ("the kubelet registration path", "node-daemonset.yaml",
     "--kubelet-registration-path=/var/lib/kubelet/plugins/localvol.io/csi.sock",
     "--kubelet-registration-path=/var/lib/kubelet/plugins/other/csi.sock", "--kubelet-registration-path must be"),
    ("the registration directory", "node-daemonset.yaml", "path: /var/lib/kubelet/plugins_registry",
     "path: /var/lib/kubelet/plugins_registry2", "must mount the host's /var/lib/kubelet/plugins_registry"),
    ("an image tagged latest", "node-daemonset.yaml", "livenessprobe:v2.19.0", "livenessprobe:latest",
     "is not pinned"),
    ("an untagged image", "controller-deployment.yaml", "csi-resizer:v2.2.1", "csi-resizer", "is not pinned"),
    ("a volumeMount without volume", "node-daemonset.yaml", "- name: registration-dir\n              mountPath",
     "- name: registration-dirs\n              mountPath", "volumeMount registration-dirs has no volume"),
    ("a service account that is not defined", "node-daemonset.yaml", "serviceAccountName: localvol-node",
     "serviceAccountName: localvol-nodes", "serviceAccountName localvol-nodes is not"),
    ("a binding to an undefined role", "node-rbac.yaml", "  kind: ClusterRole\n  name: localvol-provisioner\n",
     "  kind: ClusterRole\n  name: localvol-provisioner-x\n", "roleRef ClusterRole localvol-provisioner-x"),
    ("a binding to an undefined account", "controller-rbac.yaml", "    name: localvol-resizer\n    namespace",
     "    name: localvol-resizerx\n    namespace", "ServiceAccount localvol/localvol-resizerx is not defined"),
    ("a missing capacity permission", "node-rbac.yaml", 'resources: ["csistoragecapacities"]',
     'resources: ["csistoragecapacity"]', "may not create csistoragecapacities"),
    ("a missing owner-reference permission", "node-rbac.yaml", 'resources: ["replicasets"]',
     'resources: ["deployments"]', "may not get replicasets"),
    ("a missing resizer permission", "controller-rbac.yaml", 'resources: ["persistentvolumeclaims/status"]',
     'resources: ["persistentvolumeclaims/finalizers"]', "may not patch persistentvolumeclaims/status"),
    ("the resizer on another socket", "controller-deployment.yaml", "- --csi-address=/csi/csi.sock",
     "- --csi-address=/csi/other.sock", "is not localvold's --csi-socket"),
    ("a namespace that is not defined", "node-rbac.yaml", "  name: localvol-node\n  namespace: localvol",
     "  name: localvol-node\n  namespace: storage", "namespace storage is not defined"),
    ("static discovery on the CSI nodes", "static-provisioner/daemonset.yaml", 'localvol.io/static: "true"',
     'localvol.io/storage: "true"', "nodeSelector must hold localvol.io/static"),
    ("a static class name", "static-provisioner/configmap.yaml", "    localvol-static:", "    localvol-statik:",
     "no StorageClass localvol-statik"),
    ("static discovery without propagation", "static-provisioner/daemonset.yaml",
     "mountPropagation: HostToContainer", "mountPropagation: None", "needs mountPropagation HostToContainer"),
    ("static discovery of another directory", "static-provisioner/configmap.yaml", "hostDir: /mnt/disks",
     "hostDir: /mnt/other", "hostDir /mnt/other"),
    ("a ConfigMap that is not defined", "static-provisioner/daemonset.yaml",
     "name: localvol-static-provisioner-config", "name: localvol-static-config", "ConfigMap localvol-static-config"),
    ("an example of an undefined class", "examples/pvc-pod.yaml", "storageClassName: localvol\n",
     "storageClassName: localvol-fast\n", "storageClassName localvol-fast"),
    ("docs without the topology key", DOCS, "topology.localvol.io/node", "topology.localvol.io/host",
     "does not mention topology.localvol.io/node"),
    ("docs without a parameter key", DOCS, "`writeBPSBurstSeconds`", "`writeBpsBurstSeconds`",
     "does not mention `writeBPSBurstSeconds`"),
]


def self_test(root, docs):
    failures = []
    base = validate(root, docs)
    if base:
        failures.append("the manifests themselves fail:\n  " + "\n  ".join(base))
    for name, target, old, new, expected in MUTATIONS:
        with tempfile.TemporaryDirectory(prefix="lvdeploy") as tmp:
            copy_root = pathlib.Path(tmp) / "kubernetes"
            shutil.copytree(root, copy_root)
            copy_docs = pathlib.Path(tmp) / "kubernetes.md"
            shutil.copyfile(docs, copy_docs)
            path = copy_docs if target == DOCS else copy_root / target
            text = path.read_text()
            if old not in text:
                failures.append(f"{name}: {target} no longer contains {old!r}; update the mutation")
                continue
            # The guide must lose every mention; a manifest changes in one place.
            path.write_text(text.replace(old, new) if target == DOCS else text.replace(old, new, 1))
            errors = validate(copy_root, copy_docs)
            if not any(expected in e for e in errors):
                failures.append(f"{name}: expected an error containing {expected!r}, got "
                                + ("; ".join(errors) or "none"))
    return failures


def main():
    here = pathlib.Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=here)
    parser.add_argument("--docs", type=pathlib.Path, default=here.parent.parent / "docs" / "kubernetes.md")
    args = parser.parse_args()
    failures = self_test(args.root, args.docs)
    for f in failures:
        print(f"validate_selftest.py: {f}", file=sys.stderr)
    print(f"validate_selftest.py: {len(MUTATIONS) - len(failures)} of {len(MUTATIONS)} breaks reported"
          + ("; FAILED" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
