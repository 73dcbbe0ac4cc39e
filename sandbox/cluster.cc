// Over 600 lines on purpose: `up`, `down`, restart and status all read and write the one record
// of what a sandbox created (its objects file), and tearing down must undo exactly what bringing
// up did; split apart, the two halves of each object's life would drift.
#include "sandbox/cluster.h"

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "policy/directory_source.h"
#include "policy/resources.h"
#include "sandbox/spec.h"
#include "sandbox/system.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

namespace nodeward::sandbox {
namespace {

// Files of the run directory.
constexpr char kObjectsFile[] = "objects";  // what was created, appended before creating it
constexpr char kNodesFile[] = "nodes";
constexpr char kPodsFile[] = "pods";
constexpr char kReadyFile[] = "ready";
constexpr char kAgentArgvFile[] = "agent.argv";  // per node: the agent's argv, one per line

struct ProcessRecord {
  std::string role;  // agent, sds or app
  std::string node;
  ProcessRef ref;
  std::string detail;
};

struct Objects {
  std::vector<std::string> netns;
  std::vector<std::string> cgroups;
  std::vector<std::string> pins;
  std::vector<ProcessRecord> processes;
};

Objects ReadObjects(const std::string& run_dir) {
  Objects objects;
  absl::StatusOr<std::string> text = ReadFile(absl::StrCat(run_dir, "/", kObjectsFile));
  if (!text.ok()) return objects;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (fields.size() == 2 && fields[0] == "netns") objects.netns.push_back(fields[1]);
    if (fields.size() == 2 && fields[0] == "cgroup") objects.cgroups.push_back(fields[1]);
    if (fields.size() == 2 && fields[0] == "pin") objects.pins.push_back(fields[1]);
    if (fields.size() >= 5 && fields[0] == "process") {
      ProcessRecord record;
      record.role = fields[1];
      record.node = fields[2];
      if (!absl::SimpleAtoi(fields[3], &record.ref.pid) ||
          !absl::SimpleAtoi(fields[4], &record.ref.start_time)) {
        continue;
      }
      if (fields.size() > 5) record.detail = fields[5];
      objects.processes.push_back(std::move(record));
    }
  }
  return objects;
}

struct NodeRecord {
  std::string name, address, netns, cgroup;
};
struct PodRecord {
  std::string namespace_name, name, node, address, service_account, netns, cgroup, ports;
  bool enrolled = false;
};

std::vector<NodeRecord> ReadNodes(const std::string& run_dir) {
  std::vector<NodeRecord> nodes;
  absl::StatusOr<std::string> text = ReadFile(absl::StrCat(run_dir, "/", kNodesFile));
  if (!text.ok()) return nodes;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() == 4) nodes.push_back({f[0], f[1], f[2], f[3]});
  }
  return nodes;
}

std::vector<PodRecord> ReadPods(const std::string& run_dir) {
  std::vector<PodRecord> pods;
  absl::StatusOr<std::string> text = ReadFile(absl::StrCat(run_dir, "/", kPodsFile));
  if (!text.ok()) return pods;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 9) continue;
    pods.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8] == "enrolled"});
  }
  return pods;
}

absl::Status CheckRoot() {
  if (geteuid() != 0) {
    return absl::PermissionDeniedError(
        "needs root: network namespaces, cgroups and BPF programs are created");
  }
  return absl::OkStatus();
}

// cgroup v2 at /sys/fs/cgroup/unified, mounted if missing (as the integration tests expect).
absl::Status EnsureCgroup2() {
  struct statfs info {};
  if (statfs(CgroupRoot().c_str(), &info) == 0 &&
      static_cast<uint64_t>(info.f_type) == CGROUP2_SUPER_MAGIC) {
    return absl::OkStatus();
  }
  if (absl::Status made = MakeDirectories(CgroupRoot()); !made.ok()) return made;
  if (mount("cgroup2", CgroupRoot().c_str(), "cgroup2", 0, nullptr) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("mount cgroup2 at ", CgroupRoot()));
  }
  return absl::OkStatus();
}

// Processes whose network namespace is one of `inodes`.
std::vector<ProcessRef> ProcessesInNetns(const std::set<uint64_t>& inodes) {
  std::vector<ProcessRef> found;
  if (inodes.empty()) return found;
  for (const std::string& entry : ListDirectory("/proc")) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry, &pid) || pid == getpid()) continue;
    struct stat info {};
    if (stat(absl::StrCat("/proc/", pid, "/ns/net").c_str(), &info) != 0) continue;
    if (!inodes.contains(info.st_ino)) continue;
    ProcessRef ref{pid, ProcessStartTime(pid)};
    if (ref.start_time != 0) found.push_back(ref);
  }
  return found;
}

std::vector<std::string> SandboxNetns(const std::string& name, const Objects& objects) {
  std::set<std::string> names(objects.netns.begin(), objects.netns.end());
  for (const std::string& entry : ListDirectory("/run/netns")) {
    if (absl::StartsWith(entry, NetnsPrefix(name))) names.insert(entry);
  }
  return {names.begin(), names.end()};
}

std::vector<std::string> SandboxPins(const std::string& name, const Objects& objects) {
  std::set<std::string> pins(objects.pins.begin(), objects.pins.end());
  const std::string prefix = PinPrefix(name);
  const std::string dir = prefix.substr(0, prefix.rfind('/'));
  const std::string base = prefix.substr(prefix.rfind('/') + 1);
  for (const std::string& entry : ListDirectory(dir)) {
    if (absl::StartsWith(entry, base)) pins.insert(absl::StrCat(dir, "/", entry));
  }
  return {pins.begin(), pins.end()};
}

// Everything `up` builds, recorded in the run directory before it is created.
class Builder {
 public:
  Builder(const UpOptions& options, SandboxSpec spec, ClusterConfig config)
      : options_(options),
        spec_(std::move(spec)),
        config_(std::move(config)),
        run_dir_(RunDir(spec_.name)) {}

  absl::Status Build() {
    if (absl::Status s = MakeDirectories(run_dir_, 0755); !s.ok()) return s;
    if (absl::Status s = WriteFile(absl::StrCat(run_dir_, "/sandbox.yaml"),
                                   ReadFile(options_.file).value_or(""));
        !s.ok()) {
      return s;
    }
    // The configuration first: a mistake in it is reported before anything else is built.
    if (absl::Status s = WriteConfig(); !s.ok()) return s;
    if (absl::Status s = EnsureCgroup2(); !s.ok()) return s;
    if (absl::Status s = MakeCgroups(); !s.ok()) return s;
    if (absl::Status s = MakeNetwork(); !s.ok()) return s;
    if (absl::Status s = WriteTables(); !s.ok()) return s;
    if (absl::Status s = StartNodes(); !s.ok()) return s;
    if (absl::Status s = StartPods(); !s.ok()) return s;
    return WriteFile(absl::StrCat(run_dir_, "/", kReadyFile), absl::FormatTime(absl::Now()));
  }

 private:
  absl::Status Record(const std::string& line) {
    return AppendLine(absl::StrCat(run_dir_, "/", kObjectsFile), line);
  }

  std::string NodeDir(const std::string& node) const { return absl::StrCat(run_dir_, "/", node); }
  std::string NodeCgroup(const std::string& node) const {
    return absl::StrCat(SandboxCgroup(spec_.name), "/", node);
  }
  std::string NodeNetnsPath(const std::string& node) const {
    return NetnsPath(NetnsName(spec_.name, node));
  }
  std::string Bin(const std::string& binary) const {
    return absl::StrCat(options_.bin_dir, "/", binary);
  }

  absl::Status MakeCgroups() {
    std::vector<std::string> dirs = {SandboxCgroup(spec_.name)};
    for (const NodeSpec& node : spec_.nodes) dirs.push_back(NodeCgroup(node.name));
    for (const std::string& dir : dirs) {
      if (absl::Status s = Record(absl::StrCat("cgroup\t", dir)); !s.ok()) return s;
      if (mkdir(dir.c_str(), 0755) != 0) {
        return absl::ErrnoToStatus(errno, absl::StrCat("creating cgroup ", dir));
      }
    }
    return absl::OkStatus();
  }

  absl::Status AddNetns(const std::string& member) {
    const std::string netns = NetnsName(spec_.name, member);
    if (absl::Status s = Record(absl::StrCat("netns\t", netns)); !s.ok()) return s;
    if (absl::Status s = MustRun({"ip", "netns", "add", netns}); !s.ok()) return s;
    return MustRun({"ip", "-n", netns, "link", "set", "lo", "up"});
  }

  // Every link is created inside the sandbox's own namespaces; the machine's network is never
  // touched, and deleting the namespaces removes every link.
  absl::Status MakeNetwork() {
    const std::string fabric = NetnsName(spec_.name, kFabric);
    if (absl::Status s = AddNetns(kFabric); !s.ok()) return s;
    if (absl::Status s = MustRun({"ip", "-n", fabric, "link", "add", "br0", "type", "bridge"});
        !s.ok()) {
      return s;
    }
    if (absl::Status s = MustRun({"ip", "-n", fabric, "link", "set", "br0", "up"}); !s.ok()) {
      return s;
    }
    for (const NodeSpec& node : spec_.nodes) {
      const std::string netns = NetnsName(spec_.name, node.name);
      const std::string port = absl::StrCat("n", node.index);
      std::vector<std::vector<std::string>> commands = {
          {"ip", "-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
           netns},
          {"ip", "-n", fabric, "link", "set", port, "master", "br0", "up"},
          {"ip", "-n", netns, "addr", "add", absl::StrCat(node.address, "/24"), "dev", "eth0"},
          {"ip", "-n", netns, "link", "set", "eth0", "up"},
      };
      if (absl::Status s = AddNetns(node.name); !s.ok()) return s;
      for (const auto& command : commands) {
        if (absl::Status s = MustRun(command); !s.ok()) return s;
      }
      if (absl::Status s = WriteInNetns(NetnsPath(netns), "/proc/sys/net/ipv4/ip_forward", "1");
          !s.ok()) {
        return s;
      }
      for (const NodeSpec& other : spec_.nodes) {
        if (other.index == node.index) continue;
        if (absl::Status s =
                MustRun({"ip", "-n", netns, "route", "add", other.pod_cidr, "via", other.address});
            !s.ok()) {
          return s;
        }
      }
    }
    if (spec_.outside) {
      if (absl::Status s = MakeOutside(); !s.ok()) return s;
    }
    for (const PodSpec& pod : spec_.pods) {
      const std::string node_netns = NetnsName(spec_.name, pod.node);
      const std::string netns = NetnsName(spec_.name, pod.name);
      const std::string gateway = absl::StrCat("10.241.", pod.node_index, ".1");
      const std::string port = absl::StrCat("p", pod.index_on_node);
      // Point-to-point pod links: the node end of every pod veth holds the gateway address
      // (/32), the pod reaches everything through it, the node routes each pod address to its
      // veth.
      std::vector<std::vector<std::string>> commands = {
          {"ip", "-n", node_netns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", netns},
          {"ip", "-n", node_netns, "addr", "add", absl::StrCat(gateway, "/32"), "dev", port},
          {"ip", "-n", node_netns, "link", "set", port, "up"},
          {"ip", "-n", node_netns, "route", "add", absl::StrCat(pod.address, "/32"), "dev", port},
          {"ip", "-n", netns, "addr", "add", absl::StrCat(pod.address, "/32"), "dev", "eth0"},
          {"ip", "-n", netns, "link", "set", "eth0", "up"},
          {"ip", "-n", netns, "route", "add", gateway, "dev", "eth0", "scope", "link"},
          {"ip", "-n", netns, "route", "add", "default", "via", gateway, "dev", "eth0"},
      };
      if (absl::Status s = AddNetns(pod.name); !s.ok()) return s;
      for (const auto& command : commands) {
        if (absl::Status s = MustRun(command); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  // Clients outside the cluster: on the fabric like a node, but running no agent, reaching
  // each node's pods through that node as a load balancer reaches a gateway pod.
  absl::Status MakeOutside() {
    const std::string fabric = NetnsName(spec_.name, kFabric);
    const std::string netns = NetnsName(spec_.name, kOutside);
    if (absl::Status s = AddNetns(kOutside); !s.ok()) return s;
    std::vector<std::vector<std::string>> commands = {
        {"ip", "-n", fabric, "link", "add", "o0", "type", "veth", "peer", "name", "eth0", "netns",
         netns},
        {"ip", "-n", fabric, "link", "set", "o0", "master", "br0", "up"},
        {"ip", "-n", netns, "addr", "add", absl::StrCat(kOutsideAddress, "/24"), "dev", "eth0"},
        {"ip", "-n", netns, "link", "set", "eth0", "up"},
    };
    for (const NodeSpec& node : spec_.nodes) {
      commands.push_back({"ip", "-n", netns, "route", "add", node.pod_cidr, "via", node.address});
    }
    for (const auto& command : commands) {
      if (absl::Status s = MustRun(command); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status WriteTables() {
    std::string nodes;
    for (const NodeSpec& node : spec_.nodes) {
      absl::StrAppend(&nodes, node.name, "\t", node.address, "\t", NetnsName(spec_.name, node.name),
                      "\t", NodeCgroup(node.name), "\n");
      if (absl::Status s = MakeDirectories(NodeDir(node.name)); !s.ok()) return s;
    }
    std::string pods;
    for (const PodSpec& pod : spec_.pods) {
      absl::StrAppend(&pods, pod.namespace_name, "\t", pod.name, "\t", pod.node, "\t", pod.address,
                      "\t", pod.service_account, "\t", NetnsName(spec_.name, pod.name), "\t",
                      NodeCgroup(pod.node), "\t", absl::StrJoin(pod.ports, ","), "\t",
                      pod.enrolled ? "enrolled" : "-", "\n");
    }
    if (absl::Status s = WriteFile(absl::StrCat(run_dir_, "/", kNodesFile), nodes); !s.ok()) {
      return s;
    }
    return WriteFile(absl::StrCat(run_dir_, "/", kPodsFile), pods);
  }

  absl::Status WriteConfig() {
    const std::string dir = absl::StrCat(run_dir_, "/config");
    if (absl::Status s = MakeDirectories(dir); !s.ok()) return s;
    for (const auto& [name, contents] : config_.files) {
      if (absl::Status s = WriteFile(absl::StrCat(dir, "/", name), contents); !s.ok()) return s;
    }
    if (std::string namespaces = MissingNamespacesYaml(spec_, config_); !namespaces.empty()) {
      if (absl::Status s = WriteFile(absl::StrCat(dir, "/sandbox-namespaces.yaml"), namespaces);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = WriteFile(absl::StrCat(dir, "/sandbox-pods.yaml"), PodsYaml(spec_));
        !s.ok()) {
      return s;
    }
    // Read back with the agents' own parser, so a mistake shows here and not in every agent.
    absl::StatusOr<policy::ResourceSet> loaded = policy::LoadDirectory(dir);
    if (!loaded.ok()) {
      // Name the user's files, not their copies.
      std::string message(loaded.status().message());
      if (!spec_.config_dir.empty()) {
        message = absl::StrReplaceAll(
            message, {{absl::StrCat(dir, "/"), absl::StrCat(spec_.config_dir, "/")}});
      }
      return absl::InvalidArgumentError(absl::StrCat("the configuration does not load: ", message));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ProcessRef> Start(const std::string& role, const std::string& node,
                                   const std::string& detail, SpawnOptions options) {
    absl::StatusOr<ProcessRef> process = Spawn(options);
    if (!process.ok()) return process.status();
    if (absl::Status s = Record(absl::StrCat("process\t", role, "\t", node, "\t", process->pid,
                                             "\t", process->start_time, "\t", detail));
        !s.ok()) {
      kill(process->pid, SIGKILL);
      return s;
    }
    return process;
  }

  // Polls `ready` until it holds, failing early when `process` exits.
  absl::Status WaitUntil(const std::string& what, const ProcessRef& process, const std::string& log,
                         const std::function<bool()>& ready) {
    const absl::Time deadline = absl::Now() + options_.ready_timeout;
    while (absl::Now() < deadline) {
      if (ready()) return absl::OkStatus();
      if (!IsAlive(process)) {
        return absl::InternalError(absl::StrCat(what, " ", DescribeExit(process),
                                                " while starting; last lines of ", log, ":\n",
                                                Tail(log, 20)));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return absl::DeadlineExceededError(absl::StrCat(what, " not ready after ",
                                                    absl::FormatDuration(options_.ready_timeout),
                                                    "; last lines of ", log, ":\n", Tail(log, 20)));
  }

  // Flags of nodeward-agent that exist in some versions only are passed when it has them.
  bool AgentHasFlag(const std::string& flag) {
    if (agent_help_.empty()) {
      agent_help_ = RunCommand({Bin("nodeward-agent"), "--helpfull"}, absl::Seconds(10)).output;
    }
    std::string underscored = flag;
    std::replace(underscored.begin(), underscored.end(), '-', '_');
    return absl::StrContains(agent_help_, absl::StrCat("--", underscored)) ||
           absl::StrContains(agent_help_, absl::StrCat("--", flag, "="));
  }

  absl::Status StartNodes() {
    const std::string ca_dir = absl::StrCat(run_dir_, "/ca");
    for (const NodeSpec& node : spec_.nodes) {
      const std::string dir = NodeDir(node.name);
      const std::string sds_socket = absl::StrCat(dir, "/sds.sock");
      const std::string sds_log = absl::StrCat(dir, "/sds.log");
      std::vector<std::string> sds_argv = {
          Bin("nodeward-sds"), absl::StrCat("--sds-socket=", sds_socket),
          absl::StrCat("--ca-dir=", ca_dir), absl::StrCat("--trust-domain=", spec_.trust_domain),
          // The node may hold the identities of the pods scheduled on it, from the same
          // configuration the agents read.
          absl::StrCat("--config-dir=", run_dir_, "/config"),
          absl::StrCat("--node-name=", node.name)};
      if (spec_.cert_lifetime > absl::ZeroDuration()) {
        sds_argv.push_back(
            absl::StrCat("--cert-lifetime=", absl::FormatDuration(spec_.cert_lifetime)));
      }
      // One after the other: the first one creates the shared CA directory.
      absl::StatusOr<ProcessRef> sds = Start("sds", node.name, "nodeward-sds",
                                             {.argv = sds_argv,
                                              .netns_path = NodeNetnsPath(node.name),
                                              .cgroup_dir = "",
                                              .log_path = sds_log});
      if (!sds.ok()) return sds.status();
      if (absl::Status s = WaitUntil(absl::StrCat("nodeward-sds of ", node.name), *sds, sds_log,
                                     [&] { return Exists(sds_socket); });
          !s.ok()) {
        return s;
      }

      const std::string pin = absl::StrCat(PinPrefix(spec_.name), node.name);
      if (absl::Status s = Record(absl::StrCat("pin\t", pin)); !s.ok()) return s;
      const std::string enroll_socket = absl::StrCat(dir, "/enroll.sock");
      std::vector<std::string> argv = {
          Bin("nodeward-agent"),
          absl::StrCat("--attach-cgroup=", NodeCgroup(node.name)),
          absl::StrCat("--bpf-pin-path=", pin),
          absl::StrCat("--enroll-socket=", enroll_socket),
          absl::StrCat("--state-dir=", dir, "/state"),
          "--cleanup-on-exit",
      };
      const std::vector<std::pair<std::string, std::string>> optional = {
          {"config-dir", absl::StrCat(run_dir_, "/config")},
          {"sds-socket", sds_socket},
          {"node-name", node.name},
          {"access-log", absl::StrCat(dir, "/access.log")},
          {"trust-domain", spec_.trust_domain},
      };
      for (const auto& [flag, value] : optional) {
        if (AgentHasFlag(flag)) {
          argv.push_back(absl::StrCat("--", flag, "=", value));
        } else {
          missing_agent_flags_.insert(flag);
        }
      }
      // For `restart`: the same agent again.
      if (absl::Status s =
              WriteFile(absl::StrCat(dir, "/", kAgentArgvFile), absl::StrJoin(argv, "\n"));
          !s.ok()) {
        return s;
      }
      const std::string agent_log = absl::StrCat(dir, "/agent.log");
      absl::StatusOr<ProcessRef> agent = Start("agent", node.name, "nodeward-agent",
                                               {.argv = argv,
                                                .netns_path = NodeNetnsPath(node.name),
                                                .cgroup_dir = "",
                                                .log_path = agent_log});
      if (!agent.ok()) return agent.status();
      agents_.push_back({node.name, *agent, enroll_socket, agent_log});
    }
    // Agents start in parallel; wait for all of them.
    for (const AgentProcess& agent : agents_) {
      if (absl::Status s = WaitUntil(
              absl::StrCat("nodeward-agent of ", agent.node), agent.process, agent.log,
              [&] {
                return Exists(agent.socket) &&
                       RunCommand({Bin("nodeward-enroll"), absl::StrCat("--socket=", agent.socket),
                                   "--timeout-seconds=2", "list"},
                                  absl::Seconds(5))
                               .exit_code == 0;
              });
          !s.ok()) {
        return s;
      }
    }
    if (!missing_agent_flags_.empty()) {
      std::cout << "note: this nodeward-agent has no --"
                << absl::StrJoin(missing_agent_flags_, ", --") << "; started without them\n";
    }
    return absl::OkStatus();
  }

  struct PendingApp {
    std::string what, log;
    ProcessRef process;
    std::string ready_line;  // in its log once it serves
  };

  // nodeward-gateway in the pod, as its Deployment would run it: the pod's identity from the
  // downward API (here, flags), its certificate from its node's nodeward-sds, the sandbox's
  // configuration. Its log and access log go to NODE/gateway-POD.log and
  // NODE/gateway-POD-access.log.
  absl::StatusOr<PendingApp> StartGateway(const PodSpec& pod) {
    const std::string log = absl::StrCat(NodeDir(pod.node), "/gateway-", pod.name, ".log");
    std::vector<std::string> labels;
    for (const auto& [key, value] : pod.labels) labels.push_back(absl::StrCat(key, "=", value));
    std::vector<std::string> argv = {
        Bin("nodeward-gateway"),
        absl::StrCat("--config-dir=", run_dir_, "/config"),
        absl::StrCat("--sds-socket=", NodeDir(pod.node), "/sds.sock"),
        absl::StrCat("--trust-domain=", spec_.trust_domain),
        absl::StrCat("--pod-namespace=", pod.namespace_name),
        absl::StrCat("--pod-name=", pod.name),
        absl::StrCat("--service-account=", pod.service_account),
        absl::StrCat("--labels=", absl::StrJoin(labels, ",")),
        absl::StrCat("--access-log=", NodeDir(pod.node), "/gateway-", pod.name, "-access.log"),
        "--log-format=text"};
    absl::StatusOr<ProcessRef> process =
        Start("gateway", pod.node, absl::StrCat(pod.namespace_name, "/", pod.name),
              {.argv = argv,
               .netns_path = NetnsPath(NetnsName(spec_.name, pod.name)),
               .cgroup_dir = NodeCgroup(pod.node),
               .log_path = log});
    if (!process.ok()) return process.status();
    return PendingApp{absl::StrCat("gateway ", pod.name), log, *process, "configuration"};
  }

  absl::Status StartPods() {
    std::vector<PendingApp> apps;
    for (const PodSpec& pod : spec_.pods) {
      if (pod.gateway) {
        absl::StatusOr<PendingApp> gateway = StartGateway(pod);
        if (!gateway.ok()) return gateway.status();
        apps.push_back(*std::move(gateway));
        continue;
      }
      for (int port : pod.ports) {
        const std::string log =
            absl::StrCat(NodeDir(pod.node), "/app-", pod.name, "-", port, ".log");
        std::vector<std::string> argv = {options_.self, "app", "serve",
                                         absl::StrCat("--port=", port)};
        if (!pod.tls_cert.empty()) {
          argv.push_back(absl::StrCat("--tls-cert=", pod.tls_cert));
          argv.push_back(absl::StrCat("--tls-key=", pod.tls_key));
        }
        absl::StatusOr<ProcessRef> app =
            Start("app", pod.node, absl::StrCat(pod.namespace_name, "/", pod.name, ":", port),
                  {.argv = argv,
                   .netns_path = NetnsPath(NetnsName(spec_.name, pod.name)),
                   .cgroup_dir = NodeCgroup(pod.node),
                   .log_path = log});
        if (!app.ok()) return app.status();
        apps.push_back(
            {absl::StrCat("app of ", pod.name, " on port ", port), log, *app, "listening on"});
      }
    }
    for (const PendingApp& app : apps) {
      if (absl::Status s = WaitUntil(
              app.what, app.process, app.log,
              [&] { return absl::StrContains(ReadFile(app.log).value_or(""), app.ready_line); });
          !s.ok()) {
        return s;
      }
    }
    for (const PodSpec& pod : spec_.pods) {
      if (!pod.enrolled) continue;
      std::vector<std::string> labels;
      for (const auto& [key, value] : pod.labels) labels.push_back(absl::StrCat(key, "=", value));
      const std::string socket = absl::StrCat(NodeDir(pod.node), "/enroll.sock");
      std::vector<std::string> argv = {
          Bin("nodeward-enroll"),
          absl::StrCat("--socket=", socket),
          "enroll",
          absl::StrCat("--netns=", NetnsPath(NetnsName(spec_.name, pod.name))),
          absl::StrCat("--uid=", pod.uid),
          absl::StrCat("--namespace=", pod.namespace_name),
          absl::StrCat("--name=", pod.name),
          absl::StrCat("--service-account=", pod.service_account),
          absl::StrCat("--ips=", pod.address)};
      if (!labels.empty()) argv.push_back(absl::StrCat("--labels=", absl::StrJoin(labels, ",")));
      if (absl::Status s = MustRun(argv); !s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat("enrolling ", pod.namespace_name, "/", pod.name, ": ",
                                   s.message(), "\nagent log ", NodeDir(pod.node), "/agent.log:\n",
                                   Tail(absl::StrCat(NodeDir(pod.node), "/agent.log"), 20)));
      }
    }
    return absl::OkStatus();
  }

  struct AgentProcess {
    std::string node;
    ProcessRef process;
    std::string socket, log;
  };

  const UpOptions& options_;
  const SandboxSpec spec_;
  const ClusterConfig config_;
  const std::string run_dir_;
  std::vector<AgentProcess> agents_;
  std::string agent_help_;
  std::set<std::string> missing_agent_flags_;
};

void PrintSummary(const std::string& name) {
  const std::string run_dir = RunDir(name);
  std::vector<NodeRecord> nodes = ReadNodes(run_dir);
  std::vector<PodRecord> pods = ReadPods(run_dir);
  std::cout << "sandbox " << name << " (" << run_dir << ")\n";
  std::cout << "nodes:\n";
  for (const NodeRecord& node : nodes) {
    std::cout << "  " << node.name << "  " << node.address << "  netns " << node.netns
              << "  cgroup " << node.cgroup << "\n";
  }
  std::cout << "pods:\n";
  size_t width = 0;
  for (const PodRecord& pod : pods) {
    width = std::max(width, pod.namespace_name.size() + pod.name.size() + 1);
  }
  for (const PodRecord& pod : pods) {
    std::string id = absl::StrCat(pod.namespace_name, "/", pod.name);
    id.resize(width, ' ');
    std::cout << "  " << id << "  node " << pod.node << "  ip " << pod.address << "  sa "
              << pod.service_account << "  ports " << (pod.ports.empty() ? "-" : pod.ports) << "  "
              << (pod.enrolled ? "enrolled" : "not enrolled") << "\n";
  }
}

}  // namespace

absl::Status Up(const UpOptions& options) {
  if (absl::Status s = CheckRoot(); !s.ok()) return s;
  absl::StatusOr<SandboxSpec> spec = LoadSandboxFile(options.file);
  if (!spec.ok()) return spec.status();
  if (!options.name.empty()) {
    if (absl::Status renamed = RenameSandbox(*spec, options.name); !renamed.ok()) return renamed;
  }
  absl::StatusOr<ClusterConfig> config = LoadConfigDir(spec->config_dir);
  if (!config.ok()) return config.status();
  DecideEnrollment(*config, *spec);

  std::vector<std::string> binaries = {absl::StrCat(options.bin_dir, "/nodeward-agent"),
                                       absl::StrCat(options.bin_dir, "/nodeward-sds"),
                                       absl::StrCat(options.bin_dir, "/nodeward-enroll"),
                                       options.self};
  for (const std::string& binary : binaries) {
    if (access(binary.c_str(), X_OK) != 0) {
      return absl::NotFoundError(
          absl::StrCat(binary, " is missing or not executable (pass --bin-dir=DIR)"));
    }
  }
  const std::string& name = spec->name;
  if (Exists(RunDir(name)) || !SandboxNetns(name, {}).empty() || Exists(SandboxCgroup(name)) ||
      !SandboxPins(name, {}).empty()) {
    return absl::AlreadyExistsError(absl::StrCat("sandbox ", name,
                                                 " exists (or left objects behind); run "
                                                 "`nodeward-sandbox down ",
                                                 name, "` first"));
  }

  Builder builder(options, *spec, *std::move(config));
  absl::Status built = builder.Build();
  if (!built.ok()) {
    if (options.keep_on_failure) {
      return absl::Status(
          built.code(), absl::StrCat(built.message(), "\n(kept for inspection under ", RunDir(name),
                                     "; remove with `nodeward-sandbox down ", name, "`)"));
    }
    if (absl::Status removed = Down(name); !removed.ok()) {
      return absl::Status(
          built.code(),
          absl::StrCat(built.message(), "\nand removing it failed: ", removed.message()));
    }
    return absl::Status(built.code(),
                        absl::StrCat(built.message(), "\n(everything created was removed)"));
  }
  PrintSummary(name);
  std::cout << "ready: logs under " << RunDir(name) << "/<node>/; run `nodeward-sandbox down "
            << name << "` to remove it\n";
  return absl::OkStatus();
}

absl::Status Down(const std::string& name) {
  if (absl::Status s = ValidateSandboxName(name); !s.ok()) return s;
  if (absl::Status s = CheckRoot(); !s.ok()) return s;
  const std::string run_dir = RunDir(name);
  const Objects objects = ReadObjects(run_dir);
  std::vector<std::string> problems;

  // Agents first, and gracefully: with --cleanup-on-exit they unenroll their pods (which needs
  // the pod namespaces) and remove their BPF state.
  std::vector<ProcessRef> agents;
  for (const ProcessRecord& p : objects.processes) {
    if (p.role == "agent" && IsAlive(p.ref)) {
      kill(p.ref.pid, SIGTERM);
      agents.push_back(p.ref);
    }
  }
  for (const ProcessRef& agent : agents) Stop(agent, absl::Seconds(10));
  std::vector<ProcessRef> others;
  for (const ProcessRecord& p : objects.processes) {
    if (p.role != "agent" && IsAlive(p.ref)) {
      kill(p.ref.pid, SIGTERM);
      others.push_back(p.ref);
    }
  }
  for (const ProcessRef& process : others) Stop(process, absl::Seconds(2));

  // Leftovers not in the records (a crash between fork and record, `exec` sessions): anything
  // still in one of the sandbox's cgroups or network namespaces.
  const std::vector<std::string> netns = SandboxNetns(name, objects);
  std::set<uint64_t> inodes;
  for (const std::string& ns : netns) {
    if (uint64_t inode = InodeOf(NetnsPath(ns)); inode != 0) inodes.insert(inode);
  }
  std::vector<std::string> cgroups;
  const std::string sandbox_cgroup = SandboxCgroup(name);
  for (const std::string& entry : ListDirectory(sandbox_cgroup)) {
    const std::string path = absl::StrCat(sandbox_cgroup, "/", entry);
    struct stat info {};
    if (stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) cgroups.push_back(path);
  }
  if (Exists(sandbox_cgroup)) cgroups.push_back(sandbox_cgroup);  // children first
  for (const std::string& cgroup : cgroups) {
    (void)WriteFile(absl::StrCat(cgroup, "/cgroup.kill"), "1");
  }
  for (const ProcessRef& process : ProcessesInNetns(inodes)) Stop(process, absl::Seconds(2));

  for (const std::string& ns : netns) {
    if (!Exists(NetnsPath(ns))) continue;
    if (absl::Status s = MustRun({"ip", "netns", "del", ns}); !s.ok()) {
      problems.push_back(std::string(s.message()));
    }
  }
  for (const std::string& cgroup : cgroups) {
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (rmdir(cgroup.c_str()) != 0 && errno != ENOENT) {
      if (absl::Now() > deadline) {
        problems.push_back(absl::StrCat("rmdir ", cgroup, ": ", std::strerror(errno)));
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  // The agents remove their pins on a clean exit; unpinning is what detaches the links of one
  // that died.
  for (const std::string& pin : SandboxPins(name, objects)) {
    if (absl::Status s = RemoveTree(pin); !s.ok()) problems.push_back(std::string(s.message()));
  }
  if (absl::Status s = RemoveTree(run_dir); !s.ok()) problems.push_back(std::string(s.message()));

  if (!SandboxNetns(name, {}).empty()) {
    problems.push_back(
        absl::StrCat("network namespaces left: ", absl::StrJoin(SandboxNetns(name, {}), " ")));
  }
  if (!problems.empty()) {
    return absl::InternalError(
        absl::StrCat("removing sandbox ", name, ":\n  ", absl::StrJoin(problems, "\n  ")));
  }
  return absl::OkStatus();
}

absl::Status RestartAgent(const std::string& name, const std::string& node, absl::Duration down_for,
                          absl::Duration ready_timeout) {
  if (absl::Status s = ValidateSandboxName(name); !s.ok()) return s;
  if (absl::Status s = CheckRoot(); !s.ok()) return s;
  const std::string run_dir = RunDir(name);
  if (!Exists(absl::StrCat(run_dir, "/", kReadyFile))) {
    return absl::NotFoundError(absl::StrCat("no ready sandbox ", name));
  }
  const NodeRecord* found = nullptr;
  const std::vector<NodeRecord> nodes = ReadNodes(run_dir);
  for (const NodeRecord& record : nodes) {
    if (record.name == node) found = &record;
  }
  if (found == nullptr) return absl::NotFoundError(absl::StrCat("no node ", node, " in ", name));
  const std::string dir = absl::StrCat(run_dir, "/", node);
  absl::StatusOr<std::string> argv_text = ReadFile(absl::StrCat(dir, "/", kAgentArgvFile));
  if (!argv_text.ok()) return argv_text.status();
  std::vector<std::string> argv = absl::StrSplit(*argv_text, '\n', absl::SkipEmpty());
  std::string enroll_socket, enroll_binary;
  for (const std::string& arg : argv) {
    if (absl::StartsWith(arg, "--enroll-socket=")) enroll_socket = arg.substr(16);
  }
  if (argv.empty() || enroll_socket.empty()) {
    return absl::InternalError(absl::StrCat(dir, "/", kAgentArgvFile, " is unusable"));
  }
  enroll_binary = absl::StrCat(argv[0].substr(0, argv[0].rfind('/') + 1), "nodeward-enroll");

  // SIGKILL: the agent gets no chance to clean up, so its pinned programs and maps stay and
  // keep the node's enrolled pods failing closed, as after a crash.
  for (const ProcessRecord& p : ReadObjects(run_dir).processes) {
    if (p.role != "agent" || p.node != node || !IsAlive(p.ref)) continue;
    kill(p.ref.pid, SIGKILL);
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (IsAlive(p.ref) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    if (IsAlive(p.ref))
      return absl::InternalError(absl::StrCat("agent ", p.ref.pid, " survived SIGKILL"));
  }
  std::cout << "agent of " << node << " killed; starting it again in "
            << absl::FormatDuration(down_for) << "\n"
            << std::flush;
  absl::SleepFor(down_for);

  const std::string log = absl::StrCat(dir, "/agent.log");
  absl::StatusOr<ProcessRef> agent =
      Spawn({.argv = argv,
             .netns_path = found->netns.empty() ? "" : NetnsPath(found->netns),
             .cgroup_dir = "",
             .log_path = log});
  if (!agent.ok()) return agent.status();
  if (absl::Status s = AppendLine(absl::StrCat(run_dir, "/", kObjectsFile),
                                  absl::StrCat("process\tagent\t", node, "\t", agent->pid, "\t",
                                               agent->start_time, "\tnodeward-agent"));
      !s.ok()) {
    kill(agent->pid, SIGKILL);
    return s;
  }
  const absl::Time deadline = absl::Now() + ready_timeout;
  while (true) {
    if (!IsAlive(*agent)) {
      return absl::InternalError(absl::StrCat("restarted nodeward-agent of ", node, " ",
                                              DescribeExit(*agent), "; last lines of ", log, ":\n",
                                              Tail(log, 20)));
    }
    if (Exists(enroll_socket) &&
        RunCommand({enroll_binary, absl::StrCat("--socket=", enroll_socket), "--timeout-seconds=2",
                    "list"},
                   absl::Seconds(5))
                .exit_code == 0) {
      break;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("restarted nodeward-agent of ", node,
                                                      " not ready; last lines of ", log, ":\n",
                                                      Tail(log, 20)));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::cout << "agent of " << node << " is back (pid " << agent->pid << ")\n";
  return absl::OkStatus();
}

absl::Status PrintStatus(const std::string& name) {
  if (absl::Status s = ValidateSandboxName(name); !s.ok()) return s;
  const std::string run_dir = RunDir(name);
  if (!Exists(run_dir)) {
    std::vector<std::string> netns = SandboxNetns(name, {});
    if (!netns.empty() || Exists(SandboxCgroup(name))) {
      return absl::NotFoundError(absl::StrCat("sandbox ", name, " has no state in ", run_dir,
                                              " but left objects behind; run "
                                              "`nodeward-sandbox down ",
                                              name, "`"));
    }
    return absl::NotFoundError(absl::StrCat("no sandbox ", name, " (", run_dir, " is missing)"));
  }
  PrintSummary(name);
  std::cout << "processes:\n";
  for (const ProcessRecord& p : ReadObjects(run_dir).processes) {
    std::cout << "  " << (IsAlive(p.ref) ? "alive " : "DEAD  ") << p.ref.pid << "  " << p.node
              << "  " << p.detail << "\n";
  }
  std::cout << "state: "
            << (Exists(absl::StrCat(run_dir, "/", kReadyFile)) ? "ready"
                                                               : "not ready (up failed "
                                                                 "or is running)")
            << "\n";
  return absl::OkStatus();
}

namespace {

// Replaces this process with `argv` inside the netns at `netns_path`; returns only on failure.
absl::Status ExecInNetns(const std::string& netns_path, const std::vector<std::string>& argv) {
  if (absl::Status s = EnterNetns(netns_path); !s.ok()) return s;
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  return absl::ErrnoToStatus(errno, absl::StrCat("cannot execute ", argv[0]));
}

}  // namespace

absl::Status ExecInPod(const std::string& name, const std::string& pod,
                       const std::vector<std::string>& argv) {
  if (absl::Status s = ValidateSandboxName(name); !s.ok()) return s;
  if (argv.empty()) return absl::InvalidArgumentError("no command given after --");
  const std::string run_dir = RunDir(name);
  if (!Exists(run_dir)) return absl::NotFoundError(absl::StrCat("no sandbox ", name));
  if (pod == kOutside) {
    // Not a pod: no node, no cgroup of the sandbox.
    const std::string netns = NetnsPath(NetnsName(name, kOutside));
    if (!Exists(netns)) {
      return absl::NotFoundError(
          absl::StrCat("sandbox ", name, " has no outside network (outside: true in its file)"));
    }
    return ExecInNetns(netns, argv);
  }
  const PodRecord* found = nullptr;
  std::vector<PodRecord> pods = ReadPods(run_dir);
  for (const PodRecord& record : pods) {
    if (pod == record.name || pod == absl::StrCat(record.namespace_name, "/", record.name)) {
      found = &record;
      break;
    }
  }
  if (found == nullptr) {
    std::vector<std::string> names;
    for (const PodRecord& record : pods) {
      names.push_back(absl::StrCat(record.namespace_name, "/", record.name));
    }
    return absl::NotFoundError(absl::StrCat("no pod ", pod, " in sandbox ", name,
                                            " (pods: ", absl::StrJoin(names, " "), ")"));
  }
  // The cgroup first: a socket belongs to the cgroup its creator is in, and the connect hooks
  // only see sockets of the node's cgroup.
  if (absl::Status s = JoinCgroup(found->cgroup); !s.ok()) return s;
  return ExecInNetns(NetnsPath(found->netns), argv);
}

}  // namespace nodeward::sandbox
