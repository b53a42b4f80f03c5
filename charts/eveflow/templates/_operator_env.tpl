{{/*
The operator's environment. Every EVEFLOW_OPERATOR_* name is a field of
operator/eveflow_operator/settings.py (OperatorSettings); tests/chart checks each against it.
Call with (dict "ctx" $ "apiUrl" <default API URL or "">).
*/}}
{{- define "eveflow.operator.env" -}}
{{- $v := .ctx.Values -}}
- name: EVEFLOW_OPERATOR_NAMESPACES
  value: {{ join "," $v.operator.watchNamespaces | quote }}
- name: EVEFLOW_OPERATOR_RESYNC_SECONDS
  value: {{ $v.operator.resyncPeriodSeconds | quote }}
- name: EVEFLOW_OPERATOR_RESYNC_JITTER_SECONDS
  value: {{ $v.operator.resyncJitterSeconds | quote }}
- name: EVEFLOW_OPERATOR_PREFECT_TIMEOUT_SECONDS
  value: {{ $v.operator.prefectTimeoutSeconds | quote }}
- name: EVEFLOW_OPERATOR_WORKER_IMAGE
  value: {{ default (include "eveflow.image" .ctx) $v.operator.workerImage | quote }}
- name: EVEFLOW_OPERATOR_WORKER_IMAGE_PULL_POLICY
  value: {{ $v.image.pullPolicy | quote }}
- name: EVEFLOW_OPERATOR_METRICS_PORT
  value: {{ $v.operator.metricsPort | quote }}
- name: EVEFLOW_OPERATOR_HEALTH_PORT
  value: {{ $v.operator.healthPort | quote }}
# The tenant boundary (docs/operations.md, "Running eveflow for several teams").
- name: EVEFLOW_OPERATOR_WORKER_CLUSTER_ROLE
  value: {{ include "eveflow.workerClusterRoleName" .ctx | quote }}
- name: EVEFLOW_OPERATOR_ALLOWED_JOBS_NAMESPACES
  value: {{ join "," $v.operator.allowedJobsNamespaces | quote }}
- name: EVEFLOW_OPERATOR_ALLOWED_IMAGE_REGISTRIES
  value: {{ join "," $v.operator.allowedImageRegistries | quote }}
- name: EVEFLOW_OPERATOR_ALLOW_PLAIN_HTTP_CREDENTIALS
  value: {{ $v.operator.allowPlainHttpCredentials | quote }}
{{- with include "eveflow.prefectSecretName" .ctx }}
- name: EVEFLOW_OPERATOR_PREFECT_CREDENTIALS_SECRET
  value: {{ printf "%s/%s" $.ctx.Release.Namespace . | quote }}
{{- end }}
{{- if .apiUrl }}
- name: EVEFLOW_OPERATOR_PREFECT_API_URL
  value: {{ .apiUrl | quote }}
{{- end }}
# The Prefect client keeps its profile and cache under PREFECT_HOME; the root fs is read-only.
- name: PREFECT_HOME
  value: /tmp/prefect
{{- end }}
