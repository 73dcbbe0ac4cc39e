#!/usr/bin/env python3
"""deploy/ renders and carries what nodeward really needs.

Renders deploy/ and every overlay with `kubectl kustomize`, then checks, against the source
and the built binaries rather than against a copy of the manifests:
  - RBAC grants get/list/watch on exactly the kinds the Kubernetes source follows
    (policy/kube_source.cc), and only `get` on the agent's own DaemonSet;
  - every flag of every container is a flag of its binary, every path a flag names lies in a
    volume the container mounts, and the paths nodeward-cni is installed with are the agent's
    own, on the node's side and the container's alike;
  - the DaemonSet's shape: host network and PID, system-node-critical, tolerating every taint,
    one node at a time, probes and scrape annotations on the agent's real ports, requests and
    limits on every container, privileged only where bpffs is mounted;
  - the runtime end-to-end test runs this DaemonSet changing only the two flags it says
    (tests/e2e/podman/node_plan.sh);
  - deploy/gateway: a Deployment of nodeward-gateway behind a LoadBalancer Service, reading
    exactly the kinds a gateway's Kubernetes source follows (Secrets only in its namespace),
    its flags and paths real, its certificate from the DaemonSet's workload SDS socket;
  - deploy/Dockerfile installs deploy/image/packages and copies deploy/image/binaries.
  check_deploy.py SOURCE_DIR BIN_DIR
"""

import os
import re
import subprocess
import sys
import tempfile

import yaml

failures = []
# nodeward-cni install writes these into the node's conflist: they are the node's paths.
NODE_PATH_FLAGS = {"nodeward-cni": ("agent-socket", "enrolled-namespaces-file", "pod-state-dir",
                                    "log-file")}


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}")


def render(source, path):
    result = subprocess.run(["kubectl", "kustomize", os.path.join(source, path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"kubectl kustomize {path}: {result.stderr.strip()}")
        return []
    print(f"rendered {path}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def flags_of(binary, bin_dir):
    if binary == "nodeward-cni":
        # Its installer lists its flags when given one it does not know.
        out = subprocess.run([os.path.join(bin_dir, binary), "install", "--unknown-flag=1"],
                             capture_output=True, text=True).stderr
        return set(re.findall(r"--([a-z-]+)=", out)) - {"unknown-flag"}
    out = subprocess.run([os.path.join(bin_dir, binary), "--helpfull"], capture_output=True,
                         text=True)
    return {f.replace("_", "-") for f in re.findall(r"^\s+--([a-z0-9_]+)", out.stdout + out.stderr,
                                                     re.M)}


def flag_values(command):
    values = {}
    for argument in command:
        if argument.startswith("--") and "=" in argument:
            flag, value = argument[2:].split("=", 1)
            values[flag] = value
        elif argument.startswith("--"):
            values[argument[2:]] = ""
    return values


def under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def followed_kinds(text):
    followed = set()
    for resource, versions in re.findall(r'add\("\w+", "(\w+)",\s*\{([^}]*)\}\)', text):
        for version in re.findall(r'"([^"]+)"', versions):
            followed.add((version.split("/")[0] if "/" in version else "", resource))
    return followed


def cluster_grants(docs):
    granted = set()
    for role in (d for d in docs if d["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            if set(rule["verbs"]) != {"get", "list", "watch"}:
                fail(f"ClusterRole {role['metadata']['name']} grants {rule['verbs']}")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.add((group, resource))
    return granted


def check_rbac(docs, source):
    text = open(os.path.join(source, "policy/kube_source.cc")).read()
    # The kinds only a gateway follows (its namespace's Secrets among them) are not the node
    # agent's: its ClusterRole must not grant them.
    gateway_only = re.search(r"if \(!source->options_\.gateway_namespace\.empty\(\)\) \{.*?\n  \}\n",
                             text, re.S)
    if not gateway_only:
        fail("the gateway-only kinds of policy/kube_source.cc are not where this check expects")
    else:
        text = text[:gateway_only.start()] + text[gateway_only.end():]
    followed = followed_kinds(text)
    if not followed:
        fail("no kinds found in policy/kube_source.cc")
    granted = cluster_grants(docs)
    if granted != followed:
        fail(f"ClusterRole grants {sorted(granted)}, the source follows {sorted(followed)}")
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            if rule != {"apiGroups": ["apps"], "resources": ["daemonsets"],
                        "resourceNames": ["nodeward"], "verbs": ["get"]}:
                fail(f"Role {role['metadata']['name']} grants {rule}")
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    if len(bindings) != 2 or any(b["subjects"][0]["name"] != "nodeward" for b in bindings):
        fail("the roles are not bound to the nodeward ServiceAccount")


def check_containers(spec, bin_dir, images):
    mounts_of = {}
    binaries_used = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        name = container["name"]
        command = container["command"] + container.get("args", [])
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        mounts_of[name] = mounts
        binary = command[0]
        if binary == "sh":
            continue
        binaries_used.add(binary)
        if binary not in images:
            fail(f"container {name} runs {binary}, which the image does not carry")
            continue
        known = flags_of(binary, bin_dir)
        values = flag_values(command[2:] if binary == "nodeward-cni" else command[1:])
        for flag, value in values.items():
            if flag not in known:
                fail(f"container {name}: {binary} has no flag --{flag}")
            if flag in NODE_PATH_FLAGS.get(binary, ()):
                continue  # used by the plugin on the node: checked against the agent's below
            if value.startswith("/") and not (
                    any(under(value, m) for m in mounts) or
                    (spec.get("hostPID") and under(value, "/proc"))):
                fail(f"container {name}: --{flag}={value} is in none of its mounts {mounts}")
    return binaries_used


def check_daemonset(docs, bin_dir, images):
    daemonsets = [d for d in docs if d["kind"] == "DaemonSet"]
    if len(daemonsets) != 1:
        fail(f"{len(daemonsets)} DaemonSets")
        return None
    ds = daemonsets[0]
    template = ds["spec"]["template"]
    spec = template["spec"]
    expect = {
        "hostNetwork": True, "hostPID": True, "priorityClassName": "system-node-critical",
        "serviceAccountName": "nodeward", "tolerations": [{"operator": "Exists"}],
    }
    for key, value in expect.items():
        if spec.get(key) != value:
            fail(f"DaemonSet {key} is {spec.get(key)!r}, not {value!r}")
    if ds["spec"].get("updateStrategy") != {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1}}:
        fail(f"updateStrategy {ds['spec'].get('updateStrategy')}")
    annotations = template["metadata"].get("annotations", {})
    containers = {c["name"]: c for c in spec["containers"]}
    inits = {c["name"]: c for c in spec.get("initContainers", [])}
    agent = containers.get("agent")
    sds = containers.get("sds")
    if agent is None or sds is None or set(inits) != {"mount-bpffs", "install-cni"}:
        fail(f"containers {sorted(containers)} and init containers {sorted(inits)}")
        return spec
    agent_flags = flag_values(agent["command"] + agent.get("args", []))
    if annotations.get("prometheus.io/scrape") != "true" or \
            annotations.get("prometheus.io/port") != agent_flags.get("metrics-port", "15020") or \
            agent_flags.get("metrics-address") != "0.0.0.0":
        fail(f"scrape annotations {annotations} do not match the agent's metrics endpoint")
    readiness_port = int(agent_flags.get("readiness-port", "15021"))
    for kind, path in (("readinessProbe", "/healthz/ready"), ("livenessProbe", "/healthz/live")):
        get = agent.get(kind, {}).get("httpGet", {})
        if (get.get("host"), get.get("port"), get.get("path")) != ("127.0.0.1", readiness_port,
                                                                   path):
            fail(f"agent {kind} {get} is not 127.0.0.1:{readiness_port}{path}")
    for c in list(containers.values()):
        resources = c.get("resources", {})
        if not {"cpu", "memory"} <= set(resources.get("requests", {})) or \
                "memory" not in resources.get("limits", {}):
            fail(f"container {c['name']}: requests (cpu, memory) and a memory limit are needed")
    for c in list(containers.values()) + list(inits.values()):
        privileged = c.get("securityContext", {}).get("privileged", False)
        if privileged != (c["name"] == "mount-bpffs"):
            fail(f"container {c['name']} privileged: {privileged}")
    caps = agent["securityContext"]["capabilities"]
    if caps.get("drop") != ["ALL"] or sorted(caps.get("add", [])) != [
            "BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]:
        fail(f"agent capabilities {caps}")
    for c in [sds, inits["install-cni"]]:
        if c["securityContext"].get("capabilities") != {"drop": ["ALL"]}:
            fail(f"container {c['name']} has capabilities")
    check_containers(spec, bin_dir, images)

    # nodeward-cni runs on the node with the paths it was installed with: they must be where
    # the agent serves and writes, with the node's path equal to the container's.
    install = flag_values(inits["install-cni"]["command"][2:])
    host_mounts = {}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in agent["volumeMounts"]:
        host = volumes[mount["name"]].get("hostPath", {}).get("path")
        if host:
            host_mounts[mount["mountPath"]] = host
    for plugin_flag, agent_flag in (("agent-socket", "cni-socket"),
                                    ("enrolled-namespaces-file", "enrolled-namespaces-file"),
                                    ("pod-state-dir", "cni-state-dir")):
        value = install.get(plugin_flag)
        if value != agent_flags.get(agent_flag):
            fail(f"nodeward-cni --{plugin_flag}={value} but the agent --{agent_flag}="
                 f"{agent_flags.get(agent_flag)}")
            continue
        if not any(under(value, m) and m == h for m, h in host_mounts.items()):
            fail(f"--{plugin_flag}={value} is not in a node path the agent mounts as it is")
    if install.get("cni-net-dir") != agent_flags.get("cni-net-dir") or \
            install.get("cni-bin-dir") != agent_flags.get("cni-bin-dir"):
        fail("the agent would uninstall nodeward-cni from other directories than it went into")
    sds_flags = flag_values(sds["command"] + sds.get("args", []))
    if sds_flags.get("sds-socket") != agent_flags.get("sds-socket"):
        fail(f"nodeward-sds serves {sds_flags.get('sds-socket')}, the agent calls "
             f"{agent_flags.get('sds-socket')}")
    return spec


def check_e2e_plan(source, docs, bin_dir):
    with tempfile.TemporaryDirectory() as work:
        manifests = os.path.join(work, "manifests.yaml")
        with open(manifests, "w") as f:
            yaml.safe_dump_all(docs, f)
        script = (f'name=check work={work} image=localhost/nodeward:check api=10.0.0.1:6443 '
                  f'node_ip_node1=10.0.0.1; source {source}/tests/e2e/podman/node_plan.sh; '
                  f'node_plan node1 {manifests}')
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"the end-to-end test's plan: {result.stderr.strip()}")
            return
        overrides = sorted(line.split()[1:] for line in result.stdout.splitlines()
                           if line.startswith("override"))
        if overrides != [["agent", "attach-cgroup"], ["agent", "bpf-pin-path"]]:
            fail(f"the end-to-end test changes {overrides} of the DaemonSet")
        ran = [line.split()[1] for line in result.stdout.splitlines()
               if line.split()[0] in ("init", "main")]
        if ran != ["mount-bpffs", "install-cni", "agent", "sds"]:
            fail(f"the end-to-end test runs {ran}")


def check_gateway(docs, source, bin_dir, images, daemonset_spec):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for wanted in (("Namespace", "istio-ingress"), ("ServiceAccount", "nodeward-gateway"),
                   ("Deployment", "nodeward-gateway"), ("Service", "nodeward-gateway")):
        if wanted not in kinds:
            fail(f"deploy/gateway has no {wanted[0]} {wanted[1]}")
            return
    # RBAC: every kind a gateway follows, the Secrets in its own namespace only.
    followed = followed_kinds(open(os.path.join(source, "policy/kube_source.cc")).read())
    granted = cluster_grants(docs)
    if granted != followed - {("", "secrets")}:
        fail(f"gateway ClusterRole grants {sorted(granted)}, a gateway follows {sorted(followed)}")
    roles = [d for d in docs if d["kind"] == "Role"]
    if [(r["metadata"]["namespace"], r["rules"]) for r in roles] != [
            ("istio-ingress", [{"apiGroups": [""], "resources": ["secrets"],
                                "verbs": ["get", "list", "watch"]}])]:
        fail(f"gateway Roles {roles}")
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        if binding["subjects"] != [{"kind": "ServiceAccount", "name": "nodeward-gateway",
                                    "namespace": "istio-ingress"}]:
            fail(f"{binding['kind']} {binding['metadata']['name']} binds {binding['subjects']}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    spec = template["spec"]
    if spec.get("serviceAccountName") != "nodeward-gateway" or spec.get("hostNetwork"):
        fail("the gateway runs as nodeward-gateway in its own network namespace")
    if template["metadata"]["labels"].get("istio") != "ingressgateway":
        fail("the gateway's pods are not labelled istio: ingressgateway (what Gateways select)")
    check_containers(spec, bin_dir, images)
    gateway = spec["containers"][0]
    flags = flag_values(gateway["command"] + gateway.get("args", []))
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in gateway.get("env", [])}
    if env.get("POD_NAMESPACE") != "metadata.namespace" or env.get("POD_NAME") != "metadata.name":
        fail(f"the gateway's pod identity does not come from the downward API: {env}")
    caps = gateway["securityContext"].get("capabilities", {})
    if caps != {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]} or \
            gateway["securityContext"].get("privileged"):
        fail(f"gateway capabilities {caps}")
    readiness_port = int(flags.get("readiness-port", "15021"))
    for kind, path in (("readinessProbe", "/healthz/ready"), ("livenessProbe", "/healthz/live")):
        get = gateway.get(kind, {}).get("httpGet", {})
        if (get.get("port"), get.get("path")) != (readiness_port, path):
            fail(f"gateway {kind} {get} is not :{readiness_port}{path}")
    # Its certificate: the DaemonSet's workload socket, the same node path on both sides.
    if daemonset_spec is not None:
        sds = next(c for c in daemonset_spec["containers"] if c["name"] == "sds")
        workload_socket = flag_values(sds["args"]).get("workload-sds-socket")
        if flags.get("sds-socket") != workload_socket or workload_socket is None:
            fail(f"the gateway calls {flags.get('sds-socket')}, nodeward-sds serves pods on "
                 f"{workload_socket}")
        else:
            def node_path(pod_spec, container, path):
                volumes = {v["name"]: v for v in pod_spec["volumes"]}
                for mount in container["volumeMounts"]:
                    host = volumes[mount["name"]].get("hostPath", {}).get("path")
                    if host and under(path, mount["mountPath"]):
                        return host + path[len(mount["mountPath"]):]
                return None
            if node_path(spec, gateway, workload_socket) != node_path(daemonset_spec, sds,
                                                                       workload_socket):
                fail("the gateway and nodeward-sds do not share the workload socket's directory")
    service = next(d for d in docs if d["kind"] == "Service")
    if service["spec"].get("type") != "LoadBalancer" or \
            service["spec"].get("selector") != deployment["spec"]["selector"]["matchLabels"]:
        fail(f"the gateway Service is not a LoadBalancer in front of its pods: {service['spec']}")


def main():
    source, bin_dir = sys.argv[1], sys.argv[2]
    images = [line.strip() for line in open(os.path.join(source, "deploy/image/binaries"))
              if line.strip() and not line.startswith("#")]
    base = render(source, "deploy")
    daemonset_spec = None
    if base:
        kinds = {(d["kind"], d["metadata"]["name"]) for d in base}
        for wanted in (("Namespace", "nodeward-system"), ("ServiceAccount", "nodeward"),
                       ("DaemonSet", "nodeward")):
            if wanted not in kinds:
                fail(f"deploy/ has no {wanted[0]} {wanted[1]}")
        if any(d["metadata"].get("namespace", "nodeward-system") != "nodeward-system"
               for d in base):
            fail("objects outside nodeward-system")
        check_rbac(base, source)
        spec = check_daemonset(base, bin_dir, images)
        daemonset_spec = spec
        if spec is not None:
            ca = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "nodeward-ca"]
            if not ca:
                fail("the built-in CA's Secret nodeward-ca is not mounted")
        check_e2e_plan(source, base, bin_dir)
    overlays = os.path.join(source, "deploy/overlays")
    for overlay in sorted(os.listdir(overlays)):
        docs = render(source, f"deploy/overlays/{overlay}")
        if docs:
            spec = check_daemonset(docs, bin_dir, images)
            if overlay == "istiod-ca" and spec is not None:
                sds = next(c for c in spec["containers"] if c["name"] == "sds")
                values = flag_values(sds["args"])
                if not values.get("ca-address", "").startswith("istiod.istio-system.svc:"):
                    fail(f"istiod-ca: nodeward-sds --ca-address={values.get('ca-address')}")
                if any("secret" in v for v in spec["volumes"]):
                    fail("istiod-ca: still mounts a Secret")
                tokens = [s["serviceAccountToken"] for v in spec["volumes"]
                          for s in v.get("projected", {}).get("sources", [])
                          if "serviceAccountToken" in s]
                if [t.get("audience") for t in tokens] != ["istio-ca"]:
                    fail(f"istiod-ca: tokens {tokens}")
    gateway = render(source, "deploy/gateway")
    if gateway:
        check_gateway(gateway, source, bin_dir, images, daemonset_spec)
    dockerfile = open(os.path.join(source, "deploy/Dockerfile")).read()
    for needed in ("FROM debian:12", "deploy/image/packages", "deploy/image/binaries"):
        if needed not in dockerfile:
            fail(f"deploy/Dockerfile does not use {needed}")
    print("FAIL" if failures else "PASS")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
