{{- define "order-service.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/part-of: shop
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "order-service.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
{{- end }}
