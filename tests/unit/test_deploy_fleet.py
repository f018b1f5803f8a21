"""deploy/kubernetes/fleet: router and autoscaler manifests are valid, fit the replicas, read real metrics.

As in test_deploy_kubernetes.py: built-in kinds are checked against kubernetes-validate's schemas in strict
mode, and the two CRDs (InferencePool, ScaledObject) against their projects' own openAPIV3Schema, vendored
in tests/unit/schemas/ and made strict. The endpoint picker's config and flags and KEDA's trigger metadata
have no schema: they are checked against tables read off their source (tests/fleet_accepts.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests import deploy_files
from tests import fleet_accepts as accepts
from tests.unit import test_deploy_kubernetes as base
from tests.unit import test_deploy_prometheus as prom

FLEET = base.DEPLOY / "fleet"
AUTOSCALERS = ("keda", "hpa")
SCHEMAS = Path(__file__).parent / "schemas"
NOT_MANIFESTS = {"kustomization.yaml", "prometheus-adapter-values.yaml"}
CRDS = {
    "InferencePool": ("inference.networking.k8s.io_inferencepools.yaml", "inference.networking.k8s.io/v1"),
    "ScaledObject": ("keda.sh_scaledobjects.yaml", "keda.sh/v1alpha1"),
}

Doc = base.Doc


def manifests(folder: Path) -> list[tuple[str, Doc]]:
    return [
        (f"{folder.name}/{path.name}", doc)
        for path in sorted(folder.glob("*.yaml"))
        if path.name not in NOT_MANIFESTS
        for doc in base.load_docs(path)
    ]


ALL = [item for folder in (FLEET, *(FLEET / a for a in AUTOSCALERS)) for item in manifests(folder)]


def only(kind: str, name: str | None = None) -> Doc:
    found = [d for _, d in ALL if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    file, api_version = CRDS[kind]
    (crd,) = base.load_docs(SCHEMAS / file)
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert served["served"]
    return jsonschema.Draft202012Validator(base.strict(served["schema"]["openAPIV3Schema"]))


def validate_custom(doc: Doc) -> None:
    assert doc["apiVersion"] == CRDS[doc["kind"]][1]
    crd_validator(doc["kind"]).validate(doc)
    base.validate_builtin({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})


def test_the_manifests_are_all_there() -> None:
    kinds = {name.split("/")[0]: set() for name, _ in ALL}
    for name, doc in ALL:
        kinds[name.split("/")[0]].add(doc["kind"])
    assert kinds == {
        "fleet": {
            "InferencePool",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
        },
        "keda": {"ScaledObject"},
        "hpa": {"HorizontalPodAutoscaler"},
    }


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in ALL if doc["kind"] not in CRDS],
    ids=[name for name, doc in ALL if doc["kind"] not in CRDS],
)
def test_builtin_manifest_matches_the_kubernetes_schema(doc: Doc) -> None:
    base.validate_builtin(doc)


@pytest.mark.parametrize("kind", CRDS)
def test_custom_resource_matches_its_projects_crd(kind: str) -> None:
    validate_custom(only(kind))


BROKEN: dict[str, tuple[str, Callable[[Doc], None]]] = {
    "pool: misspelt field": (
        "InferencePool",
        lambda d: d["spec"].update(targetPort=d["spec"].pop("targetPorts")),
    ),
    "pool: port as a string": ("InferencePool", lambda d: d["spec"]["targetPorts"][0].update(number="8000")),
    "pool: no selector": ("InferencePool", lambda d: d["spec"].pop("selector")),
    "pool: unknown failure mode": (
        "InferencePool",
        lambda d: d["spec"]["endpointPickerRef"].update(failureMode="x"),
    ),
    "keda: misspelt field": (
        "ScaledObject",
        lambda d: d["spec"].update(maxReplicas=d["spec"].pop("maxReplicaCount")),
    ),
    "keda: trigger without type": ("ScaledObject", lambda d: d["spec"]["triggers"][0].pop("type")),
    "keda: number in metadata": (
        "ScaledObject",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(threshold=24),
    ),
    "keda: utilisation formula": (
        "ScaledObject",
        lambda d: d["spec"]["advanced"]["scalingModifiers"].update(metricType="Utilization"),
    ),
}


@pytest.mark.parametrize(("kind", "breakage"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_custom_resource_fails_validation(kind: str, breakage: Callable[[Doc], None]) -> None:
    doc = copy.deepcopy(only(kind))
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(doc)


def test_pool_meets_the_crds_cel_rules() -> None:
    # x-kubernetes-validations, which jsonschema does not run: written out from the CRD.
    spec = only("InferencePool")["spec"]
    ref = spec["endpointPickerRef"]
    assert ref.get("kind", "Service") != "Service" or "port" in ref
    numbers = [port["number"] for port in spec["targetPorts"]]
    assert len(numbers) == len(set(numbers))


def test_each_kustomization_applies_its_folders_manifests_and_no_other() -> None:
    for folder in (FLEET, *(FLEET / a for a in AUTOSCALERS)):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kustomization["kind"] == "Kustomization"
        assert sorted(kustomization["resources"]) == sorted(
            p.name for p in folder.glob("*.yaml") if p.name not in NOT_MANIFESTS
        )


# --- the router --------------------------------------------------------------------------------------


def wattserve_pod() -> Doc:
    return base.only("Deployment")["spec"]["template"]


def epp_container() -> Doc:
    (container,) = only("Deployment", "wattserve-epp")["spec"]["template"]["spec"]["containers"]
    return container


def epp_flags() -> dict[str, str]:
    args = epp_container()["args"]
    assert all(re.fullmatch(r"--[a-z-]+=.+", arg) for arg in args), "write each flag as --name=value"
    return dict(arg[2:].split("=", 1) for arg in args)


def epp_config() -> Doc:
    return yaml.safe_load(only("ConfigMap", "wattserve-epp")["data"]["epp-config.yaml"])


def test_pool_selects_the_wattserve_pods_on_their_port() -> None:
    spec = only("InferencePool")["spec"]
    assert spec["selector"]["matchLabels"].items() <= wattserve_pod()["metadata"]["labels"].items()
    (container,) = wattserve_pod()["spec"]["containers"]
    assert [p["number"] for p in spec["targetPorts"]] == [p["containerPort"] for p in container["ports"]]


def test_pool_and_picker_name_each_other() -> None:
    pool = only("InferencePool")
    ref = pool["spec"]["endpointPickerRef"]
    service = only("Service", ref["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]["number"]]
    container_ports = {p["name"]: p["containerPort"] for p in epp_container()["ports"]}
    flags = epp_flags()
    assert container_ports[port["targetPort"]] == int(flags.get("grpc-port", accepts.EPP_DEFAULT_GRPC_PORT))
    picker = only("Deployment", "wattserve-epp")
    assert service["spec"]["selector"].items() <= picker["spec"]["template"]["metadata"]["labels"].items()
    assert flags["pool-name"] == pool["metadata"]["name"]
    assert flags["pool-group"] == pool["apiVersion"].split("/")[0]


def test_picker_flags_exist_and_none_is_refused() -> None:
    flags = set(epp_flags())
    assert flags <= accepts.EPP_FLAGS
    # The metric-name flags stop the picker at start in v0.10.0: the mapping lives in its config.
    assert not flags & accepts.EPP_REFUSED_FLAGS


def test_picker_reads_its_config_from_the_configmap() -> None:
    path = Path(epp_flags()["config-file"])
    (mount,) = [m for m in epp_container()["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    volumes = only("Deployment", "wattserve-epp")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "wattserve-epp"
    assert path.name in only("ConfigMap", "wattserve-epp")["data"]


def test_picker_may_read_what_it_watches() -> None:
    binding = only("RoleBinding")
    role = only("Role", binding["roleRef"]["name"])
    (subject,) = binding["subjects"]
    pod_spec = only("Deployment", "wattserve-epp")["spec"]["template"]["spec"]
    assert subject["name"] == pod_spec["serviceAccountName"] == only("ServiceAccount")["metadata"]["name"]
    granted = {
        (group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert {("inference.networking.k8s.io", "inferencepools"), ("", "pods")} <= granted


def test_picker_config_has_only_keys_its_decoder_accepts() -> None:
    config = epp_config()
    assert config["apiVersion"] == accepts.EPP_CONFIG_API_VERSION
    assert config["kind"] == "EndpointPickerConfig"
    assert set(config) <= accepts.EPP_CONFIG_FIELDS
    for plugin in config["plugins"]:
        assert set(plugin) <= accepts.PLUGIN_SPEC_FIELDS
        assert plugin["type"] in accepts.PLUGIN_PARAMETERS, f"unknown plugin type {plugin['type']}"
        keys = accepts.PLUGIN_PARAMETERS[plugin["type"]]
        assert set(plugin.get("parameters", {})) <= (keys or set()), plugin["type"]
    assert set(config["dataLayer"]) <= accepts.DATA_LAYER_FIELDS
    for source in config["dataLayer"]["sources"]:
        assert set(source) <= accepts.DATA_LAYER_SOURCE_FIELDS
        assert all(set(e) <= accepts.DATA_LAYER_EXTRACTOR_FIELDS for e in source["extractors"])
    for profile in config["schedulingProfiles"]:
        assert set(profile) <= accepts.SCHEDULING_PROFILE_FIELDS
        assert all(set(p) <= accepts.SCHEDULING_PLUGIN_FIELDS for p in profile["plugins"])


def test_every_plugin_reference_names_a_declared_plugin() -> None:
    config = epp_config()
    declared = [plugin.get("name", plugin["type"]) for plugin in config["plugins"]]
    assert len(declared) == len(set(declared))
    refs = [p["pluginRef"] for profile in config["schedulingProfiles"] for p in profile["plugins"]]
    for source in config["dataLayer"]["sources"]:
        refs += [source["pluginRef"], *(e["pluginRef"] for e in source["extractors"])]
    assert set(refs) <= set(declared)
    # The picker finds its profile handler among the plugins by what it is; nothing refers to it.
    assert set(declared) - set(refs) == {"single-profile-handler"}, "a plugin declared but never used"


def engine() -> Doc:
    (extractor,) = [p for p in epp_config()["plugins"] if p["type"] == "core-metrics-extractor"]
    params = extractor["parameters"]
    (chosen,) = [e for e in params["engineConfigs"] if e["name"] == params["defaultEngine"]]
    return chosen


def test_unlabelled_wattserve_pods_get_the_wattserve_metric_names() -> None:
    # The wattserve pods carry no engine-type label, so they take the default engine's names.
    assert "llm-d.ai/engine-type" not in wattserve_pod()["metadata"]["labels"]
    config = engine()
    assert set(config) <= accepts.ENGINE_CONFIG_FIELDS
    assert config["name"] not in accepts.BUILTIN_ENGINES | {accepts.RESERVED_ENGINE}
    # vLLM's own waiting count would miss wattserve's admission queue and flex lane.
    assert config["queuedRequestsSpec"] == "wattserve_num_requests_waiting"


def test_picker_reads_metrics_wattserve_exports() -> None:
    config = engine()
    specs = [value for key, value in config.items() if key.endswith("Spec") and value]
    assert len(specs) == 5
    exported = set(prom.exported_labels()) | deploy_files.vllm_metric_names()
    for spec in specs:
        match = accepts.METRIC_SPEC.fullmatch(spec)
        assert match, f"not a metric spec the picker parses: {spec!r}"
        assert match.group(1) in exported, f"{spec}: not on wattserve's /metrics"
    (source,) = [p for p in epp_config()["plugins"] if p["type"] == "metrics-data-source"]
    # The ServiceMonitor's path: wattserve serves its metrics there, without a key.
    (endpoint,) = base.only("ServiceMonitor")["spec"]["endpoints"]
    assert source["parameters"]["path"] == endpoint["path"]


# --- the autoscalers ---------------------------------------------------------------------------------


def scaled() -> Doc:
    return only("ScaledObject")["spec"]


def hpa() -> Doc:
    return only("HorizontalPodAutoscaler")["spec"]


def test_both_autoscalers_scale_the_wattserve_deployment_alike() -> None:
    deployment = base.only("Deployment")
    target = {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert scaled()["scaleTargetRef"] == target
    assert hpa()["scaleTargetRef"] == target
    assert (scaled()["minReplicaCount"], scaled()["maxReplicaCount"]) == (
        hpa()["minReplicas"],
        hpa()["maxReplicas"],
    )
    assert scaled()["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa()["behavior"]
    (metric,) = hpa()["metrics"]
    modifiers = scaled()["advanced"]["scalingModifiers"]
    assert (modifiers["metricType"], modifiers["target"]) == (
        "AverageValue",
        metric["external"]["target"]["averageValue"],
    )
    # KEDA would name its own HPA after the ScaledObject; a distinct name keeps the two examples apart.
    assert (
        scaled()["advanced"]["horizontalPodAutoscalerConfig"]["name"]
        != only("HorizontalPodAutoscaler")["metadata"]["name"]
    )


def test_keda_triggers_are_prometheus_queries_of_recorded_series() -> None:
    recorded = {rule.name for rule in deploy_files.rules() if not rule.alert}
    names = [trigger["name"] for trigger in scaled()["triggers"]]
    assert len(names) == len(set(names))
    for trigger in scaled()["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert accepts.KEDA_PROMETHEUS_REQUIRED <= set(metadata) <= accepts.KEDA_PROMETHEUS_KEYS
        float(metadata["threshold"])
        assert deploy_files.metric_names(metadata["query"]) <= recorded


def formula(values: dict[str, float]) -> float:
    """KEDA's formula (expr-lang) evaluated in Python: one `cond ? a : b`, `&&`, `max`, arithmetic."""
    text = scaled()["advanced"]["scalingModifiers"]["formula"]
    assert set(re.findall(r"[A-Za-z_]\w*", text)) <= set(values) | {"max", "min"}
    condition, then, otherwise = re.fullmatch(r"(.+?)\?(.+?):(.+)", text).groups()
    python = f"({then}) if ({condition.replace('&&', ' and ')}) else ({otherwise})"
    return eval(python, {"__builtins__": {}, "max": max, "min": min}, values)  # noqa: S307


@pytest.mark.parametrize(
    ("waiting", "running", "kv", "demand"),
    [(0, 30, 0.375, 15), (3, 30, 0.375, 33), (3, 30, 1.75, 52.5), (0, 0, 0, 0)],
    ids=["no queue: packed", "queue: spread", "kv cache full", "idle"],
)
def test_keda_formula_is_the_recorded_demand(
    waiting: float, running: float, kv: float, demand: float
) -> None:
    # The cases of the demand rule's promtool tests (deploy/prometheus/wattserve-rules.test.yml).
    assert formula({"waiting": waiting, "running": running, "kv": kv}) == demand


def test_hpa_reads_the_recorded_demand_through_prometheus_adapter() -> None:
    (metric,) = hpa()["metrics"]
    assert metric["type"] == "External"
    values = yaml.safe_load((FLEET / "hpa" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["external"]
    assert rule["name"]["as"] == metric["external"]["metric"]["name"]
    (series,) = deploy_files.metric_names(rule["seriesQuery"])
    assert re.fullmatch(rule["name"]["matches"], series)
    assert series in {r.name for r in deploy_files.rules() if not r.alert}
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"job": "wattserve"}
