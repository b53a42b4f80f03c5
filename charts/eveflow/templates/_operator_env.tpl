{{/*
The operator's environment. The EVEFLOW_OPERATOR_* names are the fields of
operator/eveflow_operator/settings.py (tests/chart checks each name against it).
Call with (dict "ctx" $ "secret" <Prefect Secret name or ""> "apiUrl" <default API URL or "">).
*/}}
{{- define "eveflow.operator.env" -}}
{{- $v := .ctx.Values }}
{{- $auth := $v.prefect.auth }}
- name: EVEFLOW_OPERATOR_NAMESPACES
  value: {{ join "," $v.operator.watchNamespaces | quote }}
- name: EVEFLOW_OPERATOR_RESYNC_PERIOD_SECONDS
  value: {{ $v.operator.resyncPeriodSeconds | quote }}
- name: EVEFLOW_OPERATOR_WORKER_IMAGE
  value: {{ default (include "eveflow.image" .ctx) $v.operator.workerImage | quote }}
- name: EVEFLOW_OPERATOR_METRICS_PORT
  value: {{ $v.operator.metricsPort | quote }}
- name: EVEFLOW_OPERATOR_LOG_LEVEL
  value: {{ $v.operator.logLevel | quote }}
{{- if .apiUrl }}
- name: EVEFLOW_OPERATOR_PREFECT_API_URL
  value: {{ .apiUrl | quote }}
{{- end }}
{{- if .secret }}
- name: EVEFLOW_OPERATOR_PREFECT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $auth.apiKeyKey }}
      optional: true
- name: EVEFLOW_OPERATOR_PREFECT_AUTH_STRING
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ $auth.authStringKey }}
      optional: true
{{- end }}
# The Prefect client keeps its profile and cache under PREFECT_HOME; the root fs is read-only.
- name: PREFECT_HOME
  value: /tmp/prefect
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
