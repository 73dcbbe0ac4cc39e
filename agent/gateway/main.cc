// nodeward-gateway: the ingress gateway. Runs in its own pod (a Deployment behind a
// LoadBalancer Service), serves the ports of the Istio Gateways that select it, terminates or
// passes through its clients' TLS, and carries each connection into the mesh as its own
// workload: HBONE mTLS with its service account's SPIFFE ID (its certificate from
// nodeward-sds), TLS origination or plaintext, as the destination's DestinationRule and auto
// mTLS say.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/admin/http_endpoints.h"
#include "agent/gateway/gateway_admin.h"
#include "agent/gateway/gateway_server.h"
#include "agent/io/heap_trim.h"
#include "agent/proxy/access_log.h"
#include "agent/proxy/credentials.h"
#include "agent/proxy/proxy_flags.h"
#include "common/dashed_flags.h"
#include "common/log.h"
#include "common/node_name.h"
#include "grpcpp/grpcpp.h"
#include "policy/kube_source.h"
#include "sds/certificate_cache.h"

ABSL_FLAG(std::string, config_dir, "",
          "directory of Kubernetes YAML (Gateways, VirtualServices, Secrets, Services, Pods, "
          "DestinationRules...), reloaded on change; without it the Kubernetes API is watched "
          "with the in-cluster service account");
ABSL_FLAG(std::string, pod_namespace, "",
          "the gateway pod's namespace (default: $POD_NAMESPACE); Secrets are read from it");
ABSL_FLAG(std::string, pod_name, "", "the gateway pod's name (default: $POD_NAME)");
ABSL_FLAG(std::string, service_account, "",
          "the gateway pod's service account, its mesh identity (default: $SERVICE_ACCOUNT, "
          "else the snapshot's Pod, else default)");
ABSL_FLAG(std::string, labels, "",
          "the gateway pod's labels as k=v,k=v, which Gateway selectors match, when the "
          "configuration has no Pod of that name");
ABSL_FLAG(std::string, listen_address,
          "::", "address every Gateway port is served on (:: takes IPv4 too)");
ABSL_FLAG(bool, scope_gateway_to_namespace, false,
          "a Gateway selects only gateway workloads of its own namespace (Istio's "
          "PILOT_SCOPE_GATEWAY_TO_NAMESPACE)");
ABSL_FLAG(int, max_connections, 65536, "live client connections beyond this are refused");
ABSL_FLAG(std::string, admin_address, "127.0.0.1:15000",
          "HOST:PORT of the admin API (nodewardctl --address); empty: off");
ABSL_FLAG(std::string, admin_socket, "", "Unix socket of the admin API too (owner-only)");
ABSL_FLAG(int, metrics_port, 15020, "Prometheus /metrics on --metrics-address (0: off)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0", "IPv4 address /metrics listens on");
ABSL_FLAG(int, readiness_port, 15021, "/healthz/ready and /healthz/live (0: off)");

namespace nodeward {
namespace {

std::string FlagOrEnv(const std::string& flag, const char* variable) {
  if (!flag.empty()) return flag;
  const char* value = std::getenv(variable);
  return value == nullptr ? "" : value;
}

absl::StatusOr<std::map<std::string, std::string>> ParseLabels(const std::string& text) {
  std::map<std::string, std::string> labels;
  for (absl::string_view pair : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--labels: \"", pair, "\" is not key=value"));
    }
    labels[parts[0]] = parts[1];
  }
  return labels;
}

// Ready once it has a configuration, its own certificate and every port bound.
admin::Readiness Readiness(gateway::GatewayServer& server, proxy::MeshCredentials& credentials) {
  std::vector<std::string> problems;
  if (server.config() == nullptr) problems.push_back("no configuration loaded yet");
  if (absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> own =
          credentials.ClientContext(server.identity());
      !own.ok()) {
    problems.push_back(absl::StrCat("no certificate for ", server.identity().ToString(), ": ",
                                    own.status().message()));
  }
  for (const gateway::ServedPort& port : server.Ports()) {
    if (!port.bound.ok()) {
      problems.push_back(absl::StrCat("port ", port.port, ": ", port.bound.message()));
    }
  }
  if (problems.empty()) return {true, "ready\n"};
  return {false, absl::StrCat(absl::StrJoin(problems, "\n"), "\n")};
}

int Run() {
  if (absl::Status log = proxy::ConfigureLogFromFlags(); !log.ok()) {
    Log(LogLevel::kError, log.ToString());
    return 2;
  }
  gateway::GatewayServerOptions options;
  options.workload.namespace_name = FlagOrEnv(absl::GetFlag(FLAGS_pod_namespace), "POD_NAMESPACE");
  options.workload.name = FlagOrEnv(absl::GetFlag(FLAGS_pod_name), "POD_NAME");
  options.workload.service_account =
      FlagOrEnv(absl::GetFlag(FLAGS_service_account), "SERVICE_ACCOUNT");
  absl::StatusOr<std::map<std::string, std::string>> labels =
      ParseLabels(absl::GetFlag(FLAGS_labels));
  if (!labels.ok()) {
    Log(LogLevel::kError, labels.status().ToString());
    return 2;
  }
  options.workload.labels = *std::move(labels);
  if (options.workload.namespace_name.empty() || options.workload.name.empty()) {
    Log(LogLevel::kError,
        "--pod-namespace and --pod-name (or $POD_NAMESPACE and $POD_NAME) are "
        "required: they say which Gateways select this gateway");
    return 2;
  }
  absl::StatusOr<proxy::ProxyOptions> proxy_options = proxy::ProxyOptionsFromFlags();
  if (!proxy_options.ok()) {
    Log(LogLevel::kError, proxy_options.status().ToString());
    return 2;
  }
  options.proxy = *std::move(proxy_options);
  const int max_connections = absl::GetFlag(FLAGS_max_connections);
  if (max_connections <= 0) {
    Log(LogLevel::kError, "--max-connections must be positive");
    return 2;
  }
  options.proxy.max_connections = static_cast<std::size_t>(max_connections);
  for (int port : {absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_readiness_port)}) {
    if (port < 0 || port > 65535) {
      Log(LogLevel::kError, "port ", port, " out of range");
      return 2;
    }
  }
  options.listen_address = absl::GetFlag(FLAGS_listen_address);
  options.policy.scope_to_namespace = absl::GetFlag(FLAGS_scope_gateway_to_namespace);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  policy::SnapshotOptions snapshot;
  snapshot.trust_domain = options.proxy.trust_domain;
  const std::string dir = absl::GetFlag(FLAGS_config_dir);
  absl::StatusOr<std::unique_ptr<policy::ConfigSource>> config =
      policy::StartDirectoryOrKubeSource(dir, snapshot, options.workload.namespace_name);
  if (!config.ok()) {
    Log(LogLevel::kError, "configuration: ", config.status().ToString());
    return 1;
  }
  sds::CertificateCacheOptions cache_options;
  cache_options.sds.socket_path = absl::GetFlag(FLAGS_sds_socket);
  cache_options.sds.node_id = NodeNameOr("");
  sds::CertificateCache certificates(cache_options);
  certificates.Start();
  proxy::CachedMeshCredentials credentials(&certificates);
  absl::StatusOr<std::unique_ptr<proxy::AccessLog>> access_log =
      proxy::AccessLog::Open(absl::GetFlag(FLAGS_access_log));
  if (!access_log.ok()) {
    Log(LogLevel::kError, access_log.status().ToString());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<gateway::GatewayServer>> server =
      gateway::GatewayServer::Create(options, config->get(), &credentials, access_log->get());
  if (!server.ok()) {
    Log(LogLevel::kError, server.status().ToString());
    return 1;
  }
  // ISTIO_MUTUAL servers present the gateway's own mesh certificate and verify clients against
  // the mesh's roots: both follow the certificate cache.
  auto push_mesh_credentials = [&certificates, gateway = server->get()] {
    absl::StatusOr<sds::IdentityCredentials> own = certificates.Get(gateway->identity());
    if (own.ok()) gateway->contexts().SetMeshCredentials(own->credentials, own->bundle.ToPem());
  };
  const int certificate_listener = certificates.AddListener(
      [push_mesh_credentials](const sds::CertificateChange&) { push_mesh_credentials(); });
  push_mesh_credentials();
  Log(LogLevel::kInfo, "gateway ", options.workload.namespace_name, "/", options.workload.name,
      " as ", (*server)->identity().ToString(), ", policy from ",
      dir.empty() ? "the Kubernetes API" : dir);

  absl::StatusOr<std::vector<std::unique_ptr<admin::HttpEndpoint>>> endpoints =
      admin::StartProbeEndpoints({
          .metrics_host = absl::GetFlag(FLAGS_metrics_address),
          .metrics_port = static_cast<std::uint16_t>(absl::GetFlag(FLAGS_metrics_port)),
          .metrics = [&server] { return (*server)->RenderMetrics(); },
          .readiness_host = "0.0.0.0",
          .readiness_port = static_cast<std::uint16_t>(absl::GetFlag(FLAGS_readiness_port)),
          .ready = [&server, &credentials] { return Readiness(**server, credentials); },
      });
  if (!endpoints.ok()) {
    Log(LogLevel::kError, endpoints.status().ToString());
    return 1;
  }

  gateway::GatewayAdminService admin_service(server->get());
  grpc::ServerBuilder admin_builder;
  const std::string admin_address = absl::GetFlag(FLAGS_admin_address);
  const std::string admin_socket = absl::GetFlag(FLAGS_admin_socket);
  if (!admin_address.empty()) {
    admin_builder.AddListeningPort(admin_address, grpc::InsecureServerCredentials());
  }
  if (!admin_socket.empty()) {
    unlink(admin_socket.c_str());
    admin_builder.AddListeningPort(absl::StrCat("unix:", admin_socket),
                                   grpc::InsecureServerCredentials());
  }
  std::unique_ptr<grpc::Server> admin_server;
  if (!admin_address.empty() || !admin_socket.empty()) {
    admin_builder.RegisterService(&admin_service);
    const mode_t admin_umask = umask(0077);
    admin_server = admin_builder.BuildAndStart();
    umask(admin_umask);
    if (admin_server == nullptr) {
      Log(LogLevel::kError, "cannot serve the admin API on ", admin_address, " ", admin_socket);
      return 1;
    }
    Log(LogLevel::kInfo, "admin API on ", admin_address,
        admin_socket.empty() ? "" : " and unix:", admin_socket);
  }

  int received = 0;
  while (sigwait(&signals, &received) != 0) {
  }
  Log(LogLevel::kInfo, "signal ", received, ", shutting down");
  endpoints->clear();
  if (admin_server != nullptr) admin_server->Shutdown();
  const absl::Duration grace = absl::GetFlag(FLAGS_drain_timeout);
  const std::size_t cut = (*server)->Drain(grace);
  Log(LogLevel::kInfo, "drained",
      cut > 0 ? absl::StrCat(": ", cut, " connections cut after ", absl::FormatDuration(grace))
              : "");
  certificates.RemoveListener(certificate_listener);
  server->reset();
  certificates.Stop();
  return 0;
}

}  // namespace
}  // namespace nodeward

int main(int argc, char** argv) {
  nodeward::io::ConfigureHeapThresholds();
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  absl::SetProgramUsageMessage(
      "nodeward ingress gateway: --pod-namespace=NS --pod-name=NAME [--config-dir=DIR] [flags]");
  std::vector<std::string> arguments;
  std::vector<char*> normalized = nodeward::DashedFlagsToUnderscores(argc, argv, arguments);
  absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  return nodeward::Run();
}
