{{/* Names. Every object is "<fullname>-<component>"; fullname is the release name unless overridden. */}}
{{- define "facematch.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels; pass a dict: (dict "root" $ "component" "inference") */}}
{{- define "facematch.labels" -}}
app.kubernetes.io/name: facematch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: facematch
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Selector labels (stable across upgrades); pass the same dict. */}}
{{- define "facematch.selectorLabels" -}}
app.kubernetes.io/name: facematch
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
