{{/*
The application's helpers (inference, Envoy, controller, config, network, tests). Names and labels
come from _helpers.tpl; the stores' env from _stores.tpl.
*/}}

{{/* "<fullname>-<component>"; pass (dict "root" $ "component" "inference"). */}}
{{- define "facematch.name" -}}
{{- printf "%s-%s" (include "facematch.fullname" .root) .component -}}
{{- end -}}

{{/* The facematch image; pass (dict "root" $ "gpu" true|false). The GPU tag only for the inference pods. */}}
{{- define "facematch.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := $img.tag | default .root.Chart.AppVersion -}}
{{- if .gpu -}}{{- $tag = $img.gpuTag | default (printf "%s-cuda" $tag) -}}{{- end -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}

{{/*
The inference pod's terminationGracePeriodSeconds: the service's drain and grace (SIGTERM), its close,
then Envoy's last drain (a native sidecar stops after the service). Rounded up to whole seconds.
*/}}
{{- define "facematch.inference.terminationGrace" -}}
{{- $v := .Values -}}
{{- if $v.inference.terminationGracePeriodSeconds -}}
{{- $v.inference.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $ms := add (int $v.config.shutdownDrainMs) (int $v.config.shutdownGraceMs) -}}
{{- add (div (add $ms 999) 1000) (int $v.inference.shutdownCloseSeconds) (int $v.envoy.drainSeconds) -}}
{{- end -}}
{{- end -}}

{{/* The host Envoy resolves for the replicas: the headless Service. */}}
{{- define "facematch.envoy.upstreamHost" -}}
{{- .Values.envoy.upstreamHost | default (include "facematch.name" (dict "root" . "component" "headless")) -}}
{{- end -}}

{{/*
files/envoy.yaml (a symlink to k8s/envoy/envoy.yaml: the one source) with its one cluster address
pointed at this release's headless Service. For a release named "facematch" the file is unchanged.
*/}}
{{- define "facematch.envoy.config" -}}
{{- $file := .Files.Get "files/envoy.yaml" -}}
{{- $from := "socket_address: { address: facematch-headless, port_value: 50051 }" -}}
{{- if ne 1 (len (regexFindAll (regexQuoteMeta $from) $file -1)) -}}
{{- fail (printf "files/envoy.yaml must name its upstream exactly once as %q (the chart rewrites that line)" $from) -}}
{{- end -}}
{{- $file | replace $from (printf "socket_address: { address: %s, port_value: 50051 }" (include "facematch.envoy.upstreamHost" .)) -}}
{{- end -}}

{{/* The controller's ServiceAccount. */}}
{{- define "facematch.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- .Values.controller.serviceAccount.name | default (include "facematch.name" (dict "root" . "component" "controller")) -}}
{{- else -}}
{{- .Values.controller.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The address the controller (and `helm test`) call: Envoy behind the chart's ClusterIP Service. */}}
{{- define "facematch.serviceAddress" -}}
{{- printf "%s:50050" (include "facematch.fullname" .) -}}
{{- end -}}

{{/* The Lease the controller replicas elect their leader with. */}}
{{- define "facematch.controller.leaseName" -}}
{{- .Values.controller.leaseName | default (include "facematch.name" (dict "root" . "component" "controller")) -}}
{{- end -}}
