"""A Kubernetes API emulator served over real HTTP, for kopf, kubectl, the kubernetes client and
helm in tests (no cluster, no kube-apiserver binary here).

    from tests.harness.kube_emulator import EmulatorThread, write_kubeconfig
    emu = EmulatorThread(); url = emu.start(); write_kubeconfig(url, "kubeconfig")

or as a process: `python -m tests.harness.kube_emulator --port 8001 --kubeconfig-out kc.yaml`.
Admin endpoints for tests: GET/DELETE /_emulator/requests, GET /_emulator/objects,
GET /_emulator/state, PUT /_emulator/config (`{"mark_deployments_available": false}`).

Not emulated: authn/authz (RBAC objects are stored, never enforced -- use the request record),
admission webhooks, aggregated discovery and OpenAPI schemas (/openapi/v3 only advertises
`fieldValidation`), field ownership/conflicts in server-side apply (approximated as merge plus
removal of fields the same manager dropped), exact strategic merge (keyed lists by a built-in
table), CRD conversion (all versions share one store), foreground deletion (treated as
background), pods/jobs lifecycles (only Deployments/StatefulSets/ReplicaSets become ready, Services
get a ClusterIP), protobuf bodies beyond Secret/ConfigMap/Namespace/ServiceAccount/DeleteOptions
(so `kubectl create deployment|job` fail; `kubectl apply -f` works), Kubernetes-only CEL functions.
"""

from .runner import EmulatorThread, kubeconfig, write_kubeconfig
from .server import Emulator

__all__ = ["Emulator", "EmulatorThread", "kubeconfig", "write_kubeconfig"]
