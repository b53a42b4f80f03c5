{{/*
RBAC rules: exactly the API calls the operator makes (tests/chart/test_rbac.py runs the operator
from this chart as its ServiceAccount on a real kube-apiserver and compares the audit log with these rules).
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
# For kubernetes work pools, the worker's Role + RoleBinding in the jobs' namespace; listed by
# label to find and delete those the spec no longer wants (pool type or jobs namespace changed,
# EvePipeline deleted).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, create, patch, delete]
# Prefect credentials and the destination Secret named in the spec (read by name only).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on the EvePipelines; the read verbs are the worker Role's (see below).
- apiGroups: [""]
  resources: [events]
  verbs: [create, get, list, watch]
# RBAC escalation prevention: the operator may only create a Role granting what it holds itself.
# These are exactly the rules of the worker Role (operator/eveflow_operator/rbac.py WORKER_RULES).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get, list, watch]
{{- end }}

{{/* Cluster-scoped rules: kopf watches CRDs to learn when the EvePipeline CRD appears or changes. */}}
{{- define "eveflow.rbac.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
