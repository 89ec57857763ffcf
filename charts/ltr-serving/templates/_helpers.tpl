{{/* Names and labels shared by every template of the chart. */}}
{{- define "ltr-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ltr-serving.fullname" -}}
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

{{/* What the Service, the PodDisruptionBudget and the ServiceMonitor select: stable and canary pods alike. */}}
{{- define "ltr-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ltr-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ltr-serving.labels" -}}
{{ include "ltr-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ltr-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ltr-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Args: (list $root $image). */}}
{{- define "ltr-serving.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $root.Values.image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $root.Values.image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; each fails the render with the fix.
*/}}
{{- define "ltr-serving.validate" -}}
{{- range $where, $tag := dict "image.tag" .Values.image.tag "canary.image.tag" .Values.canary.image.tag }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s is \"latest\": pin a version or set a digest, so that every pod runs the same image" $where) }}
{{- end }}
{{- end }}
{{- if hasSuffix ":latest" .Values.modelStore.initContainer.image }}
{{- fail (printf "modelStore.initContainer.image (%s) is tagged latest: pin a version or a digest" .Values.modelStore.initContainer.image) }}
{{- end }}
{{- $s := .Values.secrets }}
{{- if and $s.eventsRedisUrlKey (eq $s.eventsRedisUrlKey $s.redisUrlKey) }}
{{- fail (printf "secrets.eventsRedisUrlKey (%q) names the same key as secrets.redisUrlKey: give the cache and event streams a Redis of their own, or leave eventsRedisUrlKey empty to share the feature store's" $s.eventsRedisUrlKey) }}
{{- end }}
{{- if and $s.cacheRedisUrlKey (eq $s.cacheRedisUrlKey $s.redisUrlKey) }}
{{- fail (printf "secrets.cacheRedisUrlKey (%q) names the same key as secrets.redisUrlKey: give the result cache a Redis of its own, or leave cacheRedisUrlKey empty" $s.cacheRedisUrlKey) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if ge (int .Values.lifecycle.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "lifecycle.preStopSleepSeconds (%d) must be below terminationGracePeriodSeconds (%d): the pod needs time to finish its requests after the sleep" (int .Values.lifecycle.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds)) }}
{{- end }}
{{- end }}

{{/*
The pod template of a Deployment. Args: dict with root (the chart's context), track
("stable" or "canary"), image (an object with tag and digest) and env (extra variables).
*/}}
{{- define "ltr-serving.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $routingFromConfigMap := $v.routing.configMap.enabled }}
metadata:
  labels:
    {{- include "ltr-serving.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/track: {{ .track }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "ltr-serving.serviceAccountName" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $v.topologySpread.constraints }}
    - topologyKey: {{ .topologyKey }}
      maxSkew: {{ .maxSkew }}
      whenUnsatisfiable: {{ .whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "ltr-serving.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/track: {{ $.track }}
      matchLabelKeys:
        - pod-template-hash
    {{- end }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.modelStore.initContainer.enabled }}
  initContainers:
    - name: model-store
      image: {{ $v.modelStore.initContainer.image | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command:
        {{- toYaml $v.modelStore.initContainer.command | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      resources:
        {{- toYaml $v.modelStore.initContainer.resources | nindent 8 }}
      volumeMounts:
        - name: model-store
          mountPath: {{ $v.modelStore.mountPath | quote }}
  {{- end }}
  containers:
    - name: {{ $root.Chart.Name }}
      image: {{ include "ltr-serving.image" (list $root .image) | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ $v.containerPort }}
          protocol: TCP
      env:
        - name: LTR_API_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $v.secrets.existingSecret | quote }}
              key: {{ $v.secrets.apiKeyKey | quote }}
        - name: LTR_REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ $v.secrets.existingSecret | quote }}
              key: {{ $v.secrets.redisUrlKey | quote }}
        - name: LTR_REQUEST_ID_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ $v.secrets.existingSecret | quote }}
              key: {{ $v.secrets.requestIdSecretKey | quote }}
        {{- if $v.secrets.eventsRedisUrlKey }}
        - name: LTR_EVENTS_REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ $v.secrets.existingSecret | quote }}
              key: {{ $v.secrets.eventsRedisUrlKey | quote }}
        {{- end }}
        {{- $cacheKey := default $v.secrets.eventsRedisUrlKey $v.secrets.cacheRedisUrlKey }}
        {{- if $cacheKey }}
        - name: LTR_CACHE_REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ $v.secrets.existingSecret | quote }}
              key: {{ $cacheKey | quote }}
        {{- end }}
        - name: LTR_MODEL_STORE
          value: {{ $v.modelStore.mountPath | quote }}
        {{- with $v.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet:
          path: {{ $v.startupProbe.path }}
          port: http
        periodSeconds: {{ $v.startupProbe.periodSeconds }}
        timeoutSeconds: {{ $v.startupProbe.timeoutSeconds }}
        failureThreshold: {{ $v.startupProbe.failureThreshold }}
      readinessProbe:
        httpGet:
          path: {{ $v.readinessProbe.path }}
          port: http
        periodSeconds: {{ $v.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ $v.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ $v.readinessProbe.failureThreshold }}
      livenessProbe:
        httpGet:
          path: {{ $v.livenessProbe.path }}
          port: http
        periodSeconds: {{ $v.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ $v.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ $v.livenessProbe.failureThreshold }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $v.lifecycle.preStopSleepSeconds }}
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $routingFromConfigMap }}
        - name: routing
          mountPath: {{ $v.modelStore.mountPath | quote }}
          readOnly: true
        - name: model-store
          mountPath: {{ printf "%s/versions" $v.modelStore.mountPath | quote }}
          subPath: versions
          readOnly: {{ $v.modelStore.readOnly }}
        {{- else }}
        - name: model-store
          mountPath: {{ $v.modelStore.mountPath | quote }}
          readOnly: {{ $v.modelStore.readOnly }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpSizeLimit }}
    - name: model-store
      {{- if $v.modelStore.initContainer.enabled }}
      emptyDir:
        sizeLimit: {{ $v.modelStore.initContainer.sizeLimit }}
      {{- else }}
      persistentVolumeClaim:
        claimName: {{ $v.modelStore.existingClaim | quote }}
        readOnly: {{ $v.modelStore.readOnly }}
      {{- end }}
    {{- if $routingFromConfigMap }}
    - name: routing
      configMap:
        name: {{ printf "%s-routing" (include "ltr-serving.fullname" $root) }}
    {{- end }}
{{- end }}
