{{/* Names, labels and the pieces every service's pod shares. */}}

{{- define "switchboard.fullname" -}}
{{- if contains "switchboard" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-switchboard" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one service's objects: <fullname>-<service>. */}}
{{- define "switchboard.name" -}}
{{- printf "%s-%s" (include "switchboard.fullname" .root) .service | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: switchboard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end -}}

{{/* Selector labels of one service (dict "root" $ "service" name). */}}
{{- define "switchboard.selector" -}}
app.kubernetes.io/name: switchboard
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image of one service (dict "root" $ "service" name). */}}
{{- define "switchboard.image" -}}
{{- $image := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $image.tag -}}
{{- if $image.registry -}}
{{- printf "%s/%s/%s:%s" $image.registry $image.repository .service $tag -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.repository .service $tag -}}
{{- end -}}
{{- end -}}

{{/* One service's settings: serviceDefaults overridden by services.<name>. */}}
{{- define "switchboard.serviceValues" -}}
{{- $defaults := deepCopy .root.Values.serviceDefaults -}}
{{- $own := deepCopy (index .root.Values.services .service) -}}
{{- toYaml (mergeOverwrite $defaults $own) -}}
{{- end -}}

{{/* "true" when agentGroups asks for a file (teams, or labels by agent id), else "". */}}
{{- define "switchboard.agentGroupsSet" -}}
{{- if or .Values.agentGroups.groups .Values.agentGroups.byAgentId }}true{{ end -}}
{{- end -}}

{{/* agent-groups.yaml from agentGroups, as the services read it. A blank team name or an
agent in two teams fails the render (the services would refuse the file at start); the
schema refuses the reserved names, non-string ids and more than 100 teams. */}}
{{- define "switchboard.agentGroupsFile" -}}
{{- $seen := dict -}}
{{- range $team, $agents := .Values.agentGroups.groups -}}
{{- if not (trim $team) -}}
{{- fail "agentGroups.groups: a team name is blank" -}}
{{- end -}}
{{- range $agent := $agents -}}
{{- with index $seen $agent -}}
{{- fail (printf "agentGroups.groups: agent %q is in both %q and %q" $agent . $team) -}}
{{- end -}}
{{- $_ := set $seen $agent $team -}}
{{- end -}}
{{- end -}}
{{- dict "groups" .Values.agentGroups.groups "by_agent_id" .Values.agentGroups.byAgentId | toYaml -}}
{{- end -}}

{{/* Environment shared by every service and the topics Job: Kafka, MongoDB, logging. */}}
{{- define "switchboard.commonEnv" -}}
{{- $v := .Values -}}
- name: SWITCHBOARD_ENV
  value: {{ $v.environment | quote }}
- name: SWITCHBOARD_HTTP_HOST
  value: "0.0.0.0"
- name: SWITCHBOARD_LOG_FORMAT
  value: json
- name: SWITCHBOARD_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
- name: SWITCHBOARD_TOPIC_PREFIX
  value: {{ $v.kafka.topicPrefix | quote }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $v.kafka.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with SASL" $v.kafka.sasl.username | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /run/secrets/switchboard/kafka-sasl/{{ $v.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- if $v.kafka.tls.caSecret.name }}
- name: KAFKA_SSL_CAFILE
  value: /run/secrets/switchboard/kafka-ca/{{ $v.kafka.tls.caSecret.key }}
{{- end }}
{{- if $v.kafka.tls.clientCertSecret.name }}
- name: KAFKA_SSL_CERTFILE
  value: /run/secrets/switchboard/kafka-client/{{ $v.kafka.tls.clientCertSecret.certKey }}
- name: KAFKA_SSL_KEYFILE
  value: /run/secrets/switchboard/kafka-client/{{ $v.kafka.tls.clientCertSecret.keyKey }}
{{- end }}
{{- if $v.mongodb.urlSecret.name }}
- name: MONGODB_URL_FILE
  value: /run/secrets/switchboard/mongodb-url/{{ $v.mongodb.urlSecret.key }}
{{- else }}
- name: MONGODB_URL
  value: {{ $v.mongodb.url | quote }}
{{- end }}
- name: MONGODB_DATABASE
  value: {{ $v.mongodb.database | quote }}
{{- if $v.mongodb.tls.caSecret.name }}
- name: MONGODB_TLS_CA_FILE
  value: /run/secrets/switchboard/mongodb-ca/{{ $v.mongodb.tls.caSecret.key }}
{{- end }}
{{- if $v.mongodb.tls.clientCertSecret.name }}
- name: MONGODB_TLS_CERTIFICATE_KEY_FILE
  value: /run/secrets/switchboard/mongodb-client/{{ $v.mongodb.tls.clientCertSecret.key }}
{{- end }}
{{- end -}}

{{/* Secret volumes for Kafka and MongoDB credentials (only those configured). */}}
{{- define "switchboard.secretVolumes" -}}
{{- $v := .Values -}}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ required "kafka.sasl.passwordSecret.name is required with SASL" $v.kafka.sasl.passwordSecret.name }}
    items: [{key: {{ $v.kafka.sasl.passwordSecret.key | quote }}, path: {{ $v.kafka.sasl.passwordSecret.key | quote }}}]
{{- end }}
{{- if $v.kafka.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $v.kafka.tls.caSecret.name }}
    items: [{key: {{ $v.kafka.tls.caSecret.key | quote }}, path: {{ $v.kafka.tls.caSecret.key | quote }}}]
{{- end }}
{{- if $v.kafka.tls.clientCertSecret.name }}
- name: kafka-client
  secret:
    secretName: {{ $v.kafka.tls.clientCertSecret.name }}
{{- end }}
{{- if $v.mongodb.urlSecret.name }}
- name: mongodb-url
  secret:
    secretName: {{ $v.mongodb.urlSecret.name }}
    items: [{key: {{ $v.mongodb.urlSecret.key | quote }}, path: {{ $v.mongodb.urlSecret.key | quote }}}]
{{- end }}
{{- if $v.mongodb.tls.caSecret.name }}
- name: mongodb-ca
  secret:
    secretName: {{ $v.mongodb.tls.caSecret.name }}
    items: [{key: {{ $v.mongodb.tls.caSecret.key | quote }}, path: {{ $v.mongodb.tls.caSecret.key | quote }}}]
{{- end }}
{{- if $v.mongodb.tls.clientCertSecret.name }}
- name: mongodb-client
  secret:
    secretName: {{ $v.mongodb.tls.clientCertSecret.name }}
    items: [{key: {{ $v.mongodb.tls.clientCertSecret.key | quote }}, path: {{ $v.mongodb.tls.clientCertSecret.key | quote }}}]
{{- end }}
{{- end -}}

{{- define "switchboard.secretVolumeMounts" -}}
{{- $v := .Values -}}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
- {name: kafka-sasl, mountPath: /run/secrets/switchboard/kafka-sasl, readOnly: true}
{{- end }}
{{- if $v.kafka.tls.caSecret.name }}
- {name: kafka-ca, mountPath: /run/secrets/switchboard/kafka-ca, readOnly: true}
{{- end }}
{{- if $v.kafka.tls.clientCertSecret.name }}
- {name: kafka-client, mountPath: /run/secrets/switchboard/kafka-client, readOnly: true}
{{- end }}
{{- if $v.mongodb.urlSecret.name }}
- {name: mongodb-url, mountPath: /run/secrets/switchboard/mongodb-url, readOnly: true}
{{- end }}
{{- if $v.mongodb.tls.caSecret.name }}
- {name: mongodb-ca, mountPath: /run/secrets/switchboard/mongodb-ca, readOnly: true}
{{- end }}
{{- if $v.mongodb.tls.clientCertSecret.name }}
- {name: mongodb-client, mountPath: /run/secrets/switchboard/mongodb-client, readOnly: true}
{{- end }}
{{- end -}}

{{/* Pod and container security: serviceDefaults (non-root, read-only root filesystem, no
privileges), overridable per service; the topics Job uses the defaults. */}}
{{- define "switchboard.podSecurityContext" -}}
{{- toYaml .Values.serviceDefaults.podSecurityContext -}}
{{- end -}}

{{- define "switchboard.containerSecurityContext" -}}
{{- toYaml .Values.serviceDefaults.securityContext -}}
{{- end -}}

{{/* Egress a pod of the release needs (networkPolicy.egress): DNS, Kafka, then MongoDB
and networkPolicy.extraEgress when "services" is true (the topics Job needs neither).
(dict "root" $ "mongodb" bool "services" bool) */}}
{{- define "switchboard.egressRules" -}}
{{- $np := .root.Values.networkPolicy -}}
- to:
    {{- toYaml $np.egress.dns | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- $names := list "kafka" }}
{{- if .mongodb }}{{ $names = append $names "mongodb" }}{{ end }}
{{- range $name := $names }}
{{- $rule := index $np.egress $name }}
- ports:
    {{- range $rule.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with $rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .services }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}
