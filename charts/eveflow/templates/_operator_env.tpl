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
{{- if .apiUrl }}
- name: EVEFLOW_OPERATOR_PREFECT_API_URL
  value: {{ .apiUrl | quote }}
{{- end }}
# The Prefect client keeps its profile and cache under PREFECT_HOME; the root fs is read-only.
- name: PREFECT_HOME
  value: /tmp/prefect
{{- end }}
