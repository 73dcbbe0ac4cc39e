// nodeward-agent: the node agent. Loads and attaches the capture programs, serves the
// enrollment API on a Unix socket, keeps the certificates of its pods' service accounts (from
// nodeward-sds) and carries captured connections as policy decides.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "agent/admin/admin_service.h"
#include "agent/admin/http_endpoints.h"
#include "agent/capture/enrollment_manager.h"
#include "agent/capture/enrollment_service.h"
#include "agent/capture/netns_executor.h"
#include "agent/daemon/node_enrollment.h"
#include "agent/io/heap_trim.h"
#include "agent/proxy/access_log.h"
#include "agent/proxy/credentials.h"
#include "agent/proxy/data_plane.h"
#include "agent/proxy/proxy_flags.h"
#include "bpf/capture_loader.h"
#include "common/dashed_flags.h"
#include "common/files.h"
#include "common/log.h"
#include "common/node_name.h"
#include "grpcpp/grpcpp.h"
#include "policy/directory_source.h"
#include "policy/kube_source.h"
#include "sds/certificate_cache.h"

ABSL_FLAG(std::string, attach_cgroup, "",
          "cgroup-v2 directory the connect hooks attach to: the cgroup-v2 root on a node, a "
          "cgroup holding only the pods' processes anywhere else (required)");
ABSL_FLAG(std::string, bpf_pin_path, "/sys/fs/bpf/nodeward",
          "bpffs directory for pinned maps and links (bpffs is mounted if missing)");
ABSL_FLAG(std::string, enroll_socket, "/var/run/nodeward/enroll.sock",
          "Unix socket serving the enrollment API");
ABSL_FLAG(std::string, state_dir, "/var/run/nodeward/pods",
          "directory recording enrolled pods, so a restarted agent takes them back");
ABSL_FLAG(std::string, admin_socket, "",
          "Unix socket of the admin API (nodewardctl); default: admin.sock next to "
          "--enroll-socket");
ABSL_FLAG(int, admin_port, 15000, "admin API on the node's 127.0.0.1 (0: off)");
ABSL_FLAG(int, metrics_port, 15020, "Prometheus /metrics on --metrics-address (0: off)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1",
          "IPv4 address /metrics listens on: 0.0.0.0 lets Prometheus scrape the node's address");
ABSL_FLAG(int, readiness_port, 15021, "/healthz/ready and /healthz/live on 127.0.0.1 (0: off)");
ABSL_FLAG(std::string, mode, "mesh",
          "mesh: apply policy (HBONE mTLS, TLS origination, plaintext, refuse); passthrough: "
          "relay captured connections unchanged (capture diagnostics only, no protection)");
ABSL_FLAG(std::string, config_dir, "",
          "directory of Kubernetes YAML (Namespaces, Pods, Services, PeerAuthentication, "
          "DestinationRule), reloaded on change; without it the Kubernetes API is watched "
          "with the in-cluster service account");
ABSL_FLAG(std::string, node_name, "", "this node's name (default: the host name)");
ABSL_FLAG(bool, enroller, true,
          "follow this node's pods and their namespaces and keep them enrolled as the labels "
          "say (at start, on label changes, and for nodeward-cni at pod creation)");
ABSL_FLAG(std::string, cni_socket, "",
          "socket nodeward-cni calls (default: cni.sock next to --enroll-socket)");
ABSL_FLAG(std::string, cni_state_dir, "",
          "where nodeward-cni records each pod sandbox (default: cni-pods next to "
          "--enroll-socket)");
ABSL_FLAG(std::string, enrolled_namespaces_file, "",
          "written with the enrolled namespaces; nodeward-cni decides by it while the agent is "
          "away (default: enrolled-namespaces next to --enroll-socket)");
ABSL_FLAG(std::string, proc_root, "/proc",
          "the host's /proc, where already running pods are found by their cgroup");
ABSL_FLAG(std::string, owner_daemonset, "",
          "namespace/name of the DaemonSet running this agent: stopped while it is gone or "
          "being deleted, the agent uninstalls (as --cleanup-on-exit, and nodeward-cni too)");
ABSL_FLAG(std::string, cni_net_dir, "",
          "the node's CNI configuration directory: nodeward-cni's entry is put back when the "
          "node's CNI rewrites its file, and taken out on uninstall");
ABSL_FLAG(std::string, cni_bin_dir, "", "the node's CNI plugin directory, likewise");
ABSL_FLAG(bool, cleanup_on_exit, false,
          "on SIGTERM/SIGINT unenroll every pod and remove all BPF state. Without it the pinned "
          "programs keep enrolled pods failing closed until the agent is back");

namespace nodeward {
namespace {

std::string NodeName() { return NodeNameOr(absl::GetFlag(FLAGS_node_name)); }

// `flag`, or `name` in the directory of --enroll-socket.
std::string NextToEnrollSocket(const std::string& flag, const std::string& name) {
  if (!flag.empty()) return flag;
  const std::string socket = absl::GetFlag(FLAGS_enroll_socket);
  return absl::StrCat(socket.substr(0, socket.rfind('/') + 1), name);
}

// The policy source, the certificate cache and the access log, then the data plane on top.
absl::StatusOr<std::unique_ptr<proxy::DataPlane>> StartMesh(
    std::unique_ptr<policy::ConfigSource>& config,
    std::unique_ptr<sds::CertificateCache>& certificates,
    std::unique_ptr<proxy::MeshCredentials>& credentials,
    std::unique_ptr<proxy::AccessLog>& access_log) {
  policy::SnapshotOptions snapshot;
  snapshot.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  const std::string dir = absl::GetFlag(FLAGS_config_dir);
  absl::StatusOr<std::unique_ptr<policy::ConfigSource>> source =
      policy::StartDirectoryOrKubeSource(dir, snapshot);
  if (!source.ok()) return source.status();
  config = *std::move(source);
  Log(LogLevel::kInfo, "policy from ", dir.empty() ? "the Kubernetes API" : dir);
  sds::CertificateCacheOptions cache_options;
  cache_options.sds.socket_path = absl::GetFlag(FLAGS_sds_socket);
  cache_options.sds.node_id = NodeName();
  certificates = std::make_unique<sds::CertificateCache>(cache_options);
  certificates->Start();
  credentials = std::make_unique<proxy::CachedMeshCredentials>(certificates.get());
  absl::StatusOr<std::unique_ptr<proxy::AccessLog>> log =
      proxy::AccessLog::Open(absl::GetFlag(FLAGS_access_log));
  if (!log.ok()) return log.status();
  access_log = *std::move(log);
  absl::StatusOr<proxy::ProxyOptions> options = proxy::ProxyOptionsFromFlags();
  if (!options.ok()) return options.status();
  return proxy::DataPlane::Create(*options, config.get(), credentials.get(), access_log.get());
}

int Run() {
  if (absl::Status log = proxy::ConfigureLogFromFlags(); !log.ok()) {
    Log(LogLevel::kError, log.ToString());
    return 2;
  }
  for (int port : {absl::GetFlag(FLAGS_admin_port), absl::GetFlag(FLAGS_metrics_port),
                   absl::GetFlag(FLAGS_readiness_port)}) {
    if (port < 0 || port > 65535) {
      Log(LogLevel::kError, "port ", port, " out of range");
      return 2;
    }
  }
  if (absl::GetFlag(FLAGS_attach_cgroup).empty()) {
    Log(LogLevel::kError, "--attach-cgroup is required");
    return 2;
  }

  // Signals are taken synchronously by the main thread; every thread started below inherits
  // the blocked mask, so none of them is interrupted by SIGTERM.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Two agents on one state directory would fight over the same pods, links and listeners.
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  if (absl::Status status = MakeParentDirectories(absl::StrCat(state_dir, "/agent.lock"), 0755);
      !status.ok()) {
    Log(LogLevel::kError, status.ToString());
    return 1;
  }
  const std::string lock_path = absl::StrCat(state_dir, "/agent.lock");
  int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    Log(LogLevel::kError, "another agent holds ", lock_path, ": ", std::strerror(errno));
    return 1;
  }

  absl::StatusOr<std::unique_ptr<bpf::CaptureLoader>> loader = bpf::CaptureLoader::Open(
      {absl::GetFlag(FLAGS_attach_cgroup), absl::GetFlag(FLAGS_bpf_pin_path)});
  if (!loader.ok()) {
    Log(LogLevel::kError, "capture programs not loaded: ", loader.status().ToString());
    return 1;
  }
  Log(LogLevel::kInfo, "capture attached to cgroup ", absl::GetFlag(FLAGS_attach_cgroup),
      ", state pinned under ", (*loader)->pin_path());

  capture::NetnsExecutor executor;
  std::unique_ptr<proxy::DataPlane> data_plane;
  std::unique_ptr<policy::ConfigSource> config;
  std::unique_ptr<sds::CertificateCache> certificates;
  std::unique_ptr<proxy::MeshCredentials> credentials;
  std::unique_ptr<proxy::AccessLog> access_log;
  if (absl::GetFlag(FLAGS_mode) == "passthrough") {
    // The same data plane, with every connection carried unchanged: no policy, no certificates.
    proxy::ProxyOptions options;
    options.passthrough = true;
    options.workers = absl::GetFlag(FLAGS_workers);
    absl::StatusOr<std::unique_ptr<proxy::AccessLog>> log =
        proxy::AccessLog::Open(absl::GetFlag(FLAGS_access_log));
    if (!log.ok()) {
      Log(LogLevel::kError, log.status().ToString());
      return 1;
    }
    access_log = *std::move(log);
    absl::StatusOr<std::unique_ptr<proxy::DataPlane>> built =
        proxy::DataPlane::Create(options, nullptr, nullptr, access_log.get());
    if (!built.ok()) {
      Log(LogLevel::kError, built.status().ToString());
      return 1;
    }
    data_plane = *std::move(built);
    Log(LogLevel::kWarning, "passthrough mode: captured connections are relayed unprotected");
  } else if (absl::GetFlag(FLAGS_mode) == "mesh") {
    absl::StatusOr<std::unique_ptr<proxy::DataPlane>> built =
        StartMesh(config, certificates, credentials, access_log);
    if (!built.ok()) {
      Log(LogLevel::kError, built.status().ToString());
      return 1;
    }
    data_plane = *std::move(built);
  } else {
    Log(LogLevel::kError, "--mode must be mesh or passthrough, not ", absl::GetFlag(FLAGS_mode));
    return 2;
  }
  absl::StatusOr<std::unique_ptr<capture::EnrollmentManager>> manager =
      capture::EnrollmentManager::Create(loader->get(), data_plane.get(), &executor, {state_dir});
  if (!manager.ok()) {
    Log(LogLevel::kError, manager.status().ToString());
    return 1;
  }
  if (absl::Status restored = (*manager)->Restore(); !restored.ok()) {
    Log(LogLevel::kWarning, "restoring enrolled pods: ", restored.ToString());
  }
  const std::string enrolled_namespaces_file =
      NextToEnrollSocket(absl::GetFlag(FLAGS_enrolled_namespaces_file), "enrolled-namespaces");
  std::unique_ptr<daemon::NodeEnrollment> node_enrollment;
  // Passthrough needs no configuration; without one there are no pods to follow either.
  const bool nothing_to_follow = config == nullptr && absl::GetFlag(FLAGS_config_dir).empty() &&
                                 !policy::KubeSourceOptions::InCluster().ok();
  if (absl::GetFlag(FLAGS_enroller) && nothing_to_follow) {
    Log(LogLevel::kInfo, "no configuration and not in a cluster: pods are enrolled only through ",
        "the enrollment API");
  } else if (absl::GetFlag(FLAGS_enroller)) {
    daemon::NodeEnrollmentOptions options;
    options.node_name = NodeName();
    options.cni_socket = NextToEnrollSocket(absl::GetFlag(FLAGS_cni_socket), "cni.sock");
    options.cni_state_dir = NextToEnrollSocket(absl::GetFlag(FLAGS_cni_state_dir), "cni-pods");
    options.enrolled_namespaces_file = enrolled_namespaces_file;
    options.proc_root = absl::GetFlag(FLAGS_proc_root);
    options.cni_net_dir = absl::GetFlag(FLAGS_cni_net_dir);
    options.config_dir = absl::GetFlag(FLAGS_config_dir);
    options.snapshot.trust_domain = absl::GetFlag(FLAGS_trust_domain);
    absl::StatusOr<std::unique_ptr<daemon::NodeEnrollment>> started =
        daemon::NodeEnrollment::Start(options, manager->get(), config.get());
    if (!started.ok()) {
      Log(LogLevel::kError, "node enrollment: ", started.status().ToString());
      return 1;
    }
    node_enrollment = *std::move(started);
  }

  const std::string socket_path = absl::GetFlag(FLAGS_enroll_socket);
  if (absl::Status status = MakeParentDirectories(socket_path, 0755); !status.ok()) {
    Log(LogLevel::kError, status.ToString());
    return 1;
  }
  unlink(socket_path.c_str());  // a stale socket of a previous run
  capture::EnrollmentService service(manager->get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", socket_path), grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  // Only root may enroll: the socket is created owner-only rather than tightened afterwards.
  const mode_t previous_umask = umask(0077);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(previous_umask);
  if (server == nullptr) {
    Log(LogLevel::kError, "cannot serve enrollment API on ", socket_path);
    return 1;
  }
  Log(LogLevel::kInfo, "enrollment API on unix:", socket_path);

  admin::AgentView view;
  view.node_name = NodeName();
  view.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  view.enrollment = manager->get();
  view.enroller = node_enrollment != nullptr ? node_enrollment->enroller() : nullptr;
  view.dataplane = loader->get();
  view.bpf_pin_path = (*loader)->pin_path();
  view.bpf_attached = {
      absl::StrCat("cgroup/connect4, cgroup/connect6, getpeername4/6, sockops on ",
                   absl::GetFlag(FLAGS_attach_cgroup)),
      "sk_lookup linked into each enrolled pod's netns (pinned under the pin path)"};
  view.config = config.get();
  view.config_description = absl::GetFlag(FLAGS_config_dir).empty()
                                ? "kubernetes"
                                : absl::StrCat("directory ", absl::GetFlag(FLAGS_config_dir));
  view.certificates = certificates.get();
  view.sds_socket = absl::GetFlag(FLAGS_sds_socket);
  view.data_plane = data_plane.get();
  admin::AdminService admin_service(view);
  std::string admin_socket = absl::GetFlag(FLAGS_admin_socket);
  if (admin_socket.empty()) {
    admin_socket = absl::StrCat(socket_path.substr(0, socket_path.rfind('/') + 1), "admin.sock");
  }
  unlink(admin_socket.c_str());
  grpc::ServerBuilder admin_builder;
  admin_builder.AddListeningPort(absl::StrCat("unix:", admin_socket),
                                 grpc::InsecureServerCredentials());
  if (const int port = absl::GetFlag(FLAGS_admin_port); port != 0) {
    admin_builder.AddListeningPort(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureServerCredentials());
  }
  admin_builder.RegisterService(&admin_service);
  const mode_t admin_umask = umask(0077);
  std::unique_ptr<grpc::Server> admin_server = admin_builder.BuildAndStart();
  umask(admin_umask);
  if (admin_server == nullptr) {
    Log(LogLevel::kError, "cannot serve the admin API on unix:", admin_socket,
        " and 127.0.0.1:", absl::GetFlag(FLAGS_admin_port));
    return 1;
  }
  Log(LogLevel::kInfo, "admin API on unix:", admin_socket);
  absl::StatusOr<std::vector<std::unique_ptr<admin::HttpEndpoint>>> endpoints =
      admin::StartProbeEndpoints({
          .metrics_host = absl::GetFlag(FLAGS_metrics_address),
          .metrics_port = static_cast<std::uint16_t>(absl::GetFlag(FLAGS_metrics_port)),
          .metrics = [&view] { return admin::RenderMetrics(view); },
          .readiness_host = "127.0.0.1",
          .readiness_port = static_cast<std::uint16_t>(absl::GetFlag(FLAGS_readiness_port)),
          .ready = [&view] { return admin::CheckReadiness(view); },
      });
  if (!endpoints.ok()) {
    Log(LogLevel::kError, endpoints.status().ToString());
    return 1;
  }

  int received = 0;
  while (sigwait(&signals, &received) != 0) {
  }
  Log(LogLevel::kInfo, "signal ", received, ", shutting down");
  bool cleanup = absl::GetFlag(FLAGS_cleanup_on_exit);
  if (node_enrollment != nullptr) node_enrollment->StopServing();
  if (std::string owner = absl::GetFlag(FLAGS_owner_daemonset); !owner.empty()) {
    std::string why;
    const daemon::StopKind kind = daemon::DecideStop(owner, &why);
    Log(LogLevel::kInfo, why,
        kind == daemon::StopKind::kUninstall
            ? ": uninstalling from this node"
            : ": a restart or upgrade, capture and nodeward-cni stay");
    if (kind == daemon::StopKind::kUninstall) {
      cleanup = true;
      // First, so no new pod waits for an agent that is not coming back.
      absl::Status status =
          daemon::UninstallCni({absl::GetFlag(FLAGS_cni_net_dir), absl::GetFlag(FLAGS_cni_bin_dir),
                                enrolled_namespaces_file});
      Log(status.ok() ? LogLevel::kInfo : LogLevel::kError, "nodeward-cni ",
          status.ok() ? "removed from the node" : absl::StrCat("removal: ", status.ToString()));
    }
  }
  node_enrollment.reset();
  server->Shutdown();
  server.reset();
  unlink(socket_path.c_str());
  endpoints->clear();
  admin_server->Shutdown();
  admin_server.reset();
  unlink(admin_socket.c_str());
  int exit_code = 0;
  {
    const absl::Duration grace = absl::GetFlag(FLAGS_drain_timeout);
    const std::size_t cut = data_plane->Drain(grace);
    Log(LogLevel::kInfo, "drained",
        cut > 0 ? absl::StrCat(": ", cut, " connections cut after ", absl::FormatDuration(grace))
                : "");
  }
  if (cleanup) {
    if (absl::Status status = (*manager)->UnenrollAll(); !status.ok()) {
      Log(LogLevel::kError, "unenrolling: ", status.ToString());
      exit_code = 1;
    }
  }
  (*manager)->Stop();
  manager->reset();
  data_plane.reset();
  if (certificates != nullptr) certificates->Stop();
  if (cleanup) {
    if (absl::Status status = (*loader)->DetachAll(); !status.ok()) {
      Log(LogLevel::kError, "detaching capture: ", status.ToString());
      exit_code = 1;
    }
    Log(LogLevel::kInfo, "capture detached");
  } else {
    // Pinned links and maps stay: enrolled pods' connections are refused, not leaked in
    // plaintext, until an agent adopts them again.
    Log(LogLevel::kInfo, "capture left pinned; enrolled pods fail closed until restart");
  }
  return exit_code;
}

}  // namespace
}  // namespace nodeward

int main(int argc, char** argv) {
  nodeward::io::ConfigureHeapThresholds();
#ifdef NDEBUG
  // abseil's lock-order graph is updated on every contended lock of the data path (certificate
  // and pod lookups, the access log); debug and sanitizer builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::SetProgramUsageMessage("nodeward node agent: --attach-cgroup=<cgroup-v2 dir> [flags]");
  std::vector<std::string> arguments;
  std::vector<char*> normalized = nodeward::DashedFlagsToUnderscores(argc, argv, arguments);
  absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  return nodeward::Run();
}
