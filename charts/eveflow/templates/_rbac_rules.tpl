{{/*
RBAC rules, derived from what the operator calls (tests/chart/test_rbac.py compares them with the
API requests the operator makes against the API emulator).
*/}}

{{/* Rules in every namespace the operator manages (ClusterRole when cluster-wide, else Roles). */}}
{{- define "eveflow.rbac.namespacedRules" -}}
# EvePipelines: watch them, add/remove the finalizer and kopf's progress annotations.
- apiGroups: [eveflow.dev]
  resources: [evepipelines]
  verbs: [get, list, watch, patch]
- apiGroups: [eveflow.dev]
  resources: [evepipelines/status]
  verbs: [get, patch]
# Children set ownerReferences with blockOwnerDeletion: that needs update on the owner's finalizers.
- apiGroups: [eveflow.dev]
  resources: [evepipelines/finalizers]
  verbs: [update]
# The worker's Deployment and ServiceAccount, and for kubernetes pools its Role + RoleBinding.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# Prefect credentials referenced by spec.prefect.*SecretRef (read only, by name).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on the EvePipelines (kopf and the operator); read verbs are granted on to the worker.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, get, list, watch]
# RBAC escalation rule: the operator can only create a Role granting what it holds itself.
# These are exactly the rules of the worker Role it creates for kubernetes work pools
# (operator/eveflow_operator/rbac.py WORKER_RULES; the events rule is merged above).
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

{{/* Cluster-scoped rules kopf needs to discover resources. */}}
{{- define "eveflow.rbac.clusterRules" -}}
# kopf watches CRDs to learn when the EvePipeline CRD appears or changes.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if not .Values.operator.watchNamespaces }}
# Cluster-wide mode: kopf follows namespaces as they come and go.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
