{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "eveflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "eveflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "eveflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The app.kubernetes.io/* labels every object carries. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "eveflow.labels" -}}
helm.sh/chart: {{ include "eveflow.chart" .ctx }}
{{ include "eveflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: eveflow
{{- end }}

{{/* The labels Deployments select on (immutable after install). */}}
{{- define "eveflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eveflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "eveflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "eveflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The eveflow image; the tag defaults to the chart's appVersion, a digest wins over the tag. */}}
{{- define "eveflow.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "eveflow.prefectServer.image" -}}
{{- $img := .Values.prefectServer.image }}
{{- if $img.repository }}
{{- printf "%s:%s" $img.repository (required "prefectServer.image.tag is required when prefectServer.image.repository is set" $img.tag) }}
{{- else }}
{{- include "eveflow.image" . }}
{{- end }}
{{- end }}

{{- define "eveflow.prefectServer.fullname" -}}
{{- printf "%s-prefect-server" (include "eveflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret with the Prefect credentials, or "" when there is none. */}}
{{- define "eveflow.prefectSecretName" -}}
{{- $auth := .Values.prefect.auth }}
{{- if and $auth.existingSecret (or $auth.apiKey $auth.authString) }}
{{- fail "prefect.auth: set either existingSecret or apiKey/authString, not both (the chart only creates a Secret when existingSecret is empty)" }}
{{- end }}
{{- if $auth.existingSecret }}
{{- $auth.existingSecret }}
{{- else if or $auth.apiKey $auth.authString (include "eveflow.prefectServer.generatesAuth" .) }}
{{- printf "%s-prefect" (include "eveflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "true" when the chart generates the bundled server's auth string (none given in prefect.auth). */}}
{{- define "eveflow.prefectServer.generatesAuth" -}}
{{- $auth := .Values.prefect.auth }}
{{- if and .Values.prefectServer.enabled (eq .Values.prefectServer.auth "enabled") (not $auth.existingSecret) (not $auth.authString) -}}
true
{{- end }}
{{- end }}

{{/* The operator's default Prefect API URL: prefect.apiUrl, else the bundled server's. */}}
{{- define "eveflow.prefectApiUrl" -}}
{{- if .Values.prefect.apiUrl }}
{{- .Values.prefect.apiUrl }}
{{- else if .Values.prefectServer.enabled }}
{{- printf "http://%s.%s.svc:%d/api" (include "eveflow.prefectServer.fullname" .) .Release.Namespace (int .Values.prefectServer.service.port) }}
{{- end }}
{{- end }}

{{/* The fixed ClusterRole holding the worker's rules; the operator binds it per jobs namespace. */}}
{{- define "eveflow.workerClusterRoleName" -}}
{{- printf "%s-worker" (include "eveflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
