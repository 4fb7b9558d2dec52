"""The deployment files, checked without Docker or a cluster.

Dockerfile, .dockerignore, compose.yaml (+ deploy/compose/config.toml) and deploy/k8s/ are
never run on the development machine, so this module keeps them in step with the code and
with the local setup instead:

- every YAML file parses; the k8s manifests are namespace-agnostic and all in the
  kustomization;
- the config of compose and of the k8s ConfigMap loads with `settings_from_mapping` (no
  unknown keys), the k8s one only with the SASL password the Secret provides, and both name
  the same topics;
- every `cdrstream ...` command line in the Dockerfile, compose and k8s is a real subcommand
  with real options (`build_parser().parse_args`), reading the config where it is mounted;
- compose's broker is Kafka at the version of deploy/kafka/pom.xml, configured as
  deploy/kafka-local.sh configures the local one, and reachable at the config's bootstrap
  address;
- the worker's web port is the config's `[worker] web_port` everywhere it appears; the
  StatefulSet's replicas do not exceed the partitions; the RocksDB data dir is on the volume;
- the Docker build context holds everything the wheel is built from, and not the rest.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.errors import ConfigError
from streams.settings import Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
K8S_DIR = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KAFKA_LOCAL = ROOT / "deploy" / "kafka-local.sh"
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"
SECRET_TEMPLATE = K8S_DIR / "secret.template.yaml"

CDRSTREAM_IMAGE_COMPOSE = "cdrstream:local"
CDRSTREAM_IMAGE_REPO = "cdrstream"
CONFIG_PATH = "/etc/cdrstream/config.toml"
DATA_DIR = "/var/lib/cdrstream"
WEB_PORT = 6066
TOPICS = ("call-events", "dtmf-events", "cdr", "cdr-dlq")
PASSWORD_ENV = "CDRSTREAM_KAFKA__SASL_PASSWORD"
# Measured resident memory of a worker: about 100 to 300 MB.
MEASURED_PEAK_RSS = 300 * 1000**2


# ---------------------------------------------------------------- loading


def yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


@functools.cache
def compose() -> dict[str, Any]:
    (document,) = yaml_documents(COMPOSE_FILE)
    assert isinstance(document, dict)
    return document


def compose_service(name: str) -> dict[str, Any]:
    service = compose()["services"][name]
    assert isinstance(service, dict)
    return service


def cdrstream_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the cdrstream image."""
    return {
        name: service for name, service in compose()["services"].items()
        if service.get("image") == CDRSTREAM_IMAGE_COMPOSE
    }


@functools.cache
def kustomization() -> dict[str, Any]:
    (document,) = yaml_documents(K8S_DIR / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


@functools.cache
def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, for every resource the kustomization lists."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization()["resources"]:
        for document in yaml_documents(K8S_DIR / resource):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = document
    return objects


def k8s(kind: str, name: str) -> dict[str, Any]:
    return k8s_objects()[(kind, name)]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec = k8s(kind, name)["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def only_container(kind: str, name: str) -> dict[str, Any]:
    (container,) = pod_spec(kind, name)["containers"]
    assert isinstance(container, dict)
    return container


def cdrstream_workloads() -> Iterator[tuple[str, str]]:
    """(kind, name) of the k8s workloads that run the cdrstream image."""
    for (kind, name), obj in k8s_objects().items():
        if kind in ("Job", "StatefulSet", "Deployment", "DaemonSet"):
            containers = obj["spec"]["template"]["spec"]["containers"]
            if CDRSTREAM_IMAGE_REPO in [c["image"].partition(":")[0] for c in containers]:
                yield kind, name


@functools.cache
def secret_template() -> dict[str, Any]:
    (document,) = yaml_documents(SECRET_TEMPLATE)
    assert isinstance(document, dict)
    return document


def k8s_environ() -> dict[str, str]:
    """The environment the Secret gives the k8s containers."""
    (value,) = secret_template()["stringData"].values()
    return {PASSWORD_ENV: value}


def compose_config_file() -> Path:
    (source,) = {ref["source"] for s in cdrstream_services().values() for ref in s["configs"]}
    file = compose()["configs"][source]["file"]
    assert isinstance(file, str)
    return ROOT / file


def load_config(text: str, source: str, environ: dict[str, str]) -> Settings:
    # environ is explicit: the developer's or CI's own KAFKA_BOOTSTRAP_SERVERS and
    # CDRSTREAM_* variables must not leak into what the containers would see.
    return settings_from_mapping(tomllib.loads(text), source, environ)


@functools.cache
def compose_settings() -> Settings:
    path = compose_config_file()
    return load_config(path.read_text("utf-8"), str(path), {})


def configmap_text() -> str:
    text = k8s("ConfigMap", "cdrstream-config")["data"]["config.toml"]
    assert isinstance(text, str)
    return text


@functools.cache
def k8s_settings() -> Settings:
    return load_config(configmap_text(), "deploy/k8s/configmap.yaml", k8s_environ())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [rest for name, rest in dockerfile_instructions() if name == keyword]


def exec_form(text: str) -> list[str]:
    value = yaml.safe_load(text)  # a JSON array is YAML too
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def parse_cli(argv: list[str], where: str) -> argparse.Namespace:
    """`cdrstream ARGV` parsed as the entrypoint would; a usage error fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"{where}: `cdrstream {shlex.join(argv)}` is not a valid command line "
                    f"(argparse exited with {error.code})")


def cdrstream_commands() -> dict[str, list[str]]:
    """Every cdrstream command line the deployment files run, by where it is."""
    commands = {"Dockerfile CMD": exec_form(dockerfile("CMD")[-1])}
    for name, service in cdrstream_services().items():
        commands[f"compose service {name}"] = list(service["command"])
    for kind, name in cdrstream_workloads():
        for container in pod_spec(kind, name)["containers"]:
            commands[f"k8s {kind}/{name} container {container['name']}"] = list(container["args"])
    return commands


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("250m", "384Mi", "1Gi", "1") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?", str(text))
    assert match, f"not a quantity: {text!r}"
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


# ---------------------------------------------------------------- YAML


def test_every_yaml_file_parses() -> None:
    files = sorted({COMPOSE_FILE, *ROOT.joinpath("deploy").rglob("*.yaml"),
                    *ROOT.joinpath("deploy").rglob("*.yml")})
    names = {str(path.relative_to(ROOT)) for path in files}
    assert {"compose.yaml", "deploy/k8s/kustomization.yaml", "deploy/k8s/statefulset.yaml",
            "deploy/k8s/configmap.yaml", "deploy/k8s/secret.template.yaml"} <= names
    for path in files:
        documents = yaml_documents(path)
        assert documents, f"{path}: no YAML document"
        for document in documents:
            assert isinstance(document, dict), f"{path}: a document is not a mapping"


def test_k8s_manifests_are_namespace_agnostic_and_all_in_the_kustomization() -> None:
    manifests = {path.name for path in K8S_DIR.glob("*.yaml")}
    resources = kustomization()["resources"]
    assert sorted(resources) == sorted(manifests - {"kustomization.yaml", SECRET_TEMPLATE.name})
    assert "namespace" not in kustomization()
    for path in K8S_DIR.glob("*.yaml"):
        for document in yaml_documents(path):
            if document.get("kind") == "Kustomization":
                continue
            assert document["apiVersion"] and document["metadata"]["name"], path
            assert "namespace" not in document["metadata"], f"{path}: names a namespace"
    assert set(k8s_objects()) == {
        ("ConfigMap", "cdrstream-config"),
        ("Job", "cdrstream-topics"),
        ("StatefulSet", "cdrstream-worker"),
        ("PodDisruptionBudget", "cdrstream-worker"),
        ("Service", "cdrstream-worker-headless"),
        ("Service", "cdrstream-worker-metrics"),
    }


def test_images_are_the_project_version() -> None:
    version = pyproject()["project"]["version"]
    (entry,) = kustomization()["images"]
    assert entry == {"name": CDRSTREAM_IMAGE_REPO, "newTag": version}
    workloads = list(cdrstream_workloads())
    assert sorted(workloads) == [("Job", "cdrstream-topics"), ("StatefulSet", "cdrstream-worker")]
    for kind, name in workloads:
        assert only_container(kind, name)["image"] == f"{CDRSTREAM_IMAGE_REPO}:{version}"
    assert sorted(cdrstream_services()) == ["cdrs", "simulator", "topics", "worker"]
    for service in cdrstream_services().values():
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}


# ---------------------------------------------------------------- configuration


def test_compose_config_loads() -> None:
    settings = compose_settings()
    assert compose_config_file() == ROOT / "deploy" / "compose" / "config.toml"
    assert settings.kafka.bootstrap_servers == "kafka:19092"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka.replication_factor == 1  # one broker
    assert settings.worker.store == "rocksdb://"
    assert settings.worker.data_dir == DATA_DIR
    assert settings.worker.web_bind == "0.0.0.0"


def test_k8s_config_loads_only_with_the_secret_password() -> None:
    with pytest.raises(ConfigError, match="sasl_password"):
        load_config(configmap_text(), "deploy/k8s/configmap.yaml", {})
    settings = k8s_settings()
    kafka = settings.kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username) == (
        "SASL_SSL", "SCRAM-SHA-512", "cdrstream")
    assert kafka.sasl_password == k8s_environ()[PASSWORD_ENV]
    assert "sasl_password" not in tomllib.loads(configmap_text())["kafka"]
    assert settings.worker.store == "rocksdb://"
    assert settings.worker.data_dir == DATA_DIR
    assert settings.worker.web_bind == "0.0.0.0"


def test_compose_and_k8s_name_the_same_topics() -> None:
    def names(settings: Settings) -> tuple[Any, ...]:
        kafka = settings.kafka
        # app_id: the workers' consumer group and the prefix of the changelog topic
        return (kafka.call_events_topic, kafka.dtmf_events_topic, kafka.cdr_topic,
                kafka.dlq_topic, settings.worker.app_id, kafka.partitions)

    assert names(compose_settings()) == (*TOPICS, "cdrstream", 6)
    assert names(k8s_settings()) == names(compose_settings())
    # and the topics of a checkout's own default config, which `deploy/kafka-local.sh` serves
    defaults = Settings().kafka
    assert (defaults.call_events_topic, defaults.dtmf_events_topic, defaults.cdr_topic,
            defaults.dlq_topic) == TOPICS


def test_k8s_workloads_get_the_password_from_the_secret() -> None:
    secret = secret_template()
    assert secret["kind"] == "Secret"
    (key,) = secret["stringData"]
    for kind, name in cdrstream_workloads():
        env = {item["name"]: item for item in only_container(kind, name)["env"]}
        assert env[PASSWORD_ENV]["valueFrom"] == {
            "secretKeyRef": {"name": secret["metadata"]["name"], "key": key}
        }, f"{kind}/{name}"


# ---------------------------------------------------------------- command lines


def test_every_cdrstream_command_line_parses() -> None:
    commands = cdrstream_commands()
    assert sorted(commands) == [
        "Dockerfile CMD",
        "compose service cdrs",
        "compose service simulator",
        "compose service topics",
        "compose service worker",
        "k8s Job/cdrstream-topics container topics",
        "k8s StatefulSet/cdrstream-worker container worker",
    ]
    parsed = {where: parse_cli(argv, where) for where, argv in commands.items()}
    subcommands = {where: (args.command, getattr(args, "action", None))
                   for where, args in parsed.items()}
    assert subcommands == {
        "Dockerfile CMD": ("worker", None),
        "compose service cdrs": ("cdrs", "tail"),
        "compose service simulator": ("simulate", None),
        "compose service topics": ("topics", "create"),
        "compose service worker": ("worker", None),
        "k8s Job/cdrstream-topics container topics": ("topics", "create"),
        "k8s StatefulSet/cdrstream-worker container worker": ("worker", None),
    }
    for where, args in parsed.items():
        if where != "Dockerfile CMD":
            assert args.config == CONFIG_PATH, where
        # the bootstrap address and web port come from the config file
        assert args.bootstrap_servers is None, where
        assert getattr(args, "web_port", None) is None, where
    simulator = parsed["compose service simulator"]
    assert (simulator.to_kafka, simulator.output, simulator.rate, simulator.users) == (
        True, None, 200.0, 20)
    assert parsed["compose service cdrs"].from_beginning is True


def test_a_wrong_command_line_is_caught() -> None:
    for argv in (["worker", "--no-such-option"], ["simulate", "--to-kafka", "--rate", "fast"],
                 ["topics", "make"], ["tail"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)


def test_the_entrypoint_is_cdrstream() -> None:
    assert exec_form(dockerfile("ENTRYPOINT")[-1]) == ["cdrstream"]
    assert pyproject()["project"]["scripts"]["cdrstream"] == "streams.cli:main"
    for name, service in cdrstream_services().items():
        assert "entrypoint" not in service, name
    for kind, name in cdrstream_workloads():
        assert "command" not in only_container(kind, name), f"{kind}/{name}: keep the ENTRYPOINT"


def test_the_config_is_mounted_where_the_commands_read_it() -> None:
    for name, service in cdrstream_services().items():
        assert service["configs"] == [{"source": "cdrstream-config", "target": CONFIG_PATH}], name
    directory, _, filename = CONFIG_PATH.rpartition("/")
    for kind, name in cdrstream_workloads():
        mounts = {m["name"]: m for m in only_container(kind, name)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(kind, name)["volumes"]}
        assert mounts["config"]["mountPath"] == directory
        assert volumes["config"]["configMap"] == {
            "name": "cdrstream-config", "items": [{"key": "config.toml", "path": filename}]}


# ---------------------------------------------------------------- Kafka in compose


def kafka_local_properties() -> dict[str, str]:
    """The server.properties that deploy/kafka-local.sh writes."""
    script = KAFKA_LOCAL.read_text("utf-8")
    match = re.search(r'cat >"\$CONF" <<EOF\n(.*?)\nEOF\n', script, re.DOTALL)
    assert match, "the server.properties heredoc of kafka-local.sh"
    properties = {}
    for line in match.group(1).splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    assert len(properties) > 20
    return properties


def env_name(prop: str) -> str:
    """The apache/kafka image's variable for a broker property ('.' -> '_', '_' -> '__')."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


# Properties that name addresses and paths, which differ between the two set-ups by nature.
ADDRESS_PROPERTIES = {"listeners", "advertised.listeners", "listener.security.protocol.map",
                      "controller.quorum.voters", "log.dirs"}
# Variables of the image that are not broker properties.
JVM_VARIABLES = {"KAFKA_HEAP_OPTS"}


def listeners(text: str) -> dict[str, tuple[str, int]]:
    result = {}
    for item in text.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def test_compose_kafka_is_the_version_of_the_pom() -> None:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(KAFKA_POM).getroot().findtext("m:properties/m:kafka.version",
                                                     namespaces=namespace)
    assert version == "4.1.1"
    assert compose_service("kafka")["image"] == f"apache/kafka:{version}"


def test_compose_kafka_is_configured_as_kafka_local() -> None:
    local = kafka_local_properties()
    env = {key: str(value) for key, value in compose_service("kafka")["environment"].items()}
    broker_variables = {k for k in env if k.startswith("KAFKA_")} - JVM_VARIABLES
    assert broker_variables == {env_name(prop) for prop in local}
    for prop, value in local.items():
        if prop not in ADDRESS_PROPERTIES:
            assert env[env_name(prop)] == value, prop
    # spelled out, for the settings the brief names
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    for prop in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                 "share.coordinator.state.topic.replication.factor", "default.replication.factor"):
        assert env[env_name(prop)] == "1", prop
    heap = re.search(r'KAFKA_HEAP_OPTS:-([^}]*)}', KAFKA_LOCAL.read_text("utf-8"))
    assert heap and env["KAFKA_HEAP_OPTS"] == heap.group(1) == "-Xmx512m -Xms256m"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def test_compose_kafka_listeners() -> None:
    kafka = compose_service("kafka")
    env = kafka["environment"]
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]

    assert set(protocols) == set(bound)
    assert set(protocols.values()) == {"PLAINTEXT"}
    assert set(advertised) == set(bound) - {controller}
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, name
    # the controller quorum: this node, on the controller listener
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{env['KAFKA_NODE_ID']}@{kafka['hostname']}:{bound[controller][1]}")
    # inside the compose network: the service name, the address the config bootstraps from
    assert advertised[internal] == ("kafka", 19092)
    assert kafka["hostname"] == "kafka"
    assert compose_settings().kafka.bootstrap_servers == "kafka:19092"
    assert "--bootstrap-server kafka:19092" in kafka["healthcheck"]["test"][1]
    # from the host: the port of deploy/kafka-local.sh and of the default config, published
    (host_listener,) = set(advertised) - {internal}
    default_port = int(Settings().kafka.bootstrap_servers.rpartition(":")[2])
    local_port = re.search(r'PORT="\$\{KAFKA_PORT:-(\d+)\}"', KAFKA_LOCAL.read_text("utf-8"))
    assert local_port and int(local_port.group(1)) == default_port == 9092
    assert advertised[host_listener] == ("localhost", default_port)
    assert kafka["ports"] == [f"{default_port}:{default_port}"]
    # the data on the volume
    assert kafka["volumes"] == [f"kafka-data:{env['KAFKA_LOG_DIRS']}"]


def test_compose_start_order() -> None:
    kafka = compose_service("kafka")
    assert {"test", "interval", "timeout", "retries"} <= set(kafka["healthcheck"])
    assert compose_service("topics")["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert compose_service("topics")["restart"] == "no"
    for name in ("worker", "simulator", "cdrs"):
        assert compose_service(name)["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"}}, name
    for name in ("simulator", "cdrs"):
        assert compose_service(name)["profiles"] == ["demo"], name
    for name in ("kafka", "topics", "worker"):
        assert "profiles" not in compose_service(name), name


# ---------------------------------------------------------------- the worker


def test_the_web_port_is_the_configured_one_everywhere() -> None:
    port = compose_settings().worker.web_port
    assert port == k8s_settings().worker.web_port == WEB_PORT
    # Dockerfile
    assert dockerfile("EXPOSE") == [str(port)]
    # compose: published, and the healthcheck
    worker = compose_service("worker")
    assert worker["ports"] == [f"{port}:{port}"]
    assert f"http://127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    # k8s: the container port, the probes, both Services and the scrape annotations
    container = only_container("StatefulSet", "cdrstream-worker")
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    for name in ("cdrstream-worker-headless", "cdrstream-worker-metrics"):
        assert k8s("Service", name)["spec"]["ports"] == [
            {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}], name
    annotations = k8s("Service", "cdrstream-worker-metrics")["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_statefulset() -> None:
    statefulset = k8s("StatefulSet", "cdrstream-worker")
    spec = statefulset["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels
    assert spec["replicas"] == 3
    assert spec["replicas"] <= k8s_settings().kafka.partitions
    # the governing headless Service and the metrics Service select these pods
    headless = k8s("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for service in (headless, k8s("Service", "cdrstream-worker-metrics")):
        assert service["spec"]["selector"] == labels
    pdb = k8s("PodDisruptionBudget", "cdrstream-worker")["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": labels}}
    # RocksDB on a volume per pod, where the config puts it
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    container = only_container("StatefulSet", "cdrstream-worker")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == k8s_settings().worker.data_dir == DATA_DIR
    assert k8s_settings().worker.store == "rocksdb://"
    # long enough to finish a batch and leave the group; the same in compose
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 90
    assert compose_service("worker")["stop_grace_period"] == f"{grace}s"
    data_dir = compose_settings().worker.data_dir
    assert compose_service("worker")["volumes"] == [f"worker-data:{data_dir}"]


def test_worker_resources_fit_the_measured_memory() -> None:
    resources = only_container("StatefulSet", "cdrstream-worker")["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "384Mi"},
                         "limits": {"cpu": "1", "memory": "1Gi"}}
    assert quantity(resources["requests"]["memory"]) >= MEASURED_PEAK_RSS
    assert quantity(resources["limits"]["memory"]) >= 3 * MEASURED_PEAK_RSS
    assert quantity(resources["requests"]["cpu"]) <= quantity(resources["limits"]["cpu"])


def test_pods_run_as_the_image_user() -> None:
    (user,) = dockerfile("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    for kind, name in cdrstream_workloads():
        context = pod_spec(kind, name)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid), name
        container_context = only_container(kind, name)["securityContext"]
        assert container_context["allowPrivilegeEscalation"] is False
        assert container_context["readOnlyRootFilesystem"] is True
    assert str(pod_spec("StatefulSet", "cdrstream-worker")["securityContext"]["fsGroup"]) == gid


# ---------------------------------------------------------------- the image


def test_dockerfile() -> None:
    bases = [line.split()[0] for line in dockerfile("FROM")]
    assert bases == ["python:3.11-slim", "python:3.11-slim"]
    assert pyproject()["project"]["requires-python"] == ">=3.11"
    installs = [line for line in dockerfile("RUN") if '".[rocksdb]"' in line]
    assert len(installs) == 1
    # the compiled core: built with mypyc, put in the wheel by hatch_build.py, and checked
    assert 'main(["build"])' in installs[0] and "n.status()" in installs[0]
    assert "hatch_build.py" in {line.split()[0] for line in dockerfile("COPY")}
    assert "rocksdb" in pyproject()["project"]["optional-dependencies"]
    # no configuration baked in as overrides: they would silently beat the mounted file
    for line in dockerfile("ENV"):
        assert "CDRSTREAM_" not in line and "KAFKA_BOOTSTRAP_SERVERS" not in line, line


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per line of .dockerignore, in order (Docker's syntax: `*` and `?`
    stay within a path segment, `**` spans segments, `!` re-includes, the last match wins)."""
    rules = []
    for raw in DOCKERIGNORE.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + "[" + pattern[i + 1:end].replace("!", "^", 1) + "]", end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def excluded_from_context(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a folder it is in) out of the build context."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in dockerignore_rules():
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_the_build_context_holds_what_the_wheel_needs_and_no_more() -> None:
    project = pyproject()
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = ["pyproject.toml", project["project"]["readme"]]
    for folder in [*wheel["packages"], *wheel["force-include"]]:
        files = [p for p in ROOT.joinpath(folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        assert files, folder
        needed += [str(p.relative_to(ROOT)) for p in files]
    assert "streams/default_config.toml" in needed and "avro/cdrstream.Cdr.avsc" in needed
    for path in needed:
        assert not excluded_from_context(path), f"{path} is needed to build the wheel"
    # every COPY from the context (not from a build stage) is in it
    for line in dockerfile("COPY"):
        if line.startswith("--from"):
            continue
        *sources, _ = line.split()
        for source in sources:
            assert not excluded_from_context(source.rstrip("/")), source
    for path in (".venv/bin/python", ".git/HEAD", ".cache/kafka/x", "tests/test_engine.py",
                 "out/demo/cdrs.jsonl", "streams/__pycache__/cli.cpython-311.pyc",
                 "Dockerfile", "compose.yaml"):
        assert excluded_from_context(path), f"{path} should stay out of the build context"
