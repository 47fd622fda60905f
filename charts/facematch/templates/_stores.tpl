{{/*
The stores' environment for the service container (a YAML list of env entries; the caller indents).
Owned by the stores' templates: in-cluster or external, credentials always through secretKeyRef.
*/}}
{{- define "facematch.storesEnv" -}}
{{- end -}}
