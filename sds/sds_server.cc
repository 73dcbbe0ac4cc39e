#include "sds/sds_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <thread>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/grpcpp.h"
#include "sds/log.h"
#include "sds/secret_resources.h"

namespace nodeward::sds {
namespace {

using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// PERMISSION_DENIED carrying a google.rpc.Status with an ErrorInfo naming the refused
// resource, so a client can drop just that identity and keep the others.
grpc::Status IdentityRefused(const std::string& resource, const absl::Status& reason) {
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(kReasonIdentityNotAllowed));
  info.set_domain(std::string(kErrorDomain));
  (*info.mutable_metadata())[std::string(kErrorResourceKey)] = resource;
  google::rpc::Status detail;
  detail.set_code(grpc::StatusCode::PERMISSION_DENIED);
  detail.set_message(std::string(reason.message()));
  detail.add_details()->PackFrom(info);
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(reason.message()),
                      detail.SerializeAsString());
}

// What one resource name resolves to right now.
struct Resolved {
  std::string version;
  SecretProto secret;
};

// One StreamSecrets call: its subscription, what was sent and acknowledged, and a writer
// thread that pushes changes while the handler thread reads requests.
class SecretStream : public IdentityManager::Observer {
 public:
  SecretStream(IdentityManager* manager, IdentityAuthorizer* authorizer, std::string peer,
               std::atomic<std::int64_t>* nacks)
      : manager_(manager), authorizer_(authorizer), peer_(std::move(peer)), nacks_(nacks) {}

  ~SecretStream() override {
    for (const crypto::SpiffeId& identity : retained_) manager_->Release(identity);
  }

  void OnCertificate(const std::shared_ptr<const IssuedIdentity>& issued) override {
    Enqueue(issued->identity.ToString());
  }
  void OnTrustBundle(const std::shared_ptr<const TrustBundleSnapshot>&) override {
    Enqueue(std::string(kRootCaResourceName));
  }

  // Applies one DiscoveryRequest: ACK/NACK bookkeeping and subscription changes.
  grpc::Status HandleRequest(const DiscoveryRequest& request) {
    if (!request.type_url().empty() && request.type_url() != kSecretTypeUrl) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("this server only serves ", kSecretTypeUrl, ", not ", request.type_url()));
    }
    RecordAcknowledgement(request);

    absl::flat_hash_set<std::string> wanted(request.resource_names().begin(),
                                            request.resource_names().end());
    std::vector<std::pair<std::string, ResourceName>> added;
    {
      absl::MutexLock lock(&mu_);
      for (const std::string& name : wanted) {
        if (subscribed_.contains(name)) continue;
        absl::StatusOr<ResourceName> parsed = ParseResourceName(name);
        if (!parsed.ok()) return ToGrpcStatus(parsed.status());
        added.emplace_back(name, *std::move(parsed));
      }
    }
    // Every new identity is checked before any is retained: a refused request changes nothing.
    for (const auto& [name, parsed] : added) {
      const auto* identity = std::get_if<crypto::SpiffeId>(&parsed);
      if (identity == nullptr) continue;
      if (absl::Status allowed = authorizer_->Authorize(*identity); !allowed.ok()) {
        LogWarning("refused ", name, " to ", peer_, ": ", allowed.message());
        return IdentityRefused(name, allowed);
      }
    }

    std::vector<crypto::SpiffeId> released;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = subscribed_.begin(); it != subscribed_.end();) {
        auto current = it++;
        if (wanted.contains(*current)) continue;
        last_sent_.erase(*current);
        nacked_.erase(*current);
        if (auto parsed = ParseResourceName(*current); parsed.ok()) {
          if (auto* identity = std::get_if<crypto::SpiffeId>(&*parsed)) {
            released.push_back(*identity);
            retained_.erase(*identity);
          }
        }
        subscribed_.erase(current);
      }
      for (const auto& [name, parsed] : added) {
        subscribed_.insert(name);
        if (auto* identity = std::get_if<crypto::SpiffeId>(&parsed)) retained_.insert(*identity);
      }
    }
    for (const crypto::SpiffeId& identity : released) manager_->Release(identity);
    for (const auto& [name, parsed] : added) {
      if (auto* identity = std::get_if<crypto::SpiffeId>(&parsed)) manager_->Retain(*identity);
      Enqueue(name);
    }
    return grpc::Status::OK;
  }

  void WriterLoop(grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) {
    while (true) {
      std::string name;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](SecretStream* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
              return self->closed_ || !self->pending_.empty();
            },
            this));
        if (closed_) return;
        name = std::move(pending_.front());
        pending_.pop_front();
        pending_set_.erase(name);
      }
      if (!Push(name, stream)) {
        Close();
        return;
      }
    }
  }

  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

 private:
  void Enqueue(const std::string& name) {
    absl::MutexLock lock(&mu_);
    if (!subscribed_.contains(name) || pending_set_.contains(name)) return;
    pending_set_.insert(name);
    // The bundle goes first so a client never receives a certificate whose root it lacks.
    if (name == kRootCaResourceName) {
      pending_.push_front(name);
    } else {
      pending_.push_back(name);
    }
  }

  void RecordAcknowledgement(const DiscoveryRequest& request) {
    if (request.response_nonce().empty()) return;
    absl::MutexLock lock(&mu_);
    auto it = sent_.find(request.response_nonce());
    if (it == sent_.end()) return;  // stale or from an earlier stream: nothing to record
    auto [name, version] = it->second;
    sent_.erase(it);
    if (request.has_error_detail() && request.error_detail().code() != 0) {
      nacks_->fetch_add(1);
      nacked_[name] = version;
      LogWarning("NACK from ", peer_, " for ", name, " version ", version, ": code ",
                 request.error_detail().code(), " ", request.error_detail().message(),
                 "; not sending this version again");
    }
  }

  std::optional<Resolved> Resolve(const std::string& name) {
    if (name == kRootCaResourceName) {
      std::shared_ptr<const TrustBundleSnapshot> bundle = manager_->Bundle();
      if (bundle == nullptr) return std::nullopt;
      return Resolved{bundle->version, MakeValidationContextSecret(bundle->roots_pem)};
    }
    absl::StatusOr<crypto::SpiffeId> identity = crypto::SpiffeId::Parse(name);
    if (!identity.ok()) return std::nullopt;
    std::shared_ptr<const IssuedIdentity> issued = manager_->Current(*identity);
    if (issued == nullptr) return std::nullopt;
    // Re-checked on every push: an identity withdrawn from this node gets no new
    // certificate, and the one it holds runs out.
    if (absl::Status allowed = authorizer_->Authorize(*identity); !allowed.ok()) {
      LogWarning("not pushing ", name, " to ", peer_, ": ", allowed.message());
      return std::nullopt;
    }
    return Resolved{issued->version,
                    MakeTlsCertificateSecret(name, issued->credentials.cert_chain_pem,
                                             issued->credentials.private_key_pem)};
  }

  bool Push(const std::string& name,
            grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) {
    if (name != kRootCaResourceName) {
      bool root_subscribed = false;
      {
        absl::MutexLock lock(&mu_);
        root_subscribed = subscribed_.contains(kRootCaResourceName);
      }
      if (root_subscribed && !Push(std::string(kRootCaResourceName), stream)) return false;
    }
    std::optional<Resolved> resolved = Resolve(name);
    if (!resolved.has_value()) return true;
    DiscoveryResponse response;
    {
      absl::MutexLock lock(&mu_);
      if (!subscribed_.contains(name)) return true;
      if (auto it = last_sent_.find(name);
          it != last_sent_.end() && it->second == resolved->version) {
        return true;
      }
      if (auto it = nacked_.find(name); it != nacked_.end() && it->second == resolved->version) {
        return true;
      }
      std::string nonce = absl::StrCat(++nonce_counter_);
      sent_[nonce] = {name, resolved->version};
      last_sent_[name] = resolved->version;
      response.set_version_info(resolved->version);
      response.set_type_url(std::string(kSecretTypeUrl));
      response.set_nonce(std::move(nonce));
    }
    *response.add_resources() = PackSecret(resolved->secret);
    return stream->Write(response);
  }

  IdentityManager* const manager_;
  IdentityAuthorizer* const authorizer_;
  const std::string peer_;
  std::atomic<std::int64_t>* const nacks_;

  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<std::string> subscribed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<crypto::SpiffeId> retained_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> pending_set_ ABSL_GUARDED_BY(mu_);
  // nonce -> (resource, version) of responses not yet ACKed or NACKed.
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>> sent_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> last_sent_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> nacked_ ABSL_GUARDED_BY(mu_);
  std::uint64_t nonce_counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

class SdsServer::Service final
    : public envoy::service::secret::v3::SecretDiscoveryService::Service {
 public:
  Service(IdentityManager* manager, IdentityAuthorizer* authorizer, absl::Duration fetch_timeout)
      : manager_(manager), authorizer_(authorizer), fetch_timeout_(fetch_timeout) {}

  grpc::Status StreamSecrets(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<DiscoveryResponse, DiscoveryRequest>* stream) override {
    active_streams_.fetch_add(1);
    auto state = std::make_unique<SecretStream>(manager_, authorizer_, context->peer(), &nacks_);
    manager_->AddObserver(state.get());
    std::thread writer([&] { state->WriterLoop(stream); });
    grpc::Status result = grpc::Status::OK;
    DiscoveryRequest request;
    while (stream->Read(&request)) {
      result = state->HandleRequest(request);
      if (!result.ok()) break;
    }
    state->Close();
    writer.join();
    manager_->RemoveObserver(state.get());
    state.reset();
    active_streams_.fetch_sub(1);
    return result;
  }

  grpc::Status FetchSecrets(grpc::ServerContext* context, const DiscoveryRequest* request,
                            DiscoveryResponse* response) override {
    if (!request->type_url().empty() && request->type_url() != kSecretTypeUrl) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("this server only serves ", kSecretTypeUrl));
    }
    if (request->resource_names().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "FetchSecrets needs resource names (SPIFFE IDs or ROOTCA)");
    }
    std::vector<std::pair<std::string, ResourceName>> names;
    for (const std::string& name : request->resource_names()) {
      absl::StatusOr<ResourceName> parsed = ParseResourceName(name);
      if (!parsed.ok()) return ToGrpcStatus(parsed.status());
      if (auto* identity = std::get_if<crypto::SpiffeId>(&*parsed)) {
        if (absl::Status allowed = authorizer_->Authorize(*identity); !allowed.ok()) {
          LogWarning("refused ", name, " to ", context->peer(), ": ", allowed.message());
          return IdentityRefused(name, allowed);
        }
      }
      names.emplace_back(name, *std::move(parsed));
    }
    absl::Time deadline =
        std::min(absl::FromChrono(context->deadline()), absl::Now() + fetch_timeout_);
    std::vector<std::string> versions;
    for (const auto& [name, parsed] : names) {
      if (std::holds_alternative<RootCaResource>(parsed)) {
        auto bundle = manager_->WaitForBundle(deadline);
        if (!bundle.ok()) return ToGrpcStatus(bundle.status());
        versions.push_back((*bundle)->version);
        *response->add_resources() = PackSecret(MakeValidationContextSecret((*bundle)->roots_pem));
        continue;
      }
      const auto& identity = std::get<crypto::SpiffeId>(parsed);
      manager_->Retain(identity);
      auto issued = manager_->WaitForCertificate(identity, deadline);
      manager_->Release(identity);
      if (!issued.ok()) return ToGrpcStatus(issued.status());
      versions.push_back((*issued)->version);
      *response->add_resources() = PackSecret(MakeTlsCertificateSecret(
          name, (*issued)->credentials.cert_chain_pem, (*issued)->credentials.private_key_pem));
    }
    response->set_version_info(absl::StrJoin(versions, ","));
    response->set_type_url(std::string(kSecretTypeUrl));
    return grpc::Status::OK;
  }

  int active_streams() const { return active_streams_.load(); }
  std::int64_t nacks() const { return nacks_.load(); }

 private:
  IdentityManager* const manager_;
  IdentityAuthorizer* const authorizer_;
  const absl::Duration fetch_timeout_;
  std::atomic<int> active_streams_{0};
  std::atomic<std::int64_t> nacks_{0};
};

SdsServer::SdsServer(IdentityManager* manager, IdentityAuthorizer* authorizer,
                     SdsServerOptions options)
    : options_(std::move(options)),
      service_(std::make_unique<Service>(manager, authorizer, options_.fetch_timeout)) {}

SdsServer::~SdsServer() { Shutdown(); }

absl::Status SdsServer::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("SDS server already started");
  const std::filesystem::path path(options_.socket_path);
  std::error_code error;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("creating ", path.parent_path().string(), ": ", error.message()));
  }
  struct stat info;
  if (::lstat(path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrCat(path.string(), " exists and is not a socket; refusing to replace it"));
    }
    ::unlink(path.c_str());
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", path.string()), grpc::InsecureServerCredentials());
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on unix:", path.string()));
  }
  // Group access lets the agent, running under a shared group, connect; nobody else can.
  if (::chmod(path.c_str(), 0660) != 0) {
    absl::Status status =
        absl::InternalError(absl::StrCat("chmod 0660 ", path.string(), ": ", std::strerror(errno)));
    Shutdown();
    return status;
  }
  LogInfo("serving SDS on unix:", path.string());
  return absl::OkStatus();
}

void SdsServer::Shutdown() {
  if (server_ == nullptr) return;
  // Streams never end on their own: cancel them right away.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
  ::unlink(options_.socket_path.c_str());
}

int SdsServer::active_streams() const { return service_->active_streams(); }
std::int64_t SdsServer::nacks_received() const { return service_->nacks(); }

}  // namespace nodeward::sds
