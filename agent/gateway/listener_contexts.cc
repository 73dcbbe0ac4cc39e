#include "agent/gateway/listener_contexts.h"

#include <functional>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "policy/gateway_credentials.h"

namespace nodeward::gateway {
namespace {

using policy::ServerTlsMode;

bool Terminates(const policy::GatewayServer& server) {
  if (!server.tls.has_value() || server.port.protocol == policy::GatewayProtocol::kHttps ||
      server.port.protocol == policy::GatewayProtocol::kHttp) {
    return false;  // no TLS, or an HTTPS server, which the decisions refuse before any handshake
  }
  switch (server.tls->mode) {
    case ServerTlsMode::kSimple:
    case ServerTlsMode::kMutual:
    case ServerTlsMode::kOptionalMutual:
    case ServerTlsMode::kIstioMutual:
      return true;
    case ServerTlsMode::kPassthrough:
    case ServerTlsMode::kAutoPassthrough:
      return false;
  }
  return false;
}

bool Mutual(const policy::ServerTlsSettings& tls) {
  return tls.mode == ServerTlsMode::kMutual || tls.mode == ServerTlsMode::kOptionalMutual;
}

crypto::TlsVersion VersionOf(policy::TlsProtocolVersion version) {
  switch (version) {
    case policy::TlsProtocolVersion::kAuto:
      return crypto::TlsVersion::kDefault;
    case policy::TlsProtocolVersion::kTlsV1_0:
      return crypto::TlsVersion::kTls1_0;
    case policy::TlsProtocolVersion::kTlsV1_1:
      return crypto::TlsVersion::kTls1_1;
    case policy::TlsProtocolVersion::kTlsV1_2:
      return crypto::TlsVersion::kTls1_2;
    case policy::TlsProtocolVersion::kTlsV1_3:
      return crypto::TlsVersion::kTls1_3;
  }
  return crypto::TlsVersion::kDefault;
}

crypto::GatewayServerSettings::ClientAuth ClientAuthOf(ServerTlsMode mode) {
  using ClientAuth = crypto::GatewayServerSettings::ClientAuth;
  switch (mode) {
    case ServerTlsMode::kMutual:
      return ClientAuth::kRequired;
    case ServerTlsMode::kOptionalMutual:
      return ClientAuth::kOptional;
    case ServerTlsMode::kIstioMutual:
      return ClientAuth::kMesh;
    default:
      return ClientAuth::kNone;
  }
}

struct Material {
  std::string cert_chain_pem;
  std::string private_key_pem;
  std::string ca_pem;
  std::string crl_pem;
  std::size_t Fingerprint() const {
    return absl::HashOf(cert_chain_pem, private_key_pem, ca_pem, crl_pem);
  }
};

}  // namespace

enum class ListenerContexts::Source : int { kFiles, kSecret, kMesh };

struct ListenerContexts::Server {
  uint32_t port = 0;
  std::string name;
  std::vector<std::string> hosts;
  policy::ServerTlsSettings tls;
  Source source = Source::kFiles;
  std::vector<std::string> files;
  std::vector<std::string> sources;

  std::shared_ptr<const crypto::GatewayServerContext> context;  // the last good one
  absl::Status last_error = absl::UnavailableError("not built yet");
  absl::Time built = absl::InfinitePast();
  // What the last build attempts were made from: a stamp or fingerprint seen before is not
  // built again, whether it worked or not.
  std::vector<FileStamp> built_stamps, failed_stamps;
  std::optional<std::size_t> built_fingerprint, failed_fingerprint;

  CredentialState state() const {
    if (context == nullptr) return CredentialState::kUnavailable;
    return last_error.ok() ? CredentialState::kServing : CredentialState::kStale;
  }
};

ListenerContexts::ListenerContexts(Options options) : options_(options) {}
ListenerContexts::~ListenerContexts() = default;

absl::string_view CredentialStateName(CredentialState state) {
  switch (state) {
    case CredentialState::kServing:
      return "serving";
    case CredentialState::kStale:
      return "stale";
    case CredentialState::kUnavailable:
      return "unavailable";
  }
  return "unknown";
}

void ListenerContexts::Refresh(Server& server, absl::Time now) {
  std::vector<FileStamp> stamps;
  absl::StatusOr<Material> material = absl::UnknownError("");
  switch (server.source) {
    case Source::kFiles: {
      // Stamped before reading: a file replaced while it is read shows as changed next time.
      stamps = StampFiles(server.files);
      if ((server.context != nullptr && stamps == server.built_stamps) ||
          stamps == server.failed_stamps) {
        return;
      }
      // serverCertificate, privateKey, then for MUTUAL caCertificates and caCrl.
      static constexpr const char* kFields[] = {"serverCertificate", "privateKey", "caCertificates",
                                                "caCrl"};
      std::string contents[4];
      material = Material{};
      for (std::size_t i = 0; i < server.files.size() && material.ok(); ++i) {
        absl::StatusOr<std::string> read = ReadFileFor(kFields[i], server.files[i]);
        if (read.ok()) {
          contents[i] = *std::move(read);
        } else {
          material = read.status();
        }
      }
      if (material.ok()) {
        material = Material{std::move(contents[0]), std::move(contents[1]), std::move(contents[2]),
                            std::move(contents[3])};
      }
      break;
    }
    case Source::kSecret: {
      absl::StatusOr<policy::ResolvedCredential> secret =
          policy::ResolveCredentialName(*config_->snapshot, config_->workload.meta.ns, server.tls);
      if (secret.ok()) {
        server.sources = secret->sources;
        material = Material{std::move(secret->cert_chain_pem), std::move(secret->private_key_pem),
                            std::move(secret->ca_certificates_pem), std::move(secret->ca_crl_pem)};
      } else {
        material = secret.status();
      }
      break;
    }
    case Source::kMesh:
      if (mesh_credentials_.has_value()) {
        material = Material{mesh_credentials_->cert_chain_pem, mesh_credentials_->private_key_pem,
                            mesh_roots_, ""};
      } else {
        material = absl::UnavailableError(
            "the gateway's own mesh certificate has not arrived from SDS yet");
      }
      break;
  }
  std::optional<std::size_t> fingerprint;
  if (server.source != Source::kFiles) {
    fingerprint = material.ok() ? material->Fingerprint()
                                : absl::HashOf(std::string(material.status().message()));
    if ((server.context != nullptr && fingerprint == server.built_fingerprint) ||
        fingerprint == server.failed_fingerprint) {
      return;
    }
  }
  absl::StatusOr<std::shared_ptr<const crypto::GatewayServerContext>> context =
      absl::UnknownError("not built");
  if (material.ok()) {
    crypto::GatewayServerSettings settings;
    settings.name = server.name;
    settings.client_auth = ClientAuthOf(server.tls.mode);
    settings.credentials = {material->cert_chain_pem, material->private_key_pem};
    settings.client_ca_pem = material->ca_pem;
    settings.client_crl_pem = material->crl_pem;
    settings.subject_alt_names = server.tls.subject_alt_names;
    settings.verify_certificate_spki = server.tls.verify_certificate_spki;
    settings.verify_certificate_hash = server.tls.verify_certificate_hash;
    settings.min_version = VersionOf(server.tls.min_protocol_version);
    settings.max_version = VersionOf(server.tls.max_protocol_version);
    settings.cipher_suites = server.tls.cipher_suites;
    context = crypto::GatewayServerContext::Create(settings);
  } else {
    context = absl::Status(material.status().code(),
                           absl::StrCat(server.name, ": ", material.status().message()));
  }
  if (!context.ok()) {
    server.last_error = context.status();
    server.failed_stamps = std::move(stamps);
    server.failed_fingerprint = fingerprint;
    return;
  }
  server.context = *std::move(context);
  server.last_error = absl::OkStatus();
  server.built = now;
  server.built_stamps = std::move(stamps);
  server.built_fingerprint = fingerprint;
  server.failed_stamps.clear();
  server.failed_fingerprint.reset();
}

void ListenerContexts::RebuildPort(uint32_t number, Port& port) {
  std::vector<std::shared_ptr<const crypto::GatewayServerContext>> contexts;
  std::map<std::string, std::size_t> positions;  // by server name
  for (const std::string& key : port.keys) {
    const Server& server = *servers_.at(key);
    if (server.context == nullptr) continue;
    positions.emplace(server.name, contexts.size());
    contexts.push_back(server.context);
  }
  port.context = nullptr;
  if (contexts.empty()) return;
  // The same SNI rule as the decisions: the data plane and the handshake agree on the server.
  auto selector = [config = config_, number, positions = std::move(positions)](
                      std::optional<absl::string_view> sni) -> std::optional<std::size_t> {
    const policy::GatewayListener* listener = config->listeners.ForPort(number);
    if (listener == nullptr) return std::nullopt;
    policy::GatewayConnection connection;
    if (sni.has_value()) connection.sni = std::string(*sni);
    const policy::GatewayFilterChain* chain = policy::SelectFilterChain(*listener, connection);
    if (chain == nullptr) return std::nullopt;
    auto it = positions.find(chain->Describe());
    return it == positions.end() ? std::nullopt : std::optional<std::size_t>(it->second);
  };
  absl::StatusOr<std::shared_ptr<const crypto::TlsContext>> context =
      crypto::MakeGatewayListenerContext(std::move(contexts), std::move(selector));
  if (context.ok()) port.context = *std::move(context);
}

void ListenerContexts::Update(std::shared_ptr<const GatewayConfig> config, absl::Time now) {
  absl::MutexLock lock(&mutex_);
  config_ = std::move(config);
  std::map<std::string, std::unique_ptr<Server>> servers;
  std::map<uint32_t, Port> ports;
  for (const policy::GatewayListener& listener : config_->listeners.listeners) {
    if (listener.kind != policy::ListenerKind::kTls) continue;
    for (const policy::GatewayFilterChain& chain : listener.chains) {
      const policy::GatewayServer& config_server = chain.server();
      if (!Terminates(config_server)) continue;
      const std::string key = absl::StrCat(listener.port, " ", chain.Describe());
      if (servers.count(key) > 0) continue;
      auto found = servers_.find(key);
      std::unique_ptr<Server> server =
          found != servers_.end() ? std::move(found->second) : std::make_unique<Server>();
      const policy::ServerTlsSettings& tls = *config_server.tls;
      if (server->tls != tls || server->hosts != chain.sni_patterns) {
        // Other settings: whatever was built before is built again.
        server->built_stamps.clear();
        server->built_fingerprint.reset();
        server->failed_stamps.clear();
        server->failed_fingerprint.reset();
      }
      server->port = listener.port;
      server->name = chain.Describe();
      server->hosts = chain.sni_patterns;
      server->tls = tls;
      if (tls.mode == ServerTlsMode::kIstioMutual) {
        server->source = Source::kMesh;
        server->sources = {
            absl::StrCat("the gateway's mesh certificate (",
                         policy::WorkloadSpiffeId(*config_->snapshot, config_->workload), ")")};
      } else if (!tls.credential_name.empty()) {
        server->source = Source::kSecret;
        server->sources = {
            absl::StrCat("Secret ", config_->workload.meta.ns, "/", tls.credential_name)};
      } else {
        server->source = Source::kFiles;
        server->files = {tls.server_certificate, tls.private_key};
        if (Mutual(tls)) {
          server->files.push_back(tls.ca_certificates);
          if (!tls.ca_crl.empty()) server->files.push_back(tls.ca_crl);
        }
        server->sources = server->files;
      }
      Refresh(*server, now);
      ports[listener.port].keys.push_back(key);
      servers.emplace(key, std::move(server));
    }
  }
  servers_ = std::move(servers);
  ports_ = std::move(ports);
  for (auto& [number, port] : ports_) {
    port.checked = now;
    RebuildPort(number, port);
  }
}

void ListenerContexts::SetMeshCredentials(crypto::TlsCredentials credentials, std::string roots_pem,
                                          absl::Time now) {
  absl::MutexLock lock(&mutex_);
  mesh_credentials_ = std::move(credentials);
  mesh_roots_ = std::move(roots_pem);
  for (auto& [number, port] : ports_) RefreshPort(number, port, Source::kMesh, now);
}

void ListenerContexts::RefreshPort(uint32_t number, Port& port, Source source, absl::Time now) {
  bool changed = false;
  for (const std::string& key : port.keys) {
    Server& server = *servers_.at(key);
    if (server.source != source) continue;
    auto before = server.context;
    Refresh(server, now);
    changed |= server.context != before;
  }
  if (changed) RebuildPort(number, port);
}

std::shared_ptr<const crypto::TlsContext> ListenerContexts::ForPort(uint32_t port_number,
                                                                    absl::Time now) {
  absl::MutexLock lock(&mutex_);
  auto it = ports_.find(port_number);
  if (it == ports_.end()) return nullptr;
  Port& port = it->second;
  if (now - port.checked >= options_.recheck_interval) {
    port.checked = now;
    RefreshPort(port_number, port, Source::kFiles, now);
  }
  return port.context;
}

std::vector<ServerCredentialStatus> ListenerContexts::Status() const {
  absl::MutexLock lock(&mutex_);
  std::vector<ServerCredentialStatus> out;
  for (const auto& [key, server] : servers_) {
    ServerCredentialStatus status;
    status.port = server->port;
    status.server = server->name;
    status.hosts = server->hosts;
    status.mode = std::string(policy::ServerTlsModeName(server->tls.mode));
    status.sources = server->sources;
    status.state = server->state();
    status.last_error = server->last_error;
    if (server->context != nullptr) status.certificate = server->context->certificate();
    status.built = server->built;
    out.push_back(std::move(status));
  }
  return out;
}

std::vector<SniCertificate> ListenerContexts::Certificates() const {
  std::vector<SniCertificate> out;
  for (const ServerCredentialStatus& status : Status()) {
    if (!status.certificate.has_value()) continue;
    for (const std::string& host : status.hosts) {
      out.push_back({status.port, host, status.server, *status.certificate});
    }
  }
  return out;
}

}  // namespace nodeward::gateway
