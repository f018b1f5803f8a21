"""What the fleet's third-party readers accept: the endpoint picker's flags and plugin config, KEDA's trigger.

Copied by hand from their source at the versions the manifests name, each table with the file it comes
from, since neither ships a schema for these parts: llm-d-router v0.10.0 (the endpoint picker, which
decodes its config strictly, an unknown key stopping it) and KEDA v2.20.2 (the prometheus scaler, which
reads `metadata` by key). A new version of either means reading those files again.
"""

from __future__ import annotations

import re


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# pkg/epp/server/options.go, Options.AddFlags: the picker's own flags (logging flags left out).
EPP_FLAGS = _names(
    """
    grpc-port ha-enable-leader-election drain-timeout grpc-max-recv-msg-size grpc-max-send-msg-size
    pool-group pool-namespace pool-name endpoint-selector endpoint-target-ports
    disable-endpoint-subset-filter emit-endpoint-scores refresh-metrics-interval
    refresh-prometheus-metrics-interval metrics-staleness-threshold total-queued-requests-metric
    total-running-requests-metric kv-cache-usage-percentage-metric lora-info-metric cache-info-metric
    tracing health-checking metrics-port grpc-health-port enable-pprof cert-path enable-cert-reload
    enable-grpc-stream-metrics secure-serving tls-min-version tls-cipher-suites metrics-endpoint-auth
    metrics-client-ca-file metrics-cert-dir config-file config-text allow-experimental-plugins
    """
)
# Same file, deprecatedMetricFlags: Options.Validate refuses each of these when it is set at all.
EPP_REFUSED_FLAGS = _names(
    """
    total-queued-requests-metric total-running-requests-metric kv-cache-usage-percentage-metric
    lora-info-metric cache-info-metric
    """
)
EPP_DEFAULT_GRPC_PORT = 9002  # same file, DefaultGrpcPort

# apix/config/v1alpha1/endpointpickerconfig_types.go: EndpointPickerConfig and the types it holds.
EPP_CONFIG_API_VERSION = "llm-d.ai/v1alpha1"
EPP_CONFIG_FIELDS = _names(
    """
    apiVersion kind featureGates plugins schedulingProfiles dataLayer flowControl requestHandler
    saturationDetector parser
    """
)
PLUGIN_SPEC_FIELDS = frozenset({"name", "type", "parameters"})
SCHEDULING_PROFILE_FIELDS = frozenset({"name", "plugins"})
SCHEDULING_PLUGIN_FIELDS = frozenset({"pluginRef", "weight"})
DATA_LAYER_FIELDS = frozenset(
    {"injectDefaults", "sources", "discovery", "crossReplicaSyncerPluginRef", "crossReplicaSyncInterval"}
)
DATA_LAYER_SOURCE_FIELDS = frozenset({"pluginRef", "extractors"})
DATA_LAYER_EXTRACTOR_FIELDS = frozenset({"pluginRef"})

# Plugin types registered in cmd/epp/runner/runner.go, with the parameters each factory decodes (the json
# tags of its parameter struct); None: the factory reads no parameters.
PLUGIN_PARAMETERS: dict[str, frozenset[str] | None] = {
    # pkg/epp/framework/plugins/datalayer/source/metrics/datasource.go, metricsDatasourceParams
    "metrics-data-source": _names(
        "scheme path port insecureSkipVerify caCertPath clientCertPath clientKeyPath interval"
    ),
    # pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go, modelServerExtractorParams
    "core-metrics-extractor": frozenset({"engineLabelKey", "defaultEngine", "engineConfigs"}),
    # pkg/epp/framework/plugins/scheduling/scorer/{queuedepth,kvcacheutilization,loraaffinity}
    "queue-scorer": None,
    "kv-cache-utilization-scorer": None,
    "lora-affinity-scorer": None,
    "running-requests-size-scorer": None,
    # pkg/epp/framework/plugins/scheduling/scorer/prefix/plugin.go, Config
    "prefix-cache-scorer": _names("prefixMatchInfoProducerName matchLengthWeight matchLengthScaleTokens"),
    # pkg/epp/framework/plugins/scheduling/picker/common.go (every picker), profilehandler/single
    "max-score-picker": frozenset({"maxNumOfEndpoints"}),
    "single-profile-handler": None,
}
# factories.go, engineConfigParams: one engine's metric names.
ENGINE_CONFIG_FIELDS = _names(
    """
    name queuedRequestsSpec runningRequestsSpec kvUsageSpec loraSpec cacheInfoSpec
    cacheBlockSizeLabelName cacheNumBlocksLabelName cacheBlockSizeSpec cacheNumBlocksSpec customMetrics
    """
)
# factories.go: engine names built in (a config of the same name replaces them); mapping_registry.go: the
# name no engine config may take.
BUILTIN_ENGINES = frozenset({"vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm", "triton"})
RESERVED_ENGINE = "default"
# spec.go, parseStringToSpec: `name` or `name{label=value,...}`.
METRIC_SPEC = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{([^}]*)\})?\s*$")

# KEDA pkg/scalers/prometheus_scaler.go, prometheusMetadata: the trigger's metadata keys.
KEDA_PROMETHEUS_KEYS = _names(
    """
    serverAddress query queryParameters threshold activationThreshold namespace customHeaders
    ignoreNullValues unsafeSsl awsRegion timeout identityOwner
    """
)
KEDA_PROMETHEUS_REQUIRED = frozenset({"serverAddress", "query", "threshold"})
