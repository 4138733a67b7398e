"""Where the client's configuration comes from: the pod's service account, or a kubeconfig."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from ..._errors import ConfigError

__all__ = ["default_namespace", "load_configuration"]

#: Where the kubelet mounts a pod's service account (token, ca.crt, namespace);
#: ``$LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR`` points elsewhere (tests run
#: "pods" as local processes with a token from the TokenRequest API).
_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_SERVICEACCOUNT_DIR_VARIABLE = "LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR"


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else "default"."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        with contextlib.suppress(OSError):
            return (_serviceaccount_dir() / "namespace").read_text().strip()
    with contextlib.suppress(Exception):
        contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            kubeconfig or _kubeconfig_path()
        )
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    return "default"


def _serviceaccount_dir() -> Path:
    """The pod's service account files: ``$LEADERLIB_KUBERNETES_SERVICEACCOUNT_DIR`` or the kubelet's mount."""
    return Path(os.environ.get(_SERVICEACCOUNT_DIR_VARIABLE) or _SERVICEACCOUNT_DIR)


def _kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def load_configuration(kubeconfig: str | None, context: str | None) -> k8s_client.Configuration:
    """The client configuration: in-cluster service account, or a kubeconfig file."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        # The client's load_incluster_config() with the files' directory
        # injectable; it re-reads the token each minute (kubelet rotation).
        account = _serviceaccount_dir()
        try:
            k8s_config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(account / "token"), cert_filename=str(account / "ca.crt")
            ).load_and_set(configuration)
        except k8s_config.ConfigException as exc:
            raise ConfigError(
                f"KUBERNETES_SERVICE_HOST is set but the service account in {account} cannot be used: {exc}",
                field="kubeconfig",
            ) from exc
        return configuration
    path = kubeconfig or _kubeconfig_path()
    if not any(Path(part).expanduser().is_file() for part in path.split(os.pathsep) if part):
        raise ConfigError(
            f"no kubeconfig at {path!r}; pass ?kubeconfig=PATH, set KUBECONFIG, or run in a pod",
            field="kubeconfig",
        )
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
    except (k8s_config.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot use kubeconfig {path!r}: {exc}", field="kubeconfig") from exc
    return configuration
