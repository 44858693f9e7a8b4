{{/* Labels every object carries: the kustomize base's plus Helm's. Argument: (list $ "component-name"). */}}
{{- define "tokenscale.labels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/part-of: tokenscale
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/version: {{ $.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $.Chart.Name $.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- /* A reload refuses a change to config.scrape (it is fixed at start), so a pod reading it restarts when it changes. */ -}}
{{- define "tokenscale.scrapeChecksum" -}}
annotations:
  checksum/scrape: {{ toYaml .Values.config.scrape | sha256sum }}
{{- end }}

{{/* A component's image. Argument: (list $ .Values.adapter.image). */}}
{{- define "tokenscale.image" -}}
{{- $ := index . 0 -}}
{{- $img := index . 1 -}}
{{- printf "%s:%s" $img.repository (default (default $.Chart.AppVersion $.Values.image.tag) $img.tag) -}}
{{- end -}}

{{- define "tokenscale.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* The restricted pod and container security contexts of the kustomize manifests. */}}
{{- define "tokenscale.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "tokenscale.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end -}}

{{/* The cert-manager Certificate the APIServices' CA is injected from. */}}
{{- define "tokenscale.servingCert" -}}
{{ .Release.Namespace }}/tokenscale-adapter-serving
{{- end -}}

{{/* An APIService for the adapter. Argument: (list $ group version versionPriority). */}}
{{- define "tokenscale.apiservice" -}}
{{- $ := index . 0 -}}
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: {{ index . 2 }}.{{ index . 1 }}
  labels:
    {{- include "tokenscale.labels" (list $ "tokenscale-adapter") | nindent 4 }}
  {{- if eq $.Values.tls.mode "cert-manager" }}
  annotations:
    cert-manager.io/inject-ca-from: {{ include "tokenscale.servingCert" $ }}
  {{- end }}
spec:
  group: {{ index . 1 }}
  version: {{ index . 2 }}
  service: {name: tokenscale-adapter, namespace: {{ $.Release.Namespace }}, port: 443}
  {{- if eq $.Values.tls.mode "insecure" }}
  insecureSkipTLSVerify: true
  {{- end }}
  groupPriorityMinimum: 100
  versionPriority: {{ index . 3 }}
{{- end -}}


{{/* The Secret of scrapeTLS.secretName, mounted where scrape.tls can name its files (docs/metrics.md). */}}
{{- define "tokenscale.scrapeTLSMount" -}}
{{- if .Values.scrapeTLS.secretName }}
- {name: scrape-tls, mountPath: /etc/tokenscale-scrape-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "tokenscale.scrapeTLSVolume" -}}
{{- with .Values.scrapeTLS.secretName }}
- name: scrape-tls
  secret: {secretName: {{ . | quote }}}
{{- end }}
{{- end -}}

{{- /* A Go duration's length in seconds, or "invalid" where Go's time.ParseDuration would refuse it or it has
no unit (a bare 10 renders --lease=10, which the binary cannot parse). Argument: the value. */ -}}
{{- define "tokenscale.seconds" -}}
{{- $s := toString . -}}
{{- $part := "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|ms|s|m|h)" -}}
{{- if not (regexMatch (printf "^(%s)+$" $part) $s) -}}
invalid
{{- else -}}
{{- $unit := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll $part $s -1 -}}
{{- $n := regexFind "^[0-9.]+" . -}}
{{- $total = addf $total (mulf (float64 $n) (get $unit (trimPrefix $n .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
{{- end -}}

{{- /* "true" where the value is a whole number: written as one, or a number YAML read as a float (a values
file's 1000000 reaches the templates as 1e+06). Argument: the value. */ -}}
{{- define "tokenscale.whole" -}}
{{- if regexMatch "^-?[0-9]+$" (toString .) -}}
true
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}
