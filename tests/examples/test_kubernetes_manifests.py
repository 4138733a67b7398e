"""``examples/kubernetes/`` proven on a real kube-apiserver (issue 14).

The manifests are applied as written (parsed from the YAML, created with the
``kubernetes`` client as admin): namespace, ServiceAccount, Role,
RoleBinding, ConfigMap, PodDisruptionBudget, Deployment. There is no kubelet,
so the Deployment is stored (and validated by the API server) but runs
nothing; the test checks what a kubelet would rely on (env from the
ConfigMap, probes on the named health port, the grace period) and then plays
the kubelet itself: three local ``leaderlib run`` processes with the
Deployment's command, the ConfigMap's environment and the service account
the way a pod gets it, through the in-cluster path (``KUBERNETES_SERVICE_HOST``
/ ``KUBERNETES_SERVICE_PORT`` and token, ``ca.crt`` and ``namespace`` files;
the token from the TokenRequest API, the files' directory injected with
``LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR``).

Judged from the replicas' own JSON logs: one leader, a SIGKILLed leader
replaced within the lease, a SIGTERMed one handed over at once, terms that
never overlap, fencing tokens (``leaseTransitions``) that grow, no tick run
twice; and the token refused for anything outside the Role.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from leaderlib import AccessDenied, ConfigError
from leaderlib.backends.kubernetes import KubernetesBackend
from leaderlib.testing.servers import KubeAPIServer, free_port

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "kubernetes"

#: Short leases for the test (the ConfigMap's production timings would make a
#: SIGKILL failover take 10 s). Kubernetes needs renew_deadline <= lease - 1.
SHORT = {
    "LEADERLIB_LEASE_DURATION": "3",
    "LEADERLIB_RENEW_DEADLINE": "2",
    "LEADERLIB_RENEW_INTERVAL": "0.5",
    "LEADERLIB_RETRY_PERIOD": "0.3",
}
LEASE = float(SHORT["LEADERLIB_LEASE_DURATION"])


# --- the manifests -----------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """Every object of examples/kubernetes/*.yaml by kind (one object of each kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                assert document["kind"] not in objects, f"two {document['kind']} objects"
                objects[document["kind"]] = document
    return objects


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def apply(api: k8s_client.ApiClient, objects: dict[str, dict[str, Any]]) -> None:
    """Create every object as admin, in dependency order, as ``kubectl apply`` would."""
    core, rbac = k8s_client.CoreV1Api(api), k8s_client.RbacAuthorizationV1Api(api)
    policy, apps = k8s_client.PolicyV1Api(api), k8s_client.AppsV1Api(api)
    namespace = objects["Namespace"]["metadata"]["name"]
    core.create_namespace(objects["Namespace"])
    core.create_namespaced_service_account(namespace, objects["ServiceAccount"])
    rbac.create_namespaced_role(namespace, objects["Role"])
    rbac.create_namespaced_role_binding(namespace, objects["RoleBinding"])
    core.create_namespaced_config_map(namespace, objects["ConfigMap"])
    policy.create_namespaced_pod_disruption_budget(namespace, objects["PodDisruptionBudget"])
    apps.create_namespaced_deployment(namespace, objects["Deployment"])


@dataclass
class Cluster:
    """The applied example: the admin client, the objects as the server stored them,
    and a pod's service account directory (token from the TokenRequest API)."""

    kube: KubeAPIServer
    admin: k8s_client.ApiClient
    objects: dict[str, dict[str, Any]]
    namespace: str
    account_dir: Path

    def pod_env(self) -> dict[str, str]:
        """What a pod of the Deployment sees: the ConfigMap (short leases) and the in-cluster variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERLIB_") and k != "KUBECONFIG"}
        env.update(self.objects["ConfigMap"]["data"])
        env.update(SHORT)
        env.update(
            KUBERNETES_SERVICE_HOST=self.kube.host,
            KUBERNETES_SERVICE_PORT=str(self.kube.port),
            LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR=str(self.account_dir),
            PYTHONUNBUFFERED="1",
        )
        return env


@pytest.fixture(scope="module")
def cluster(kube_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    objects = manifests()
    admin = k8s_config.new_client_from_config(config_file=str(kube_apiserver.admin_kubeconfig))
    namespace = objects["Namespace"]["metadata"]["name"]
    try:
        apply(admin, objects)
        core, apps = k8s_client.CoreV1Api(admin), k8s_client.AppsV1Api(admin)
        # Read back what the API server stored (defaults filled in), as plain dicts.
        stored = {
            "Deployment": apps.read_namespaced_deployment("message-poller", namespace),
            "ConfigMap": core.read_namespaced_config_map("message-poller-leaderlib", namespace),
        }
        for kind, obj in stored.items():
            objects[kind] = admin.sanitize_for_serialization(obj)
        # A pod's projected token: the TokenRequest API, as the kubelet asks for it.
        account = objects["ServiceAccount"]["metadata"]["name"]
        answer = core.create_namespaced_service_account_token(
            account,
            namespace,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        account_dir = tmp_path_factory.mktemp("serviceaccount")
        (account_dir / "token").write_text(answer.status.token)
        (account_dir / "ca.crt").write_bytes(kube_apiserver.ca_file.read_bytes())
        (account_dir / "namespace").write_text(namespace)
        yield Cluster(kube_apiserver, admin, objects, namespace, account_dir)
    finally:
        with contextlib.suppress(ApiException):
            k8s_client.CoreV1Api(admin).delete_namespace(namespace)
        admin.close()


# --- the objects, as stored -----------------------------------------------------


def test_the_deployment_references_its_configmap_port_account_and_grace(cluster: Cluster) -> None:
    objects = cluster.objects
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    assert deployment["spec"]["replicas"] == 3
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1

    # Identity: the pods run as the ServiceAccount the RoleBinding grants.
    account = objects["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    assert objects["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": cluster.namespace}
    ]
    assert objects["RoleBinding"]["roleRef"]["name"] == objects["Role"]["metadata"]["name"]

    # Settings: every variable comes from the ConfigMap, which names a kubernetes:// backend.
    assert main["envFrom"] == [{"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}]
    settings = objects["ConfigMap"]["data"]
    assert settings["LEADERLIB_BACKEND"].startswith("kubernetes://")
    assert all(key.startswith("LEADERLIB_") for key in settings)

    # Probes: on the named port the health endpoint listens on, on every interface.
    command = main["command"]
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert int(command[command.index("--health-port") + 1]) == ports["health"]
    assert command[command.index("--health-host") + 1] == "0.0.0.0"
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"]["port"] == "health", probe
        # /leader would make followers unready: rollouts and drains would stall.
        assert main[probe]["httpGet"]["path"] == "/healthz", probe

    # Shutdown: the grace period outlasts job grace + renew deadline + a second.
    grace = float(settings["LEADERLIB_SHUTDOWN_GRACE"]) + float(settings["LEADERLIB_RENEW_DEADLINE"]) + 1
    assert pod["terminationGracePeriodSeconds"] > grace


def test_the_role_is_exactly_what_the_backend_needs() -> None:
    from leaderlib.backends.kubernetes import ROLE_YAML

    wanted = yaml.safe_load(ROLE_YAML.format(namespace="x"))["rules"]
    assert manifests()["Role"]["rules"] == wanted


def test_the_dockerfile_runs_the_deployments_command() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == container(manifests())["command"]
    copied = [
        line.split()[1]
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    for source in copied:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
    assert "examples/kubernetes/service.py" in copied


# --- three replicas as pods ---------------------------------------------------------


@dataclass
class Replica:
    """One ``leaderlib run`` of the Deployment's command, its JSON log collected."""

    index: int
    process: subprocess.Popen[str]
    health_port: int
    log: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None
    killed_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"message": line.rstrip(), "level": "RAW", "time": time.time()}
                with self.lock:
                    self.log.append(entry)

    def entries(self, message: str) -> list[dict[str, Any]]:
        with self.lock:
            return [entry for entry in self.log if entry.get("message") == message]

    def get(self, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=2)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()


def start_replicas(cluster: Cluster, count: int, tmp_path: Path) -> list[Replica]:
    """Start ``count`` pods' worth of processes; the container's command, run from the image's WORKDIR."""
    command = list(container(cluster.objects)["command"])
    assert command[0] == "leaderlib"
    replicas = []
    for index in range(count):
        port = free_port()
        argv = [sys.executable, "-m", "leaderlib", *command[1:]]
        argv[argv.index("--health-port") + 1] = str(port)
        # Loopback is enough here (the "kubelet" is this test) and opens nothing to the network.
        argv[argv.index("--health-host") + 1] = "127.0.0.1"
        process = subprocess.Popen(
            argv,
            cwd=EXAMPLE,  # the image's /app: service.py and nothing else
            env=cluster.pod_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        replica = Replica(index, process, port)
        replica.reader = threading.Thread(target=replica.read, daemon=True, name=f"replica-{index}-log")
        replica.reader.start()
        replicas.append(replica)
    (tmp_path / "command.txt").write_text(shlex.join(argv) + "\n")
    return replicas


def leaders(replicas: list[Replica]) -> list[Replica]:
    """Replicas whose last transition was "became leader" and that were not killed."""
    leading = []
    for replica in replicas:
        with replica.lock:
            transitions = [
                e["message"] for e in replica.log if e.get("message") in ("became leader", "stopped leading")
            ]
        if transitions and transitions[-1] == "became leader" and replica.killed_at is None:
            leading.append(replica)
    return leading


def wait_for_new_leader(replicas: list[Replica], after: float, timeout: float) -> tuple[Replica, float]:
    """The replica that became leader after wall time ``after``, and when it logged so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for replica in replicas:
            starts = [e["time"] for e in replica.entries("became leader") if e["time"] > after]
            if starts:
                return replica, min(starts)
        time.sleep(0.02)
    logs = {r.index: r.log[-10:] for r in replicas}
    raise AssertionError(f"no replica became leader within {timeout} s: {logs}")


@dataclass
class Term:
    replica: int
    token: int
    start: float
    end: float


def terms(replicas: list[Replica]) -> list[Term]:
    """Every leadership from the logs: "became leader" to "stopped leading", or to the SIGKILL."""
    found = []
    for replica in replicas:
        with replica.lock:
            log = list(replica.log)
        term: Term | None = None
        for entry in log:
            if entry.get("message") == "became leader":
                term = Term(replica.index, int(entry["fencing_token"]), entry["time"], float("inf"))
            elif entry.get("message") == "stopped leading" and term is not None:
                term.end = entry["time"]
                found.append(term)
                term = None
        if term is not None:
            assert replica.killed_at is not None, f"replica {replica.index} still leads"
            term.end = replica.killed_at
            found.append(term)
    return sorted(found, key=lambda t: t.start)


def stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.kill()
        replica.process.wait(10)
        if replica.reader is not None:
            replica.reader.join(10)


def test_three_pods_elect_one_leader_fail_over_and_hand_over(cluster: Cluster, tmp_path: Path) -> None:
    replicas = start_replicas(cluster, 3, tmp_path)
    try:
        first, _ = wait_for_new_leader(replicas, 0, timeout=60)
        time.sleep(1.0)  # every replica has had time to campaign and see the holder
        assert leaders(replicas) == [first]
        # The probes' endpoints: everyone is healthy (and so Ready); only the leader says /leader 200.
        assert [r.get("/healthz") for r in replicas] == [200, 200, 200]
        assert [r.get("/leader") for r in replicas] == [200 if r is first else 503 for r in replicas]
        # `kubectl get lease message-poller` shows the leader, in the pods' namespace.
        lease = k8s_client.CoordinationV1Api(cluster.admin).read_namespaced_lease(
            "message-poller", cluster.namespace
        )
        assert lease.spec.holder_identity == first.entries("became leader")[-1]["identity"]

        # SIGKILL the leader: a standby takes over once the Lease has gone unrenewed for its duration.
        first.process.kill()
        first.killed_at = time.time()
        second, took_over = wait_for_new_leader(replicas, first.killed_at, timeout=LEASE + 10)
        failover = took_over - first.killed_at
        assert failover <= LEASE + 1.5, failover

        # SIGTERM the next leader: it releases the Lease and the last replica takes it at once.
        time.sleep(2.5)  # let it run a job tick or two
        second.process.send_signal(signal.SIGTERM)
        stopped_at = time.time()
        third, took_over = wait_for_new_leader(
            [r for r in replicas if r not in (first, second)], stopped_at, 10
        )
        handover = took_over - stopped_at
        assert handover < 1.0, handover
        assert second.process.wait(20) == 0
        time.sleep(1.0)
        third.process.send_signal(signal.SIGTERM)
        assert third.process.wait(20) == 0
    finally:
        stop(replicas)

    (tmp_path / "logs.json").write_text(json.dumps({r.index: r.log for r in replicas}, indent=1))
    errors = [e for r in replicas for e in r.log if e.get("level") in ("ERROR", "CRITICAL", "RAW")]
    assert not errors, errors
    account = terms(replicas)
    assert [t.replica for t in account] == [first.index, second.index, third.index], account
    for before, after in itertools.pairwise(account):
        assert before.end <= after.start, f"terms overlap: {before} {after}"
        assert after.token > before.token, f"leaseTransitions did not grow: {before} {after}"
    # The job ran on leaders only, inside their terms, and no tick ran twice.
    runs = [(r.index, e) for r in replicas for e in r.entries("job run started")]
    assert runs, "the leader never ran its job"
    for index, run in runs:
        assert any(t.replica == index and t.start <= run["time"] <= t.end for t in account), run
    assert max(Counter(run["tick"] for _, run in runs).values()) == 1


# --- least privilege -------------------------------------------------------------------


def pod_client(cluster: Cluster) -> k8s_client.ApiClient:
    """A client configured from the pod's files, as the in-cluster path configures one."""
    configuration = k8s_client.Configuration()
    configuration.host = cluster.kube.url
    configuration.ssl_ca_cert = str(cluster.account_dir / "ca.crt")
    configuration.api_key = {"BearerToken": (cluster.account_dir / "token").read_text()}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return k8s_client.ApiClient(configuration)


def test_the_token_is_refused_outside_the_role(cluster: Cluster) -> None:
    other = cluster.kube.namespace  # another namespace, with Leases the elector user may touch
    with pod_client(cluster) as api:
        core, leases = k8s_client.CoreV1Api(api), k8s_client.CoordinationV1Api(api)
        # Inside the Role: the Leases of its own namespace.
        leases.list_namespaced_lease(cluster.namespace)
        refused = {
            "list pods": lambda: core.list_namespaced_pod(cluster.namespace),
            "read secrets": lambda: core.list_namespaced_secret(cluster.namespace),
            "read its ConfigMap": lambda: core.read_namespaced_config_map(
                "message-poller-leaderlib", cluster.namespace
            ),
            "leases in another namespace": lambda: leases.list_namespaced_lease(other),
            "leases cluster-wide": lambda: leases.list_lease_for_all_namespaces(),
            "delete a lease": lambda: leases.delete_namespaced_lease("message-poller", cluster.namespace),
            "patch a lease": lambda: leases.patch_namespaced_lease(
                "message-poller", cluster.namespace, {"metadata": {"labels": {"x": "y"}}}
            ),
        }
        for what, call in refused.items():
            with pytest.raises(ApiException) as caught:
                call()
            assert caught.value.status == 403, what


def test_leaderlib_in_a_pod_of_another_namespace_is_denied(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend's in-cluster path, in this process: its own namespace by default; another is AccessDenied."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", cluster.kube.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.kube.port))
    monkeypatch.setenv("LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR", str(cluster.account_dir))
    monkeypatch.delenv("KUBECONFIG", raising=False)

    async def attempt(url: str) -> None:
        backend = KubernetesBackend.from_url(url)
        try:
            await backend.lease("message-poller").get()
        finally:
            await backend.aclose()

    own = KubernetesBackend.from_url("kubernetes://")
    assert own.namespace == cluster.namespace  # from the namespace file
    asyncio.run(own.aclose())
    asyncio.run(attempt("kubernetes://"))
    with pytest.raises(AccessDenied, match="system:serviceaccount:leaderlib-example:message-poller"):
        asyncio.run(attempt(f"kubernetes://{cluster.kube.namespace}"))


def test_an_unusable_service_account_dir_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR", str(tmp_path))
    with pytest.raises(
        ConfigError, match=f"service account in {tmp_path} cannot be used: Service token file"
    ):
        KubernetesBackend.from_url("kubernetes://prod")
