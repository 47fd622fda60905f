{{/*
The stores: names, Secrets, checks, and the environment the service and the controller get from them.
Each store is in the cluster (<store>.enabled) or external (<store>.external.*); credentials only ever
reach a container through secretKeyRef.
*/}}

{{/* "<fullname>-<component>"; pass (dict "root" $ "component" "minio"). */}}
{{- define "facematch.storeName" -}}
{{- printf "%s-%s" (include "facematch.fullname" .root) .component -}}
{{- end -}}

{{/* The Secret of the in-cluster PostgreSQL (made by the chart, or the user's). */}}
{{- define "facematch.postgresql.secretName" -}}
{{- .Values.postgresql.auth.existingSecret | default (include "facematch.storeName" (dict "root" . "component" "postgresql")) -}}
{{- end -}}

{{/* The Secret of the in-cluster MinIO (made by the chart, or the user's). */}}
{{- define "facematch.minio.secretName" -}}
{{- .Values.minio.auth.existingSecret | default (include "facematch.storeName" (dict "root" . "component" "minio")) -}}
{{- end -}}

{{/* Where Milvus keeps its segments: "minio" (the in-cluster MinIO) or "local" (its own volume). */}}
{{- define "facematch.milvus.objectStorage" -}}
{{- $choice := .Values.milvus.objectStorage | default "" -}}
{{- if eq $choice "local" -}}local
{{- else if eq $choice "minio" -}}
{{- if not .Values.minio.enabled -}}{{- fail "milvus.objectStorage=minio needs minio.enabled=true (or leave it \"\" for local storage)" -}}{{- end -}}minio
{{- else if eq $choice "" -}}{{ ternary "minio" "local" (.Values.minio.enabled | default false) }}
{{- else -}}{{- fail (printf "milvus.objectStorage must be \"\", \"minio\" or \"local\" (got %q)" $choice) -}}
{{- end -}}
{{- end -}}

{{/*
A random value for key .key of the chart-made Secret .name, generated once: an existing Secret's value
is read back (helm install/upgrade against a cluster), so upgrades keep it. Base64, ready for `data:`.
Pass (dict "root" $ "name" "x" "key" "password" "length" 32).
*/}}
{{- define "facematch.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Refuses value sets that would deploy a service with no store behind a port. */}}
{{- define "facematch.stores.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.postgresql.enabled) (not $v.postgresql.external.existingSecret) -}}
{{- fail "postgresql.enabled=false needs postgresql.external.existingSecret (a Secret holding the postgres:// URL)" -}}
{{- end -}}
{{- if not $v.minio.enabled -}}
{{- if not $v.minio.external.endpoint -}}{{- fail "minio.enabled=false needs minio.external.endpoint (http(s)://host[:port] of an S3)" -}}{{- end -}}
{{- if not (regexMatch "^https?://[^/?#@]+/?$" $v.minio.external.endpoint) -}}{{- fail (printf "minio.external.endpoint must be http(s)://host[:port] without a path or credentials (got %q)" $v.minio.external.endpoint) -}}{{- end -}}
{{- if not $v.minio.external.existingSecret -}}{{- fail "minio.enabled=false needs minio.external.existingSecret (a Secret holding the access key and the secret key)" -}}{{- end -}}
{{- end -}}
{{- if and (not $v.milvus.enabled) (not $v.milvus.external.address) -}}
{{- fail "milvus.enabled=false needs milvus.external.address (host:port or https://host:port of a Milvus or Zilliz Cloud)" -}}
{{- end -}}
{{- if not (has $v.jaeger.storage.type (list "memory" "badger")) -}}
{{- fail (printf "jaeger.storage.type must be memory or badger (got %q)" $v.jaeger.storage.type) -}}
{{- end -}}
{{- $_ := include "facematch.milvus.objectStorage" . -}}
{{- end -}}

{{/*
The stores' environment for the service container (a YAML list of env entries; the caller indents):
  {{- include "facematch.storesEnv" . | nindent 12 }}
Every store variable of the service comes from here, none from a ConfigMap. Order matters: PGPASSWORD
comes before FACEMATCH_POSTGRES_URL, which refers to it as $(PGPASSWORD).
*/}}
{{- define "facematch.storesEnv" -}}
{{- include "facematch.stores.validate" . -}}
{{- $v := .Values -}}
# vector store: Milvus
- name: FACEMATCH_VECTOR_STORE
  value: milvus
{{- if $v.milvus.enabled }}
- name: FACEMATCH_MILVUS_ADDRESS
  value: {{ printf "%s:19530" (include "facematch.storeName" (dict "root" . "component" "milvus")) | quote }}
{{- else }}
- name: FACEMATCH_MILVUS_ADDRESS
  value: {{ $v.milvus.external.address | quote }}
{{- if $v.milvus.external.existingSecret }}
- name: FACEMATCH_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.milvus.external.existingSecret | quote }}
      key: {{ $v.milvus.external.tokenKey | quote }}
{{- end }}
{{- end }}
# object store: S3
- name: FACEMATCH_OBJECT_STORE
  value: s3
{{- if $v.minio.enabled }}
- name: FACEMATCH_S3_ENDPOINT
  value: {{ printf "http://%s:9000" (include "facematch.storeName" (dict "root" . "component" "minio")) | quote }}
- name: FACEMATCH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "facematch.minio.secretName" . | quote }}
      key: {{ $v.minio.auth.accessKeyKey | quote }}
- name: FACEMATCH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "facematch.minio.secretName" . | quote }}
      key: {{ $v.minio.auth.secretKeyKey | quote }}
- name: FACEMATCH_S3_REGION
  value: {{ $v.minio.region | quote }}
- name: FACEMATCH_BUCKET
  value: {{ $v.minio.bucket | quote }}
{{- else }}
- name: FACEMATCH_S3_ENDPOINT
  value: {{ $v.minio.external.endpoint | quote }}
- name: FACEMATCH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.minio.external.existingSecret | quote }}
      key: {{ $v.minio.external.accessKeyKey | quote }}
- name: FACEMATCH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.minio.external.existingSecret | quote }}
      key: {{ $v.minio.external.secretKeyKey | quote }}
- name: FACEMATCH_S3_REGION
  value: {{ $v.minio.external.region | quote }}
- name: FACEMATCH_BUCKET
  value: {{ $v.minio.external.bucket | quote }}
{{- end }}
# match store: PostgreSQL
- name: FACEMATCH_MATCH_STORE
  value: postgres
{{- if $v.postgresql.enabled }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "facematch.postgresql.secretName" . | quote }}
      key: {{ $v.postgresql.auth.passwordKey | quote }}
- name: FACEMATCH_POSTGRES_URL
  value: {{ printf "postgres://%s:$(PGPASSWORD)@%s:5432/%s" $v.postgresql.username (include "facematch.storeName" (dict "root" . "component" "postgresql")) $v.postgresql.database | quote }}
{{- else }}
- name: FACEMATCH_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.postgresql.external.existingSecret | quote }}
      key: {{ $v.postgresql.external.urlKey | quote }}
{{- end }}
{{- with (include "facematch.otelEnv" .) }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
The trace export of the service and the controller (env entries; empty when traces go nowhere):
the in-cluster Jaeger's OTLP/HTTP port, or jaeger.external.
*/}}
{{- define "facematch.otelEnv" -}}
{{- $v := .Values -}}
{{- if $v.jaeger.enabled -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://%s:4318" (include "facematch.storeName" (dict "root" . "component" "jaeger")) | quote }}
{{- else if $v.jaeger.external.existingSecret -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  valueFrom:
    secretKeyRef:
      name: {{ $v.jaeger.external.existingSecret | quote }}
      key: {{ $v.jaeger.external.endpointKey | quote }}
{{- else if $v.jaeger.external.otlpEndpoint -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.jaeger.external.otlpEndpoint | quote }}
{{- end -}}
{{- end -}}

{{/* A store's PVC template spec; pass a persistence map (size, storageClass, accessModes). */}}
{{- define "facematch.pvcSpec" -}}
accessModes:
  {{- toYaml (.accessModes | default (list "ReadWriteOnce")) | nindent 2 }}
{{- if .storageClass }}
storageClassName: {{ .storageClass | quote }}
{{- end }}
resources:
  requests:
    storage: {{ .size | quote }}
{{- end -}}

{{/*
The securityContext of a store's container: storesSecurity.containerSecurityContext, with
readOnlyRootFilesystem as the store allows (a value the user set there wins). Pass (dict "root" $ "readOnly" true).
*/}}
{{- define "facematch.storeContainerSecurity" -}}
{{- toYaml (mergeOverwrite (dict "readOnlyRootFilesystem" .readOnly) (deepCopy .root.Values.storesSecurity.containerSecurityContext)) -}}
{{- end -}}

{{/*
The `from` peers of a store's NetworkPolicy: the pods of the given components of this release, then
storesNetworkPolicy.extraClients. Pass (dict "root" $ "components" (list "inference")).
*/}}
{{- define "facematch.storePeers" -}}
{{- $peers := list -}}
{{- range .components -}}
{{- $labels := include "facematch.selectorLabels" (dict "root" $.root "component" .) | fromYaml -}}
{{- $peers = append $peers (dict "podSelector" (dict "matchLabels" $labels)) -}}
{{- end -}}
{{- toYaml (concat $peers ($.root.Values.storesNetworkPolicy.extraClients | default list)) -}}
{{- end -}}
