{{/* The chart's name, at most 63 characters. */}}
{{- define "novads.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of namespaced object names: the release name, with the chart name unless the
release name already contains it. */}}
{{- define "novads.fullname" -}}
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

{{- define "novads.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object; callers add app.kubernetes.io/component. */}}
{{- define "novads.labels" -}}
helm.sh/chart: {{ include "novads.chart" . }}
app.kubernetes.io/name: {{ include "novads.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: novads
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: `include "novads.selectorLabels" (list . "serve")`. */}}
{{- define "novads.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "novads.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of one component's objects: `include "novads.componentLabels" (list . "serve")`. */}}
{{- define "novads.componentLabels" -}}
{{ include "novads.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "novads.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod Security `restricted`: the pod's part. 65532 is the distroless image's nonroot user. */}}
{{- define "novads.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security `restricted`: each container's part, with a read-only root file system. */}}
{{- define "novads.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "novads.operatorName" -}}
{{- printf "%s-operator" (include "novads.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "novads.serveName" -}}
{{- printf "%s-serve" (include "novads.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the configuration file. */}}
{{- define "novads.configSecret" -}}
{{- default (printf "%s-config" (include "novads.serveName" .)) .Values.serve.config.existingSecret }}
{{- end }}

{{/* Where the key-encryption key and the database password are mounted. */}}
{{- define "novads.kekPath" -}}
/run/secrets/novads-kek/{{ .Values.keyEncryptionKey.key }}
{{- end }}
{{- define "novads.databasePasswordPath" -}}
/run/secrets/novads-database/{{ .Values.database.postgres.passwordKey }}
{{- end }}
{{- define "novads.sqliteDir" -}}
/var/lib/novads
{{- end }}

{{/* The configuration file the chart writes when no existing Secret is named. */}}
{{- define "novads.configFile" -}}
{{- $config := dict -}}
{{- $_ := set $config "server" (dict "listen" (printf "0.0.0.0:%d" (int .Values.serve.port)) "management_listen" (printf "0.0.0.0:%d" (int .Values.serve.managementPort)) "issuer" .Values.serve.issuer "shutdown_grace_seconds" (int .Values.serve.shutdownGraceSeconds) "key_encryption_key_file" (include "novads.kekPath" .)) -}}
{{- if eq .Values.database.type "postgres" }}
{{- /* The URL itself comes from NOVADS_DATABASE_URL (the Secret); this is its placeholder. */}}
{{- $_ := set $config "database" "postgres://from-NOVADS_DATABASE_URL/novads" -}}
{{- $_ := set $config "database_password_file" (include "novads.databasePasswordPath" .) -}}
{{- else }}
{{- $_ := set $config "database" (printf "sqlite://%s/novads.db" (include "novads.sqliteDir" .)) -}}
{{- end }}
{{- with .Values.serve.config }}
{{- if .realms }}{{ $_ := set $config "realms" .realms }}{{ end }}
{{- if .trusts }}{{ $_ := set $config "trusts" .trusts }}{{ end }}
{{- if .clients }}{{ $_ := set $config "clients" .clients }}{{ end }}
{{- if .lockout }}{{ $_ := set $config "lockout" .lockout }}{{ end }}
{{- if .audit }}{{ $_ := set $config "audit" .audit }}{{ end }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* NetworkPolicy egress to the cluster DNS. */}}
{{- define "novads.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - { protocol: UDP, port: 53 }
    - { protocol: TCP, port: 53 }
{{- end }}
{{/* NetworkPolicy egress to CIDRs and TCP ports: `include "novads.egressTo" .Values.networkPolicy.database`. */}}
{{- define "novads.egressTo" -}}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - { protocol: TCP, port: {{ . }} }
    {{- end }}
{{- end }}
