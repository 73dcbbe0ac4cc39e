// nodeward-sds: the node's certificate supplier. Generates a key per workload identity, has it
// signed (built-in CA or an upstream IstioCertificateService), rotates it, and serves Envoy
// SDS v3 on a Unix socket. With --serve-ca it also serves IstioCertificateService over TLS for
// the other nodes of a cluster.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/node_name.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "policy/kube_source.h"
#include "sds/authorizer.h"
#include "sds/ca_client.h"
#include "sds/ca_service.h"
#include "sds/certificate_signer.h"
#include "sds/identity_manager.h"
#include "sds/inventory_authorizer.h"
#include "sds/log.h"
#include "sds/metrics_endpoint.h"
#include "sds/pod_workload_resolver.h"
#include "sds/sds_server.h"
#include "sds/token_review.h"

ABSL_FLAG(std::string, sds_socket, "/var/run/nodeward/sds.sock",
          "Unix socket to serve SDS on (mode 0660); empty to serve no SDS (a CA-only node)");
ABSL_FLAG(std::string, workload_sds_socket, "",
          "Unix socket (mode 0666) for the proxies of pods, to be mounted into them: a caller "
          "gets only its own identity, as \"default\" or by SPIFFE ID, and ROOTCA. Callers are "
          "told apart by their pods (from the workload inventory), which needs the host's PID "
          "namespace");
ABSL_FLAG(std::string, metrics_address, "",
          "<IPv4>:<port> to serve Prometheus metrics on (GET /metrics), e.g. 127.0.0.1:15014; "
          "empty for none");
ABSL_FLAG(int, sds_max_calls_per_caller, 128,
          "SDS streams and fetches one caller (its pod, else its user) may have open at once");
ABSL_FLAG(absl::Duration, cert_lifetime, absl::Hours(24), "Lifetime of workload certificates");
ABSL_FLAG(double, rotation_fraction, 0.5, "Renew when this fraction of the lifetime has passed");
ABSL_FLAG(double, rotation_jitter, 0.1, "Random +/- fraction applied to the renewal time");
ABSL_FLAG(int, issuing_threads, 4, "Concurrent signing requests");
ABSL_FLAG(absl::Duration, identity_idle_grace, absl::Minutes(5),
          "How long a certificate nobody watches is kept");
ABSL_FLAG(std::string, allowed_identities_file, "",
          "SPIFFE IDs this node may hold, one per line; re-read on change and on SIGHUP");
ABSL_FLAG(std::vector<std::string>, allowed_identity, {},
          "SPIFFE IDs this node may hold (comma-separated)");
ABSL_FLAG(std::string, config_dir, "",
          "Authorise from the workload inventory in this directory of Kubernetes YAML (the "
          "agent's --config-dir): a node gets an identity only while a pod of that service "
          "account is scheduled on it. The allow-list flags then add to it");
ABSL_FLAG(bool, kubernetes_inventory, false,
          "Authorise from the workload inventory of the Kubernetes API (in-cluster service "
          "account), as --config-dir does from files");
ABSL_FLAG(std::string, node_name, "",
          "This node's name as pods' spec.nodeName says it (default: the host name)");
ABSL_FLAG(std::string, trust_domain, "cluster.local", "Trust domain of the built-in CA");
ABSL_FLAG(std::string, ca_dir, "/var/lib/nodeward/ca",
          "Directory of the built-in CA (created on first use); re-read on SIGHUP");
ABSL_FLAG(std::string, ca_address, "",
          "Upstream IstioCertificateService host:port (istiod, or nodeward-sds --serve-ca); "
          "when set, the built-in CA is not used for workload certificates");
ABSL_FLAG(std::string, ca_root_file, "", "PEM roots that the upstream CA's certificate chains to");
ABSL_FLAG(std::string, ca_token_file, "", "Bearer token for the upstream CA, re-read per request");
ABSL_FLAG(std::string, ca_server_identity, "",
          "SPIFFE ID the upstream CA must present (for nodeward-sds --serve-ca); when empty the "
          "usual host name check applies");
ABSL_FLAG(std::string, ca_tls_server_name, "", "Host name to check the upstream CA against");
ABSL_FLAG(std::string, cluster_id, "", "ClusterID metadata sent to the upstream CA");
ABSL_FLAG(std::string, serve_ca, "",
          "host:port to serve IstioCertificateService on, over TLS, from the built-in CA");
ABSL_FLAG(std::string, ca_tokens_file, "",
          "For --serve-ca: lines of \"<token> <node-name> [spiffe-id ...]\"; re-read on SIGHUP");
ABSL_FLAG(bool, ca_token_review, false,
          "For --serve-ca: also accept workloads' Kubernetes service-account tokens, checked "
          "with the TokenReview API as istiod does; such a caller gets the certificate of its "
          "own service account");
ABSL_FLAG(std::vector<std::string>, ca_token_audiences, std::vector<std::string>({"istio-ca"}),
          "For --ca-token-review: audiences a token must be valid for (any of them)");
ABSL_FLAG(std::string, kube_token_file, "",
          "Token for the Kubernetes API (default: the pod's service-account token)");
ABSL_FLAG(std::string, kube_ca_file, "",
          "CA of the Kubernetes API server (default: the pod's service-account CA)");
ABSL_FLAG(std::string, ca_serving_identity,
          "spiffe://cluster.local/ns/nodeward-system/sa/nodeward-ca",
          "For --serve-ca: SPIFFE ID of the CA's own serving certificate");
ABSL_FLAG(std::vector<std::string>, ca_serving_dns_names,
          std::vector<std::string>({"istiod.istio-system.svc", "istiod-remote.istio-system.svc",
                                    "istio-pilot.istio-system.svc"}),
          "For --serve-ca: DNS names of the CA's serving certificate (comma-separated or "
          "repeated); istiod's by default, so that clients set up for istiod verify it");
ABSL_FLAG(std::vector<std::string>, ca_serving_ips, {},
          "For --serve-ca: IP addresses of the CA's serving certificate (comma-separated or "
          "repeated), besides the --serve-ca address when it is a specific one");
ABSL_FLAG(absl::Duration, ca_serving_cert_lifetime, absl::Hours(24 * 90),
          "For --serve-ca: lifetime of the CA's serving certificate");
ABSL_FLAG(absl::Duration, ca_max_lifetime, absl::Hours(24 * 7),
          "For --serve-ca: longest certificate lifetime granted");

namespace nodeward::sds {
namespace {

absl::StatusOr<SpiffeId> ParseId(const std::string& text, absl::string_view flag) {
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(text);
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text, ": ", id.status().message()));
  }
  return id;
}

// Every name the CA is reached by: the flags' DNS names and IPs, the address it listens on
// when that is a specific one, and its SPIFFE ID.
absl::StatusOr<crypto::CertificateAuthority::ServerNames> ServingNames() {
  crypto::CertificateAuthority::ServerNames names;
  names.dns = absl::GetFlag(FLAGS_ca_serving_dns_names);
  names.ips = absl::GetFlag(FLAGS_ca_serving_ips);
  std::string host = absl::GetFlag(FLAGS_serve_ca);
  host = host.substr(0, host.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const bool unspecified = host.empty() || host == "0.0.0.0" || host == "::";
  const bool literal = host.find_first_not_of("0123456789.") == std::string::npos ||
                       host.find(':') != std::string::npos;
  if (!unspecified && literal &&
      std::find(names.ips.begin(), names.ips.end(), host) == names.ips.end()) {
    names.ips.push_back(host);
  }
  absl::StatusOr<SpiffeId> id =
      ParseId(absl::GetFlag(FLAGS_ca_serving_identity), "ca-serving-identity");
  if (!id.ok()) return id.status();
  names.spiffe_id = *std::move(id);
  return names;
}

std::string NodeName() { return NodeNameOr(absl::GetFlag(FLAGS_node_name)); }

// The Kubernetes API from inside the cluster, with the token and CA the flags may name.
absl::StatusOr<policy::KubeSourceOptions> KubeApi() {
  absl::StatusOr<policy::KubeSourceOptions> api = policy::KubeSourceOptions::InCluster();
  if (!api.ok()) return api.status();
  if (std::string token = absl::GetFlag(FLAGS_kube_token_file); !token.empty()) {
    api->token_path = token;
  }
  if (std::string ca = absl::GetFlag(FLAGS_kube_ca_file); !ca.empty()) api->ca_path = ca;
  // A TokenReview is one short call: a caller waits for it.
  api->io_timeout = absl::Seconds(5);
  return api;
}

// The workload inventory that authorises identities, or null when no flag asks for one.
absl::StatusOr<std::unique_ptr<policy::ConfigSource>> StartInventory() {
  policy::SnapshotOptions snapshot;
  snapshot.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  const std::string dir = absl::GetFlag(FLAGS_config_dir);
  if (dir.empty() && !absl::GetFlag(FLAGS_kubernetes_inventory)) return nullptr;
  absl::StatusOr<std::unique_ptr<policy::ConfigSource>> source =
      policy::StartDirectoryOrKubeSource(dir, snapshot);
  if (!source.ok()) return source.status();
  LogInfo("identities authorised from the pods scheduled on ", NodeName(), " in ",
          dir.empty() ? "the Kubernetes API" : dir);
  return source;
}

absl::Status Run() {
  crypto::CaOptions ca_options;
  ca_options.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  const bool serve_ca = !absl::GetFlag(FLAGS_serve_ca).empty();
  const bool upstream = !absl::GetFlag(FLAGS_ca_address).empty();
  const std::string sds_socket = absl::GetFlag(FLAGS_sds_socket);
  if (!serve_ca && sds_socket.empty()) {
    return absl::InvalidArgumentError("nothing to do: --sds-socket is empty and no --serve-ca");
  }

  // Flags are checked before anything is created on disk.
  std::vector<SpiffeId> fixed;
  for (const std::string& text : absl::GetFlag(FLAGS_allowed_identity)) {
    absl::StatusOr<SpiffeId> id = ParseId(text, "allowed-identity");
    if (!id.ok()) return id.status();
    fixed.push_back(*id);
  }

  std::shared_ptr<LocalCaSigner> local_ca;
  if (serve_ca || !upstream) {
    absl::StatusOr<std::unique_ptr<LocalCaSigner>> opened =
        LocalCaSigner::Open(absl::GetFlag(FLAGS_ca_dir), ca_options);
    if (!opened.ok()) return opened.status();
    local_ca = *std::move(opened);
  }

  std::shared_ptr<CertificateSigner> workload_signer = local_ca;
  if (upstream) {
    IstioCaClientOptions client;
    client.address = absl::GetFlag(FLAGS_ca_address);
    absl::StatusOr<std::string> roots = ReadFile(absl::GetFlag(FLAGS_ca_root_file));
    if (!roots.ok()) return roots.status();
    client.root_cert_pem = *roots;
    // Served as ROOTCA until the CA's first answer says which roots it signs under.
    client.initial_trust_bundle_pem = *roots;
    client.token_file = absl::GetFlag(FLAGS_ca_token_file);
    if (std::string id = absl::GetFlag(FLAGS_ca_server_identity); !id.empty()) {
      absl::StatusOr<SpiffeId> parsed = ParseId(id, "ca-server-identity");
      if (!parsed.ok()) return parsed.status();
      client.server_identity = *parsed;
    }
    client.tls_server_name = absl::GetFlag(FLAGS_ca_tls_server_name);
    client.cluster_id = absl::GetFlag(FLAGS_cluster_id);
    absl::StatusOr<std::unique_ptr<IstioCaSigner>> signer = IstioCaSigner::Create(client);
    if (!signer.ok()) return signer.status();
    workload_signer = *std::move(signer);
  }

  // Signals are taken by sigwait below; blocked before any thread starts so none gets them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<CaTokenStore> tokens;
  std::unique_ptr<TokenReviewAuthenticator> token_review;
  std::unique_ptr<CaServer> ca_server;
  if (serve_ca) {
    std::vector<CaAuthenticator*> authenticators;
    if (!absl::GetFlag(FLAGS_ca_tokens_file).empty()) {
      tokens = std::make_unique<CaTokenStore>(absl::GetFlag(FLAGS_ca_tokens_file));
      if (absl::Status loaded = tokens->Reload(); !loaded.ok()) return loaded;
      authenticators.push_back(tokens.get());
    }
    if (absl::GetFlag(FLAGS_ca_token_review)) {
      absl::StatusOr<policy::KubeSourceOptions> api = KubeApi();
      if (!api.ok()) return api.status();
      TokenReviewOptions review;
      review.api = *std::move(api);
      review.audiences = absl::GetFlag(FLAGS_ca_token_audiences);
      review.trust_domain = ca_options.trust_domain;
      token_review = std::make_unique<TokenReviewAuthenticator>(std::move(review));
      authenticators.push_back(token_review.get());
      LogInfo("CA: workloads' service-account tokens are checked with the TokenReview API");
    }
    if (authenticators.empty()) {
      return absl::InvalidArgumentError("--serve-ca needs --ca-tokens-file or --ca-token-review");
    }
    absl::StatusOr<crypto::CertificateAuthority::ServerNames> names = ServingNames();
    if (!names.ok()) return names.status();
    absl::StatusOr<crypto::TlsCredentials> serving =
        local_ca->IssueServingCredentials(*names, absl::GetFlag(FLAGS_ca_serving_cert_lifetime));
    if (!serving.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the CA's serving certificate: ", serving.status().message()));
    }
    LogInfo("CA serving certificate for DNS [", absl::StrJoin(names->dns, ", "), "] IP [",
            absl::StrJoin(names->ips, ", "), "] ", names->spiffe_id->ToString());
    CaServiceOptions options;
    options.listen_address = absl::GetFlag(FLAGS_serve_ca);
    options.trust_domain = ca_options.trust_domain;
    options.server_cert_chain_pem = serving->cert_chain_pem;
    options.server_key_pem = serving->private_key_pem;
    options.default_lifetime = absl::GetFlag(FLAGS_cert_lifetime);
    options.max_lifetime = absl::GetFlag(FLAGS_ca_max_lifetime);
    ca_server = std::make_unique<CaServer>(local_ca.get(), std::move(authenticators), options);
    if (absl::Status started = ca_server->Start(); !started.ok()) return started;
  }

  std::unique_ptr<AllowListAuthorizer> allow_list;
  std::unique_ptr<policy::ConfigSource> inventory;
  std::unique_ptr<InventoryAuthorizer> inventory_authorizer;
  std::unique_ptr<PodWorkloadResolver> workloads;
  IdentityAuthorizer* authorizer = nullptr;
  std::unique_ptr<IdentityManager> manager;
  std::unique_ptr<SdsServer> sds_server;
  if (!sds_socket.empty()) {
    std::optional<std::string> file;
    if (std::string path = absl::GetFlag(FLAGS_allowed_identities_file); !path.empty()) {
      file = path;
    }
    absl::StatusOr<std::unique_ptr<policy::ConfigSource>> source = StartInventory();
    if (!source.ok()) return source.status();
    inventory = *std::move(source);
    if (fixed.empty() && !file.has_value() && inventory == nullptr) {
      LogWarning(
          "no --config-dir, --kubernetes-inventory, --allowed-identity or "
          "--allowed-identities-file: every identity is refused");
    }
    allow_list = std::make_unique<AllowListAuthorizer>(std::move(fixed), file);
    if (absl::Status loaded = allow_list->Reload(); !loaded.ok()) return loaded;
    authorizer = allow_list.get();
    if (inventory != nullptr) {
      inventory_authorizer = std::make_unique<InventoryAuthorizer>(
          inventory.get(), NodeName(), absl::GetFlag(FLAGS_trust_domain), allow_list.get());
      authorizer = inventory_authorizer.get();
      workloads = std::make_unique<PodWorkloadResolver>(inventory.get(), NodeName(),
                                                        absl::GetFlag(FLAGS_trust_domain));
    } else if (!absl::GetFlag(FLAGS_workload_sds_socket).empty()) {
      return absl::InvalidArgumentError(
          "--workload-sds-socket tells callers apart by their pods: it needs --config-dir or "
          "--kubernetes-inventory");
    }

    IdentityManagerOptions options;
    options.lifetime = absl::GetFlag(FLAGS_cert_lifetime);
    options.rotation_fraction = absl::GetFlag(FLAGS_rotation_fraction);
    options.rotation_jitter = absl::GetFlag(FLAGS_rotation_jitter);
    options.issuing_threads = absl::GetFlag(FLAGS_issuing_threads);
    options.idle_grace = absl::GetFlag(FLAGS_identity_idle_grace);
    manager = std::make_unique<IdentityManager>(workload_signer, options);
    SdsServerOptions server_options;
    server_options.socket_path = sds_socket;
    server_options.workload_socket_path = absl::GetFlag(FLAGS_workload_sds_socket);
    server_options.max_calls_per_caller = absl::GetFlag(FLAGS_sds_max_calls_per_caller);
    server_options.workloads = workloads.get();
    if (server_options.max_calls_per_caller < 1) {
      return absl::InvalidArgumentError("--sds-max-calls-per-caller must be at least 1");
    }
    sds_server = std::make_unique<SdsServer>(manager.get(), authorizer, server_options);
    if (absl::Status started = sds_server->Start(); !started.ok()) return started;
  }

  std::unique_ptr<MetricsEndpoint> metrics;
  if (std::string address = absl::GetFlag(FLAGS_metrics_address); !address.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> started =
        MetricsEndpoint::Start(address, [&sds_server, &manager] {
          std::string out;
          if (sds_server != nullptr) out = RenderSdsMetrics(sds_server->Stats());
          if (manager != nullptr) {
            absl::StrAppend(&out,
                            "# HELP nodeward_sds_certificates_issued_total Workload certificates "
                            "issued.\n# TYPE nodeward_sds_certificates_issued_total counter\n"
                            "nodeward_sds_certificates_issued_total ",
                            manager->issued_count(), "\n");
          }
          return out;
        });
    if (!started.ok()) return started.status();
    metrics = *std::move(started);
    LogInfo("serving metrics on ", address, "/metrics");
  }

  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number != SIGHUP) {
      LogInfo("signal ", signal_number, ": shutting down");
      break;
    }
    LogInfo("SIGHUP: reloading allow-list, CA tokens and CA");
    if (allow_list != nullptr) {
      if (absl::Status status = allow_list->Reload(); !status.ok()) LogError(status.message());
    }
    if (tokens != nullptr) {
      if (absl::Status status = tokens->Reload(); !status.ok()) LogError(status.message());
    }
    if (manager != nullptr) {
      if (absl::Status status = manager->ReloadSigner(); !status.ok()) LogError(status.message());
    } else if (local_ca != nullptr) {
      if (auto changed = local_ca->Reload(); !changed.ok()) LogError(changed.status().message());
    }
  }
  metrics.reset();
  if (sds_server != nullptr) sds_server->Shutdown();
  if (ca_server != nullptr) ca_server->Shutdown();
  return absl::OkStatus();
}

}  // namespace
}  // namespace nodeward::sds

namespace nodeward::sds {
namespace {

// Flags are spelt with dashes on the command line (--sds-socket) and may repeat where a list
// makes sense (--allowed-identity); abseil wants underscores and keeps only the last value, so
// names are rewritten and repeated list flags merged before parsing.
std::vector<std::string> NormalizeArguments(int argc, char** argv) {
  std::vector<std::string> out = {argv[0]};
  std::vector<std::pair<std::string, std::vector<std::string>>> lists = {
      {"--allowed_identity", {}},
      {"--ca_serving_dns_names", {}},
      {"--ca_serving_ips", {}},
      {"--ca_token_audiences", {}}};
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if (flags_done || argument.size() < 3 || argument.rfind("--", 0) != 0) {
      out.push_back(std::move(argument));
      continue;
    }
    if (argument == "--") {
      flags_done = true;
      out.push_back(std::move(argument));
      continue;
    }
    std::size_t name_end = std::min(argument.find('='), argument.size());
    std::replace(argument.begin() + 2, argument.begin() + name_end, '-', '_');
    auto list = std::find_if(lists.begin(), lists.end(), [&](const auto& entry) {
      return std::string_view(argument).substr(0, name_end) == entry.first;
    });
    if (list != lists.end()) {
      if (name_end < argument.size()) {
        list->second.push_back(argument.substr(name_end + 1));
      } else if (i + 1 < argc) {
        list->second.push_back(argv[++i]);
      }
      continue;
    }
    out.push_back(std::move(argument));
  }
  for (const auto& [name, values] : lists) {
    if (!values.empty()) out.push_back(absl::StrCat(name, "=", absl::StrJoin(values, ",")));
  }
  return out;
}

}  // namespace
}  // namespace nodeward::sds

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Node-local certificate supplier: Envoy SDS v3 on a Unix socket, certificates from the "
      "built-in CA or an upstream IstioCertificateService; --serve-ca serves that service. "
      "Flag names take dashes or underscores.");
  std::vector<std::string> arguments = nodeward::sds::NormalizeArguments(argc, argv);
  std::vector<char*> normalized;
  for (std::string& argument : arguments) normalized.push_back(argument.data());
  absl::ParseCommandLine(static_cast<int>(normalized.size()), normalized.data());
  absl::Status status = nodeward::sds::Run();
  if (!status.ok()) {
    nodeward::sds::LogError("nodeward-sds: ", status.ToString());
    return 1;
  }
  return 0;
}
