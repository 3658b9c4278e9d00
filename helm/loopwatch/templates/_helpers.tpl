{{/* The chart's name, for labels. */}}
{{- define "loopwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name. */}}
{{- define "loopwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The injector's Deployment, Service and Secret. */}}
{{- define "loopwatch.injector" -}}
{{- printf "%s-injector" (include "loopwatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loopwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "loopwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "loopwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loopwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The injector's pods: selected by the Deployment, the Service and the PDB. */}}
{{- define "loopwatch.injectorSelectorLabels" -}}
{{ include "loopwatch.selectorLabels" . }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "loopwatch.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create -}}
{{- default (include "loopwatch.injector" .) .Values.webhook.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference of the injector and of the sidecars it injects. */}}
{{- define "loopwatch.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the injector's tls.crt and tls.key. */}}
{{- define "loopwatch.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "manual" -}}
{{- .Values.webhook.tls.manual.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "loopwatch.injector" .) -}}
{{- end -}}
{{- end -}}

{{/* The names the injector's certificate must be valid for. */}}
{{- define "loopwatch.serviceDNSNames" -}}
{{- $svc := include "loopwatch.injector" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/*
Values that the schema cannot judge alone: each failure says what to set.
Included by every template that depends on them, so any render fails.
*/}}
{{- define "loopwatch.validate" -}}
{{- $tls := .Values.webhook.tls -}}
{{- if eq $tls.mode "manual" -}}
{{- if not $tls.manual.secretName -}}
{{- fail "webhook.tls.mode is manual: set webhook.tls.manual.secretName to an existing kubernetes.io/tls Secret in the release's namespace" -}}
{{- end -}}
{{- if not $tls.manual.caBundle -}}
{{- fail "webhook.tls.mode is manual: set webhook.tls.manual.caBundle to the base64 of the PEM CA that signed the Secret's certificate" -}}
{{- end -}}
{{- if not (contains "BEGIN CERTIFICATE" (b64dec $tls.manual.caBundle)) -}}
{{- fail "webhook.tls.manual.caBundle is not the base64 of a PEM certificate (base64 -w0 ca.crt)" -}}
{{- end -}}
{{- else -}}
{{- if or $tls.manual.secretName $tls.manual.caBundle -}}
{{- fail (printf "webhook.tls.manual.secretName and caBundle are used only with webhook.tls.mode=manual, and the mode is %s: set the mode to manual, or remove them" $tls.mode) -}}
{{- end -}}
{{- end -}}
{{- if and (ne $tls.mode "certManager") $tls.certManager.issuerRef.name -}}
{{- fail (printf "webhook.tls.certManager.issuerRef.name is used only with webhook.tls.mode=certManager, and the mode is %s: set the mode to certManager, or remove it" $tls.mode) -}}
{{- end -}}
{{- if and .Values.webhook.matchConditions (semverCompare "<1.28.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "webhook.matchConditions needs Kubernetes 1.28 or later, and this cluster is %s: remove them" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and .Values.sidecar.nativeSidecar (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.nativeSidecar needs Kubernetes 1.29 or later, and this cluster is %s: set sidecar.nativeSidecar=false to inject a plain container" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and .Values.webhook.podDisruptionBudget.enabled (ge (int .Values.webhook.podDisruptionBudget.minAvailable) (int .Values.webhook.replicas)) (gt (int .Values.webhook.replicas) 1) -}}
{{- fail (printf "webhook.podDisruptionBudget.minAvailable (%d) must be below webhook.replicas (%d), or no node could ever be drained" (int .Values.webhook.podDisruptionBudget.minAvailable) (int .Values.webhook.replicas)) -}}
{{- end -}}
{{- if and (eq .Values.webhook.failurePolicy "Fail") (lt (int .Values.webhook.replicas) 2) -}}
{{- fail "webhook.failurePolicy=Fail with one replica blocks every labelled pod's creation while that pod restarts: set webhook.replicas to 2 or more" -}}
{{- end -}}
{{- end -}}
