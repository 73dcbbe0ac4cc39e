#!/usr/bin/env python3
"""The nodeward DaemonSet as podman would run it on one node.

Reads the manifests `kubectl kustomize deploy/` renders and prints, for one node, what the
kubelet would start: the init containers in order, then the containers, as `podman run`
arguments, with the DaemonSet's mounts, capabilities, security settings, environment and
limits. What a test changes is said on the command line and nowhere else:

  --host-path FROM=TO      a node path (and the same path inside the containers) moved to a
                           directory of the test's, prefix-wise;
  --arg CONTAINER:FLAG=V   one flag of one container given another value (it must exist).

Anything of the pod spec this cannot reproduce is an error, so the end-to-end test can never
silently run something else than the DaemonSet. Output, one item per line:

  mkdir PATH                     a hostPath DirectoryOrCreate to create
  init NAME PODMAN-ARGS...       an init container (run to completion, in order)
  main NAME PODMAN-ARGS...       a container (started detached)
  probe CONTAINER KIND URL       an httpGet probe (readiness or liveness)
  override CONTAINER FLAG        a flag --arg replaced
"""

import argparse
import re
import shlex
import sys

import yaml

POD_SPEC_KEYS = {
    "serviceAccountName", "hostNetwork", "hostPID", "dnsPolicy", "priorityClassName",
    "tolerations", "terminationGracePeriodSeconds", "initContainers", "containers", "volumes",
    "automountServiceAccountToken",
}
CONTAINER_KEYS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "ports", "readinessProbe",
    "livenessProbe", "resources", "securityContext", "volumeMounts",
}
SECURITY_KEYS = {
    "privileged", "capabilities", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
    "runAsUser", "seccompProfile",
}
MOUNT_KEYS = {"name", "mountPath", "readOnly", "mountPropagation"}
PROPAGATION = {"Bidirectional": "rshared", "HostToContainer": "rslave", "None": "rprivate"}
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Unsupported(Exception):
    pass


def check_keys(what, mapping, allowed):
    unknown = set(mapping) - allowed
    if unknown:
        raise Unsupported(f"{what}: cannot reproduce {sorted(unknown)}")


def map_path(path, mappings):
    for source, target in mappings:
        if path == source or path.startswith(source.rstrip("/") + "/"):
            return target + path[len(source.rstrip("/")):]
    return path


def memory_bytes(text):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def cpus(text):
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def expand(text, env):
    # Kubernetes' $(VAR): from the container's environment; $$ escapes.
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


def field_value(path, options):
    values = {
        "spec.nodeName": options.node,
        "metadata.namespace": options.namespace,
        "metadata.name": f"nodeward-{options.node}",
        "status.hostIP": options.node_ip,
        "status.podIP": options.node_ip,
    }
    if path not in values:
        raise Unsupported(f"fieldRef {path}")
    return values[path]


def container_args(container, volumes, spec, options, kind, overrides):
    name = container["name"]
    check_keys(f"container {name}", container, CONTAINER_KEYS)
    argv = ["--name", f"{options.prefix}-{options.node}-{name}", "--label",
            f"nodeward-e2e={options.prefix}", "--label", f"nodeward-e2e-node={options.node}"]
    argv += ["--rm"] if kind == "init" else ["--detach"]
    if spec.get("hostNetwork"):
        argv += ["--network", "host"]
    if spec.get("hostPID"):
        argv += ["--pid", "host"]
    if options.cgroup_parent:
        argv += ["--cgroup-parent", options.cgroup_parent]

    security = container.get("securityContext", {})
    check_keys(f"container {name} securityContext", security, SECURITY_KEYS)
    if security.get("privileged"):
        argv.append("--privileged")
    capabilities = security.get("capabilities", {})
    check_keys(f"container {name} capabilities", capabilities, {"add", "drop"})
    for cap in capabilities.get("drop", []):
        argv += ["--cap-drop", "all" if cap == "ALL" else f"CAP_{cap}"]
    for cap in capabilities.get("add", []):
        argv += ["--cap-add", f"CAP_{cap}"]
    if security.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if "runAsUser" in security:
        argv += ["--user", str(security["runAsUser"])]
    # The kubelet runs containers Unconfined unless the pod asks for RuntimeDefault.
    seccomp = security.get("seccompProfile", {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise Unsupported(f"container {name}: seccompProfile {seccomp}")

    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = field_value(entry["valueFrom"]["fieldRef"]["fieldPath"], options)
        else:
            raise Unsupported(f"container {name}: env {entry['name']}")
    if spec.get("automountServiceAccountToken", True) and options.token_dir:
        env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = options.api.split(":")
        argv += ["--volume", f"{options.token_dir}:{SA_DIR}:ro"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]

    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        argv += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        argv += ["--cpus", str(cpus(str(limits["cpu"])))]

    for mount in container.get("volumeMounts", []):
        check_keys(f"container {name} volumeMount", mount, MOUNT_KEYS)
        volume = volumes.get(mount["name"])
        if volume is None:
            raise Unsupported(f"container {name}: no volume {mount['name']}")
        target = map_path(mount["mountPath"], options.host_paths)
        flags = ["ro"] if mount.get("readOnly") else []
        if "mountPropagation" in mount:
            flags.append(PROPAGATION[mount["mountPropagation"]])
        if "hostPath" in volume:
            source = map_path(volume["hostPath"]["path"], options.host_paths)
        elif "secret" in volume:
            source = options.secrets.get(volume["secret"]["secretName"])
        elif "configMap" in volume:
            source = options.configmaps.get(volume["configMap"]["name"])
        else:
            raise Unsupported(f"volume {mount['name']}: only hostPath, secret, configMap")
        if source is None:
            raise Unsupported(f"volume {mount['name']}: no directory given for it")
        argv += ["--volume", f"{source}:{target}" + (":" + ",".join(flags) if flags else "")]

    image = container.get("image", "")
    if not image.startswith("nodeward"):
        raise Unsupported(f"container {name}: image {image} is not nodeward's")
    argv.append(options.image)
    if "command" not in container:
        raise Unsupported(f"container {name}: no command (the image has no entrypoint)")
    command = [expand(str(c), env) for c in container["command"] + container.get("args", [])]
    for override in options.args:
        target_container, flag_value = override.split(":", 1)
        if target_container != name:
            continue
        flag, value = flag_value.split("=", 1)
        hits = [i for i, c in enumerate(command) if c.startswith(f"--{flag}=")]
        if not hits:
            raise Unsupported(f"container {name} has no --{flag} to override")
        for i in hits:
            command[i] = f"--{flag}={value}"
        overrides.append((name, flag))
    # Paths in flags move with the mounts they live in.
    mapped = []
    for c in command:
        if c.startswith("--") and "=" in c:
            flag, value = c.split("=", 1)
            c = f"{flag}={map_path(value, options.host_paths)}"
        mapped.append(c)
    return argv + mapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--node-ip", default="127.0.0.1")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--namespace", default="nodeward-system")
    parser.add_argument("--api", default="127.0.0.1:6443")
    parser.add_argument("--token-dir", default="")
    parser.add_argument("--cgroup-parent", default="")
    parser.add_argument("--host-path", action="append", default=[])
    parser.add_argument("--arg", dest="args", action="append", default=[])
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--configmap", action="append", default=[])
    options = parser.parse_args()
    options.host_paths = [tuple(m.split("=", 1)) for m in options.host_path]
    options.secrets = dict(s.split("=", 1) for s in options.secret)
    options.configmaps = dict(c.split("=", 1) for c in options.configmap)

    with open(options.manifests) as f:
        daemonsets = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        raise Unsupported(f"{len(daemonsets)} DaemonSets in {options.manifests}, expected one")
    spec = daemonsets[0]["spec"]["template"]["spec"]
    check_keys("pod spec", spec, POD_SPEC_KEYS)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for volume in volumes.values():
        host = volume.get("hostPath")
        if host and host.get("type") == "DirectoryOrCreate":
            print("mkdir", shlex.quote(map_path(host["path"], options.host_paths)))
    overrides = []
    for kind, key in (("init", "initContainers"), ("main", "containers")):
        for container in spec.get(key, []):
            argv = container_args(container, volumes, spec, options, kind, overrides)
            print(kind, container["name"], " ".join(shlex.quote(a) for a in argv))
            for probe_kind in ("readiness", "liveness"):
                probe = container.get(f"{probe_kind}Probe")
                if probe is None:
                    continue
                get = probe.get("httpGet")
                if get is None:
                    raise Unsupported(f"container {container['name']}: only httpGet probes")
                print("probe", container["name"], probe_kind,
                      f"http://{get.get('host', options.node_ip)}:{get['port']}{get['path']}")
    for name, flag in overrides:
        print("override", name, flag)


if __name__ == "__main__":
    try:
        main()
    except (Unsupported, KeyError, ValueError) as error:
        print(f"daemonset.py: {error}", file=sys.stderr)
        sys.exit(2)
