#include "sds/sds_server.h"

#include <malloc.h>

#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/server_posix.h"
#include "sds/log.h"
#include "sds/peer_listener.h"

namespace nodeward::sds {
namespace {

using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

// How often the deadlines of waiting FetchSecrets calls are looked at.
constexpr absl::Duration kFetchDeadlineResolution = absl::Milliseconds(100);
// Freed memory is given back to the system once this many calls have closed since the peak.
constexpr std::int64_t kTrimAfterClosedCalls = 256;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// PERMISSION_DENIED (or the error's own code) carrying a google.rpc.Status with an ErrorInfo
// naming the resource, so a client can tell which name was refused.
grpc::Status NameRefused(absl::string_view name, const NameError& error) {
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(kReasonIdentityNotAllowed));
  info.set_domain(std::string(kErrorDomain));
  (*info.mutable_metadata())[std::string(kErrorResourceKey)] = std::string(name);
  google::rpc::Status detail;
  detail.set_code(static_cast<int>(error.status.code()));
  detail.set_message(std::string(error.status.message()));
  detail.add_details()->PackFrom(info);
  return grpc::Status(static_cast<grpc::StatusCode>(error.status.code()),
                      std::string(error.status.message()), detail.SerializeAsString());
}

std::optional<grpc::Status> CheckTypeUrl(const std::string& type_url) {
  if (type_url.empty() || type_url == kSecretTypeUrl) return std::nullopt;
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("this server only serves ", kSecretTypeUrl, ", not ", Echo(type_url)));
}

}  // namespace

// One open call, as the publications of the identity manager and the housekeeping reach it.
class Call {
 public:
  virtual ~Call() = default;
  virtual void OnCertificate(const crypto::SpiffeId& identity) = 0;
  virtual void OnBundle() = 0;
  virtual void OnIssueFailed(const crypto::SpiffeId&, const absl::Status&) {}
  // `recheck`: time to ask again what was refused.
  virtual void Tick(absl::Time now, bool recheck) = 0;
};

class SdsServer::Service final
    : public envoy::service::secret::v3::SecretDiscoveryService::CallbackService,
      public IdentityManager::Observer {
 public:
  Service(IdentityManager* manager, IdentityAuthorizer* authorizer, SdsServerOptions options)
      : manager_(manager), authorizer_(authorizer), options_(std::move(options)) {}

  grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* StreamSecrets(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>* DeltaSecrets(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* FetchSecrets(grpc::CallbackServerContext* context,
                                         const DiscoveryRequest* request,
                                         DiscoveryResponse* response) override;

  void OnCertificate(const std::shared_ptr<const IssuedIdentity>& issued) override {
    for (const std::shared_ptr<Call>& call : Calls()) call->OnCertificate(issued->identity);
  }
  void OnTrustBundle(const std::shared_ptr<const TrustBundleSnapshot>&) override {
    for (const std::shared_ptr<Call>& call : Calls()) call->OnBundle();
  }
  void OnIssueFailed(const crypto::SpiffeId& identity, const absl::Status& error) override {
    for (const std::shared_ptr<Call>& call : Calls()) call->OnIssueFailed(identity, error);
  }

  // Who `peer` (gRPC's name of the connection) is, counted against the caller's limit.
  absl::StatusOr<SdsCaller> Admit(const std::string& peer);
  // Undoes Admit for a call that did not start.
  void Leave(const std::string& limit_key);
  // Starts tracking an admitted call.
  void Track(std::shared_ptr<Call> call, bool fetch);
  // Stops tracking `call`; the caller that opened it may open another. Returns the last
  // reference, to be dropped outside the lock.
  std::shared_ptr<Call> Forget(Call* call, const std::string& limit_key);

  void StartHousekeeping();
  void StopHousekeeping();

  void set_listener(PeerListener* listener) { listener_ = listener; }
  IdentityManager* manager() const { return manager_; }
  IdentityAuthorizer* authorizer() const { return authorizer_; }
  SdsCounters* counters() { return &counters_; }
  const SdsServerOptions& options() const { return options_; }
  SdsServerStats Stats() const;
  int open_streams() const;

 private:
  struct Tracked {
    std::shared_ptr<Call> call;
    bool fetch = false;
  };
  template <typename CallType, typename Request, typename Response>
  grpc::ServerBidiReactor<Request, Response>* Open(grpc::CallbackServerContext* context,
                                                   SecretStream::Variant variant);
  std::vector<std::shared_ptr<Call>> Calls(bool fetches_only = false) const;
  void LeaveLocked(const std::string& limit_key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Housekeeping();

  IdentityManager* const manager_;
  IdentityAuthorizer* const authorizer_;
  const SdsServerOptions options_;
  PeerListener* listener_ = nullptr;
  SdsCounters counters_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<Call*, Tracked> calls_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> per_caller_ ABSL_GUARDED_BY(mu_);
  int fetches_ ABSL_GUARDED_BY(mu_) = 0;
  std::int64_t peak_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::int64_t refused_over_limit_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_limit_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread housekeeping_;
};

namespace {

// A streaming call, state of the world or delta: requests change the subscription, and a
// response is written whenever something subscribed changed and no write is in flight.
// Owned by the service's table until gRPC is done with it; the publications that reach it
// meanwhile hold it too, so it is never used after it is freed.
template <typename Request, typename Response>
class StreamCall : public grpc::ServerBidiReactor<Request, Response>, public Call {
 public:
  StreamCall(SdsServer::Service* service, SecretStream::Variant variant, SdsCaller caller)
      : service_(service),
        limit_key_(caller.LimitKey()),
        stream_(variant, service->manager(), service->authorizer(), std::move(caller),
                service->counters(), service->options().workloads) {}

  void Begin() { this->StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      RequestFinish(grpc::Status::OK);
      return;
    }
    std::optional<grpc::Status> refused = CheckTypeUrl(request_.type_url());
    if (refused.has_value()) {
      RequestFinish(*std::move(refused));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (!named_ && request_.has_node()) {
        stream_.set_client(absl::StrCat(" (node \"", Echo(request_.node().id()), "\")"));
        named_ = true;
      }
      stream_.Acknowledge(request_.response_nonce(),
                          request_.has_error_detail() ? &request_.error_detail() : nullptr);
      Subscribe(request_);
    }
    this->StartRead(&request_);
    Pump();
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      // A written response holds a private key and a chain: not kept for the stream's life.
      Response().Swap(&response_);
      if (!ok && !finishing_) {
        finishing_ = true;
        finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
      }
      if (finishing_) {
        if (finish_sent_) return;
        finish_sent_ = true;
        finish = finish_status_;
      }
    }
    if (finish.has_value()) {
      this->Finish(*std::move(finish));
      return;
    }
    Pump();
  }

  void OnCancel() override { RequestFinish(grpc::Status::CANCELLED); }

  void OnDone() override {
    std::shared_ptr<Call> last = service_->Forget(this, limit_key_);
    // `last` frees this call on return, unless a publication still holds it.
  }

  void OnCertificate(const crypto::SpiffeId& identity) override {
    {
      absl::MutexLock lock(&mu_);
      stream_.CertificateChanged(identity);
    }
    Pump();
  }
  void OnBundle() override {
    {
      absl::MutexLock lock(&mu_);
      stream_.BundleChanged();
    }
    Pump();
  }
  void Tick(absl::Time, bool recheck) override {
    if (!recheck) return;
    {
      absl::MutexLock lock(&mu_);
      stream_.Recheck();
    }
    Pump();
  }

 protected:
  // Applies the subscription change of one request.
  virtual void Subscribe(const Request& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual void Fill(const SecretUpdate& update, const std::string& nonce, Response& response) = 0;

  SecretStream& stream() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stream_; }
  absl::Mutex mu_;

 private:
  // Writes the next response if one is due and none is in flight. gRPC is called without the
  // lock held: its reactions may run on this thread before the call returns.
  void Pump() {
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finishing_) return;
      const std::string nonce = absl::StrCat(++nonce_counter_);
      std::optional<SecretUpdate> update = stream_.Next(nonce);
      if (!update.has_value()) return;
      response_.Clear();
      Fill(*update, nonce, response_);
      writing_ = true;
    }
    this->StartWrite(&response_);
  }

  void RequestFinish(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      finishing_ = true;
      finish_status_ = status;
      if (writing_) return;  // finished once the write is done
      finish_sent_ = true;
    }
    this->Finish(std::move(status));
  }

  SdsServer::Service* const service_;
  const std::string limit_key_;
  SecretStream stream_ ABSL_GUARDED_BY(mu_);
  Request request_;
  Response response_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_sent_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
  std::uint64_t nonce_counter_ ABSL_GUARDED_BY(mu_) = 0;
  bool named_ ABSL_GUARDED_BY(mu_) = false;
};

class StateOfTheWorldCall final : public StreamCall<DiscoveryRequest, DiscoveryResponse> {
 public:
  using StreamCall::StreamCall;

 private:
  void Subscribe(const DiscoveryRequest& request) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    stream().Replace({request.resource_names().begin(), request.resource_names().end()});
  }

  void Fill(const SecretUpdate& update, const std::string& nonce,
            DiscoveryResponse& response) override {
    response.set_version_info(update.version);
    response.set_type_url(std::string(kSecretTypeUrl));
    response.set_nonce(nonce);
    // Never a removal: the state-of-the-world protocol has no way to say one for SDS.
    if (update.secret.has_value()) *response.add_resources() = PackSecret(*update.secret);
  }
};

class DeltaCall final : public StreamCall<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
 public:
  using StreamCall::StreamCall;

 private:
  void Subscribe(const DeltaDiscoveryRequest& request) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    stream().Unsubscribe(
        {request.resource_names_unsubscribe().begin(), request.resource_names_unsubscribe().end()});
    // What the client holds counts only on the first request of a stream.
    std::vector<std::pair<std::string, std::string>> known;
    if (!first_done_) {
      known.assign(request.initial_resource_versions().begin(),
                   request.initial_resource_versions().end());
    }
    first_done_ = true;
    stream().Subscribe(
        {request.resource_names_subscribe().begin(), request.resource_names_subscribe().end()},
        known);
  }

  void Fill(const SecretUpdate& update, const std::string& nonce,
            DeltaDiscoveryResponse& response) override {
    response.set_type_url(std::string(kSecretTypeUrl));
    response.set_nonce(nonce);
    if (!update.secret.has_value()) {
      response.add_removed_resources(update.name);
      return;
    }
    envoy::service::discovery::v3::Resource* resource = response.add_resources();
    resource->set_name(update.name);
    resource->set_version(update.version);
    *resource->mutable_resource() = PackSecret(*update.secret);
  }

  bool first_done_ = false;
};

// A FetchSecrets call: answered once everything asked for is available, with an error once an
// issuance of it failed, or at its deadline.
class FetchCall final : public grpc::ServerUnaryReactor, public Call {
 public:
  FetchCall(SdsServer::Service* service, SdsCaller caller, std::vector<std::string> names,
            std::vector<ResolvedName> resolved, DiscoveryResponse* response, absl::Time deadline)
      : service_(service),
        limit_key_(caller.LimitKey()),
        names_(std::move(names)),
        resolved_(std::move(resolved)),
        response_(response),
        deadline_(deadline) {
    for (const ResolvedName& name : resolved_) {
      if (name.identity.has_value()) service_->manager()->Retain(*name.identity);
    }
  }
  ~FetchCall() override {
    for (const ResolvedName& name : resolved_) {
      if (name.identity.has_value()) service_->manager()->Release(*name.identity);
    }
  }

  // Answers at once when everything is there already.
  void Begin() { TryComplete(); }

  void OnCertificate(const crypto::SpiffeId&) override { TryComplete(); }
  void OnBundle() override { TryComplete(); }
  void OnIssueFailed(const crypto::SpiffeId& identity, const absl::Status& error) override {
    for (const ResolvedName& name : resolved_) {
      if (name.identity == identity) {
        Complete(ToGrpcStatus(absl::Status(
            error.code(), absl::StrCat("issuing ", identity.ToString(), ": ", error.message()))));
        return;
      }
    }
  }
  void Tick(absl::Time now, bool) override {
    if (now < deadline_) return;
    std::vector<std::string> missing;
    for (std::size_t i = 0; i < names_.size(); ++i) {
      const bool have = resolved_[i].bundle
                            ? service_->manager()->Bundle() != nullptr
                            : service_->manager()->Current(*resolved_[i].identity) != nullptr;
      if (!have) missing.push_back(Echo(names_[i]));
    }
    Complete(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("not available yet: ", absl::StrJoin(missing, ", "))));
  }
  void OnCancel() override { Complete(grpc::Status::CANCELLED); }
  void OnDone() override { std::shared_ptr<Call> last = service_->Forget(this, limit_key_); }

 private:
  void TryComplete() {
    {
      absl::MutexLock lock(&mu_);
      if (completed_) return;
      DiscoveryResponse answer;
      std::vector<std::string> versions;
      for (std::size_t i = 0; i < names_.size(); ++i) {
        if (resolved_[i].bundle) {
          std::shared_ptr<const TrustBundleSnapshot> bundle = service_->manager()->Bundle();
          if (bundle == nullptr) return;
          versions.push_back(bundle->version);
          *answer.add_resources() = PackSecret(MakeValidationContextSecret(bundle->roots_pem));
          continue;
        }
        std::shared_ptr<const IssuedIdentity> issued =
            service_->manager()->Current(*resolved_[i].identity);
        if (issued == nullptr) return;
        versions.push_back(issued->version);
        *answer.add_resources() = PackSecret(MakeTlsCertificateSecret(
            names_[i], issued->credentials.cert_chain_pem, issued->credentials.private_key_pem));
      }
      answer.set_version_info(absl::StrJoin(versions, ","));
      answer.set_type_url(std::string(kSecretTypeUrl));
      *response_ = std::move(answer);
      completed_ = true;
    }
    Finish(grpc::Status::OK);
  }

  void Complete(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (completed_) return;
      completed_ = true;
    }
    Finish(std::move(status));
  }

  SdsServer::Service* const service_;
  const std::string limit_key_;
  const std::vector<std::string> names_;
  const std::vector<ResolvedName> resolved_;
  DiscoveryResponse* const response_;
  const absl::Time deadline_;
  absl::Mutex mu_;
  bool completed_ ABSL_GUARDED_BY(mu_) = false;
};

// A stream turned away before it started (over its caller's limit).
template <typename Request, typename Response>
class RefusedStream final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit RefusedStream(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

absl::StatusOr<SdsCaller> SdsServer::Service::Admit(const std::string& peer) {
  SdsCaller caller;
  std::optional<AcceptedPeer> accepted =
      listener_ != nullptr ? listener_->Lookup(peer) : std::nullopt;
  if (accepted.has_value()) {
    caller.peer = accepted->credentials;
    caller.scope = accepted->scope;
    if (options_.workloads == nullptr) {
      caller.unattributed_reason =
          "nodeward-sds has no workload inventory (--config-dir or --kubernetes-inventory)";
    } else if (absl::StatusOr<WorkloadResolver::Workload> workload =
                   options_.workloads->WorkloadOf(caller.peer);
               workload.ok()) {
      caller.workload = workload->identity;
      caller.pod = workload->pod;
    } else {
      caller.unattributed_reason = std::string(workload.status().message());
    }
  } else {
    // Not a connection the listener handed over: nothing is known of it, and the workload
    // socket's narrower rules apply.
    caller.scope = CallerScope::kWorkload;
    caller.peer.uid = static_cast<uid_t>(-1);
    caller.unattributed_reason = absl::StrCat("connection ", Echo(peer), " is not known");
  }
  const std::string key = caller.LimitKey();
  absl::MutexLock lock(&mu_);
  int& open = per_caller_[key];
  if (open >= options_.max_calls_per_caller) {
    ++refused_over_limit_;
    const absl::Time now = absl::Now();
    if (now - last_limit_log_ >= absl::Seconds(1)) {
      last_limit_log_ = now;
      LogWarning("SDS: refused a call from ", caller.Describe(), ": ", open,
                 " calls open, the most one caller may have (", refused_over_limit_,
                 " refused so far)");
    }
    return absl::ResourceExhaustedError(
        absl::StrCat("this caller has ", open, " SDS calls open, the most one caller may have"));
  }
  ++open;
  return caller;
}

void SdsServer::Service::Track(std::shared_ptr<Call> call, bool fetch) {
  absl::MutexLock lock(&mu_);
  Call* key = call.get();
  calls_.emplace(key, Tracked{std::move(call), fetch});
  if (fetch) ++fetches_;
  peak_calls_ = std::max<std::int64_t>(peak_calls_, calls_.size());
}

void SdsServer::Service::Leave(const std::string& limit_key) {
  absl::MutexLock lock(&mu_);
  LeaveLocked(limit_key);
}

void SdsServer::Service::LeaveLocked(const std::string& limit_key) {
  if (auto it = per_caller_.find(limit_key); it != per_caller_.end() && --it->second <= 0) {
    per_caller_.erase(it);
  }
}

std::shared_ptr<Call> SdsServer::Service::Forget(Call* call, const std::string& limit_key) {
  absl::MutexLock lock(&mu_);
  LeaveLocked(limit_key);
  auto it = calls_.find(call);
  if (it == calls_.end()) return nullptr;
  std::shared_ptr<Call> last = std::move(it->second.call);
  if (it->second.fetch) --fetches_;
  calls_.erase(it);
  return last;
}

std::vector<std::shared_ptr<Call>> SdsServer::Service::Calls(bool fetches_only) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<Call>> out;
  out.reserve(fetches_only ? fetches_ : calls_.size());
  for (const auto& [key, tracked] : calls_) {
    if (!fetches_only || tracked.fetch) out.push_back(tracked.call);
  }
  return out;
}

template <typename CallType, typename Request, typename Response>
grpc::ServerBidiReactor<Request, Response>* SdsServer::Service::Open(
    grpc::CallbackServerContext* context, SecretStream::Variant variant) {
  absl::StatusOr<SdsCaller> caller = Admit(context->peer());
  if (!caller.ok()) return new RefusedStream<Request, Response>(caller.status());
  auto call = std::make_shared<CallType>(this, variant, *std::move(caller));
  Track(call, /*fetch=*/false);
  call->Begin();
  return call.get();
}

grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* SdsServer::Service::StreamSecrets(
    grpc::CallbackServerContext* context) {
  return Open<StateOfTheWorldCall, DiscoveryRequest, DiscoveryResponse>(
      context, SecretStream::Variant::kStateOfTheWorld);
}

grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>*
SdsServer::Service::DeltaSecrets(grpc::CallbackServerContext* context) {
  return Open<DeltaCall, DeltaDiscoveryRequest, DeltaDiscoveryResponse>(
      context, SecretStream::Variant::kDelta);
}

grpc::ServerUnaryReactor* SdsServer::Service::FetchSecrets(grpc::CallbackServerContext* context,
                                                           const DiscoveryRequest* request,
                                                           DiscoveryResponse* response) {
  auto refuse = [context](grpc::Status status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(std::move(status));
    return reactor;
  };
  if (std::optional<grpc::Status> bad = CheckTypeUrl(request->type_url())) return refuse(*bad);
  if (request->resource_names().empty()) {
    return refuse(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     "FetchSecrets needs resource names (default, ROOTCA or SPIFFE IDs)"));
  }
  if (static_cast<std::size_t>(request->resource_names_size()) > SecretStream::kMaxNames) {
    return refuse(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("FetchSecrets takes at most ", SecretStream::kMaxNames, " names")));
  }
  absl::StatusOr<SdsCaller> caller = Admit(context->peer());
  if (!caller.ok()) return refuse(ToGrpcStatus(caller.status()));
  std::vector<std::string> names(request->resource_names().begin(),
                                 request->resource_names().end());
  std::vector<ResolvedName> resolved;
  for (const std::string& name : names) {
    resolved.push_back(ResolveName(name, *caller, *authorizer_));
    if (const std::optional<NameError>& error = resolved.back().error) {
      counters_.Count(error->kind);
      LogWarning("SDS: FetchSecrets of \"", Echo(name), "\" refused to ", caller->Describe(), ": ",
                 error->status.message());
      Leave(caller->LimitKey());
      return refuse(NameRefused(Echo(name), *error));
    }
  }
  const absl::Time deadline =
      std::min(absl::FromChrono(context->deadline()), absl::Now() + options_.fetch_timeout);
  auto call = std::make_shared<FetchCall>(this, *caller, std::move(names), std::move(resolved),
                                          response, deadline);
  // Tracking it also wakes the housekeeping thread to watch its deadline.
  Track(call, /*fetch=*/true);
  call->Begin();
  return call.get();
}

void SdsServer::Service::StartHousekeeping() {
  housekeeping_ = std::thread([this] { Housekeeping(); });
}

void SdsServer::Service::StopHousekeeping() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (housekeeping_.joinable()) housekeeping_.join();
}

void SdsServer::Service::Housekeeping() {
  absl::Time next_recheck = absl::Now() + options_.recheck_interval;
  while (true) {
    bool trim = false;
    {
      absl::MutexLock lock(&mu_);
      // Woken early by stopping and by the first FetchSecrets call to wait.
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || fetches_ > 0; };
      const absl::Time until = fetches_ > 0
                                   ? std::min(next_recheck, absl::Now() + kFetchDeadlineResolution)
                                   : next_recheck;
      if (fetches_ > 0) {
        mu_.AwaitWithDeadline(absl::Condition(&stopping_), until);
      } else {
        mu_.AwaitWithDeadline(absl::Condition(&wake), until);
      }
      if (stopping_) return;
      const auto open = static_cast<std::int64_t>(calls_.size());
      if (peak_calls_ - open >= kTrimAfterClosedCalls && open < peak_calls_ / 2) {
        trim = true;
        peak_calls_ = open;
      }
    }
    // A burst of calls that closed leaves its memory in the heap's free lists; give it back.
    if (trim) ::malloc_trim(0);
    const absl::Time now = absl::Now();
    const bool recheck = now >= next_recheck;
    if (recheck) next_recheck = now + options_.recheck_interval;
    for (const std::shared_ptr<Call>& call : Calls(/*fetches_only=*/!recheck)) {
      call->Tick(now, recheck);
    }
  }
}

SdsServerStats SdsServer::Service::Stats() const {
  SdsServerStats stats;
  {
    absl::MutexLock lock(&mu_);
    stats.open_calls = static_cast<std::int64_t>(calls_.size());
    stats.calls_refused_over_limit = refused_over_limit_;
  }
  stats.nacks = counters_.nacks.load();
  for (std::size_t i = 0; i < kResourceErrorKinds; ++i) {
    stats.resource_errors[i] = counters_.resource_errors[i].load();
  }
  return stats;
}

int SdsServer::Service::open_streams() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(calls_.size()) - fetches_;
}

SdsServer::SdsServer(IdentityManager* manager, IdentityAuthorizer* authorizer,
                     SdsServerOptions options)
    : options_(std::move(options)),
      service_(std::make_unique<Service>(manager, authorizer, options_)) {}

SdsServer::~SdsServer() { Shutdown(); }

absl::Status SdsServer::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("SDS server already started");
  std::vector<PeerListener::Socket> sockets = {{options_.socket_path, 0660, CallerScope::kNode}};
  if (!options_.workload_socket_path.empty()) {
    sockets.push_back({options_.workload_socket_path, 0666, CallerScope::kWorkload});
  }
  absl::StatusOr<std::unique_ptr<PeerListener>> listener = PeerListener::Bind(std::move(sockets));
  if (!listener.ok()) return listener.status();
  listener_ = *std::move(listener);
  service_->set_listener(listener_.get());

  grpc::ServerBuilder builder;
  builder.RegisterService(service_.get());
  // One connection may carry no more streams than its caller may have.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_calls_per_caller);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    listener_.reset();
    return absl::UnavailableError("cannot start the SDS gRPC server");
  }
  service_->manager()->AddObserver(service_.get());
  service_->StartHousekeeping();
  listener_->Start(
      [server = server_.get()](int fd) { grpc::AddInsecureChannelFromFd(server, fd); });
  LogInfo("serving SDS on unix:", options_.socket_path,
          options_.workload_socket_path.empty()
              ? ""
              : absl::StrCat(" and, for pods, on unix:", options_.workload_socket_path));
  return absl::OkStatus();
}

void SdsServer::Shutdown() {
  if (server_ == nullptr) return;
  listener_->Stop();
  // Streams never end on their own: cancel them right away. Shutdown returns once every
  // call is done.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
  service_->manager()->RemoveObserver(service_.get());
  service_->StopHousekeeping();
  service_->set_listener(nullptr);
  listener_.reset();
}

int SdsServer::active_streams() const { return service_->open_streams(); }
std::int64_t SdsServer::nacks_received() const { return service_->Stats().nacks; }
SdsServerStats SdsServer::Stats() const { return service_->Stats(); }

std::string RenderSdsMetrics(const SdsServerStats& stats) {
  std::string out =
      "# HELP nodeward_sds_open_calls SDS streams and fetches open.\n"
      "# TYPE nodeward_sds_open_calls gauge\n";
  absl::StrAppend(&out, "nodeward_sds_open_calls ", stats.open_calls, "\n");
  absl::StrAppend(&out,
                  "# HELP nodeward_sds_calls_refused_total SDS calls refused because their "
                  "caller had as many open as it may.\n"
                  "# TYPE nodeward_sds_calls_refused_total counter\n"
                  "nodeward_sds_calls_refused_total ",
                  stats.calls_refused_over_limit, "\n");
  absl::StrAppend(&out,
                  "# HELP nodeward_sds_nacks_total Responses clients rejected.\n"
                  "# TYPE nodeward_sds_nacks_total counter\n"
                  "nodeward_sds_nacks_total ",
                  stats.nacks, "\n");
  absl::StrAppend(&out,
                  "# HELP nodeward_sds_resource_errors_total Resource names that could not be "
                  "served, by reason.\n"
                  "# TYPE nodeward_sds_resource_errors_total counter\n");
  for (std::size_t i = 0; i < kResourceErrorKinds; ++i) {
    absl::StrAppend(&out, "nodeward_sds_resource_errors_total{reason=\"",
                    ResourceErrorName(static_cast<ResourceError>(i)), "\"} ",
                    stats.resource_errors[i], "\n");
  }
  return out;
}

}  // namespace nodeward::sds
