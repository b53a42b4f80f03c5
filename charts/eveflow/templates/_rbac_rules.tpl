{{/*
RBAC rules: exactly the API calls the operator makes (tests/chart/test_rbac.py runs the operator
from this chart against the API emulator and compares its recorded requests with these rules).
*/}}

{{/* Rules in every namespace the operator manages (ClusterRole when cluster-wide, else Roles). */}}
{{- define "eveflow.rbac.namespacedRules" -}}
# EvePipelines: kopf lists and watches them and patches its finalizer and progress annotations;
# a worker Deployment's change reads its EvePipeline to update WorkerAvailable.
- apiGroups: [eveflow.dev]
  resources: [evepipelines]
  verbs: [get, list, watch, patch]
- apiGroups: [eveflow.dev]
  resources: [evepipelines/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion: that needs update on the owner's
# finalizers (OwnerReferencesPermissionEnforcement admission).
- apiGroups: [eveflow.dev]
  resources: [evepipelines/finalizers]
  verbs: [update]
# The worker's Deployment and ServiceAccount: read, then server-side apply (create on first apply).
# Deleted by the garbage collector with the EvePipeline, never by the operator. The worker
# Deployments (selected by label) are watched: their availability is the WorkerAvailable condition.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
# For kubernetes work pools, the worker's RoleBinding in the jobs' namespace (the pipeline's own,
# or one the cluster admin allowed); listed by label to find and delete those the spec no longer
# wants (pool type or jobs namespace changed, EvePipeline deleted).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, create, patch, delete]
# The bind/escalate-safe pattern: the worker's rules live in the chart's fixed ClusterRole
# <release>-eveflow-worker; the operator may bind that one ClusterRole and nothing else. It holds
# no Job or pod rights itself, and no Role writes at all.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ include "eveflow.workerClusterRoleName" . }}]
# Secrets, read by name only, for two reasons: (1) the Prefect credentials a pipeline names in
# spec.prefect.authStringSecretRef / apiKeySecretRef -- used only when the Secret carries the label
# or annotation eveflow.dev/prefect-credentials: "true" (or is the chart's own), and sent only over
# https or to an in-cluster Service; (2) that the destination Secret exists (metadata only). Never
# list or watch: Secret names are chosen by the pipeline's author, so no resourceNames can narrow it.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on the EvePipelines (posted, never read).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-scoped rules: kopf watches CRDs to learn when the EvePipeline CRD appears or changes;
the operator reads a jobs namespace's labels (jobs.eveflow.dev/<pipeline namespace>: "true" is a
cluster admin's consent to run that namespace's flow-run Jobs there). */}}
{{- define "eveflow.rbac.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
{{- end }}

{{/* The worker's rules: exactly operator/eveflow_operator/rbac.py WORKER_RULES (tests compare). A
Prefect kubernetes worker creates flow-run Jobs, follows their pods and logs, reads events. */}}
{{- define "eveflow.rbac.workerRules" -}}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch]
{{- end }}
