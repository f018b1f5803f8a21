"""deploy/kubernetes: every manifest is schema-valid, the pieces fit together, the args are real flags.

Built-in kinds are validated offline against the Kubernetes JSON schemas that kubernetes-validate bundles,
in strict mode (an unknown field fails, as `kubectl apply` does). The ServiceMonitor, a CRD, is validated
against the openAPIV3Schema of prometheus-operator's own CRD, vendored in tests/unit/schemas/, made strict
the same way. The container's args are parsed by the server's real command-line parser.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from server.compose import SHUTDOWN_STEP_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRD_FILE = Path(__file__).parent / "schemas" / "monitoring.coreos.com_servicemonitors.yaml"
# The oldest Kubernetes these manifests are meant for; every field they use is GA there.
K8S_VERSION = "1.30"
NOT_MANIFESTS = {"kustomization.yaml"}
CRD_KINDS = {"ServiceMonitor"}

Doc = dict[str, Any]


def load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS: list[tuple[str, Doc]] = [
    (path.name, doc)
    for path in sorted(DEPLOY.glob("*.yaml"))
    if path.name not in NOT_MANIFESTS
    for doc in load_docs(path)
]


def only(kind: str) -> Doc:
    found = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> Doc:
    containers = only("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def validate_builtin(doc: Doc) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists its fields, as strict validation does."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def servicemonitor_validator() -> jsonschema.Draft202012Validator:
    (crd,) = load_docs(CRD_FILE)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft202012Validator(strict(version["schema"]["openAPIV3Schema"]))


def validate_servicemonitor(doc: Doc) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    servicemonitor_validator().validate(doc)
    # The CRD leaves metadata to the API server: check it as the ObjectMeta it is.
    validate_builtin({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})


def test_the_manifests_are_all_there() -> None:
    assert {doc["kind"] for _, doc in MANIFESTS} == {
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PersistentVolumeClaim",
        "Secret",
    }


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in MANIFESTS if doc["kind"] not in CRD_KINDS],
    ids=[name for name, doc in MANIFESTS if doc["kind"] not in CRD_KINDS],
)
def test_builtin_manifest_matches_the_kubernetes_schema(doc: Doc) -> None:
    validate_builtin(doc)  # a kind without a bundled schema raises SchemaNotFoundError: a failure too


def test_servicemonitor_matches_the_prometheus_operator_crd() -> None:
    validate_servicemonitor(only("ServiceMonitor"))


def _rename(parent: Doc, old: str, new: str) -> None:
    parent[new] = parent.pop(old)


def _pod(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


BROKEN_DEPLOYMENTS: dict[str, Callable[[Doc], None]] = {
    "misspelt field": lambda d: _rename(_pod(d)["containers"][0], "livenessProbe", "livenesProbe"),
    "port as a string": lambda d: _pod(d)["containers"][0]["ports"][0].update(containerPort="8000"),
    "no selector": lambda d: d["spec"].pop("selector"),
    "container without a name": lambda d: _pod(d)["containers"][0].pop("name"),
    "arg not a string": lambda d: _pod(d)["containers"][0]["args"].append(30),
}


@pytest.mark.parametrize("breakage", BROKEN_DEPLOYMENTS.values(), ids=BROKEN_DEPLOYMENTS.keys())
def test_a_broken_deployment_fails_validation(breakage: Callable[[Doc], None]) -> None:
    doc = copy.deepcopy(only("Deployment"))
    breakage(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(doc)


BROKEN_SERVICEMONITORS: dict[str, Callable[[Doc], None]] = {
    "misspelt field": lambda d: _rename(d["spec"]["endpoints"][0], "interval", "intervall"),
    "bad duration": lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"),
    "endpoints not a list": lambda d: d["spec"].update(endpoints=d["spec"]["endpoints"][0]),
    "no selector": lambda d: d["spec"].pop("selector"),
    "bad metadata": lambda d: d["metadata"].update(labels=["app"]),
}


@pytest.mark.parametrize("breakage", BROKEN_SERVICEMONITORS.values(), ids=BROKEN_SERVICEMONITORS.keys())
def test_a_broken_servicemonitor_fails_validation(breakage: Callable[[Doc], None]) -> None:
    doc = copy.deepcopy(only("ServiceMonitor"))
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_servicemonitor(doc)


def test_kustomization_applies_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    manifests = {path.name for path in DEPLOY.glob("*.yaml")} - NOT_MANIFESTS
    assert set(resources) == manifests - {"secret.example.yaml"}
    # Its image override must name the Deployment's image, or it silently does nothing.
    assert {image["name"] for image in kustomization["images"]} == {container()["image"]}


# --- how the pieces fit ----------------------------------------------------------------------------------


def server_cli() -> Any:
    """server.cli, whose parser carries vLLM's engine flags, so it needs vLLM."""
    pytest.importorskip("vllm", reason="the server's command line includes vLLM's engine flags")
    import server.cli  # noqa: PLC0415

    return server.cli


def serve_parser() -> argparse.ArgumentParser:
    parser = server_cli().build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices["serve"]


def parsed_args() -> tuple[argparse.Namespace, Any]:
    """The container's command line through `wattserve`'s parser, and the settings it gives."""
    cli = server_cli()
    command = container()["command"]
    assert command[:2] == ["wattserve", "serve"]
    args = cli.parse_command_line([*command[1:], *container()["args"]])
    return args, cli.settings_from(args)


def test_container_args_are_flags_wattserve_serve_accepts() -> None:
    known = {option for action in serve_parser()._actions for option in action.option_strings}
    flags = [arg.split("=", 1)[0] for arg in container()["args"] if arg.startswith("-")]
    # Spelled out in full: argparse would also take an unambiguous prefix, which a new flag can break.
    assert [flag for flag in flags if flag not in known] == []
    parsed_args()  # values of the right type and within the settings' bounds, or SystemExit


def test_keys_come_from_the_secret_not_the_command_line() -> None:
    flags = {arg.split("=", 1)[0] for arg in container()["args"]}
    assert not flags & {"--api-key", "--admin-key"}
    secret = only("Secret")
    refs = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in container()["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert {"WATTSERVE_API_KEY", "WATTSERVE_ADMIN_KEY"} <= set(refs)
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    assert not refs["WATTSERVE_API_KEY"].get("optional", False)


def test_probes_and_service_reach_the_port_the_server_listens_on() -> None:
    _, settings = parsed_args()
    assert settings.host == "0.0.0.0"
    (port,) = container()["ports"]
    assert port["containerPort"] == settings.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"] == {"path": "/health", "port": port["name"]}
    (service_port,) = only("Service")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]


def test_startup_probe_leaves_time_to_download_and_load_a_model() -> None:
    probe = container()["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


def test_termination_grace_outlasts_the_servers_drain() -> None:
    _, settings = parsed_args()
    pause_s = 0
    pre_stop = container().get("lifecycle", {}).get("preStop")
    if pre_stop is not None:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        pause_s = int(command[1])
    # After SIGTERM: the grace for requests in flight, then two bounded steps (engine aborts, adapter
    # retirements) before the engine stops; the kubelet counts the preStop pause in the same period.
    drain_s = pause_s + settings.shutdown_grace_seconds + 2 * SHUTDOWN_STEP_TIMEOUT_S
    assert only("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain_s


def test_adapter_claim_is_mounted_where_adapter_dir_points() -> None:
    _, settings = parsed_args()
    claim = only("PersistentVolumeClaim")["metadata"]["name"]
    volumes = _pod(only("Deployment"))["volumes"]
    (volume,) = [v["name"] for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == volume]
    assert Path(mount["mountPath"]) == settings.adapter_dir


def test_adapter_claim_access_mode_fits_the_rollout() -> None:
    # The schema leaves access modes free-form; the API server takes only these.
    modes = set(only("PersistentVolumeClaim")["spec"]["accessModes"])
    assert modes <= {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}
    if modes & {"ReadWriteOnce", "ReadWriteOncePod"}:
        # A surge pod on another node would wait for the claim while the old pod holds it.
        assert only("Deployment")["spec"]["strategy"]["type"] == "Recreate"


def test_cache_volume_is_mounted_where_the_image_keeps_its_cache() -> None:
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "XDG_CACHE_HOME=/cache" in dockerfile
    assert "/cache" in mounts


def test_pod_asks_for_one_gpu_and_runs_as_non_root() -> None:
    pod = _pod(only("Deployment"))
    resources = container()["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False
    # A Service named wattserve would otherwise inject WATTSERVE_PORT=tcp://..., which the server reads.
    assert pod["enableServiceLinks"] is False


def test_selectors_connect_service_servicemonitor_and_pods() -> None:
    deployment, service = only("Deployment"), only("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = only("ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
