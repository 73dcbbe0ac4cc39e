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
#include "sds/sds_calls.h"

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

}  // namespace

class SdsServer::Service final
    : public envoy::service::secret::v3::SecretDiscoveryService::CallbackService,
      public IdentityManager::Observer,
      public CallHost {
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
  void OnIssueFailed(const SpiffeId& identity, const absl::Status& error) override {
    for (const std::shared_ptr<Call>& call : Calls()) call->OnIssueFailed(identity, error);
  }

  // Who `peer` (gRPC's name of the connection) is, counted against the caller's limit.
  absl::StatusOr<SdsCaller> Admit(const std::string& peer);
  // Undoes Admit for a call that did not start.
  void Leave(const std::string& limit_key);
  // Tracks an admitted call, then starts it.
  void Start(std::shared_ptr<Call> call, bool fetch);
  // Stops tracking `call`; the caller that opened it may open another. Returns the last
  // reference, to be dropped outside the lock.
  std::shared_ptr<Call> Forget(Call* call, const std::string& limit_key) override;

  void StartHousekeeping();
  void StopHousekeeping();

  void set_listener(PeerListener* listener) { listener_ = listener; }
  IdentityManager* manager() const override { return manager_; }
  IdentityAuthorizer* authorizer() const override { return authorizer_; }
  SdsCounters* counters() override { return &counters_; }
  WorkloadResolver* workloads() const override { return options_.workloads; }
  SdsServerStats Stats() const;
  int open_streams() const;

 private:
  struct Tracked {
    std::shared_ptr<Call> call;
    bool fetch = false;
  };
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

void SdsServer::Service::Start(std::shared_ptr<Call> call, bool fetch) {
  {
    absl::MutexLock lock(&mu_);
    calls_.emplace(call.get(), Tracked{call, fetch});
    if (fetch) ++fetches_;
    peak_calls_ = std::max<std::int64_t>(peak_calls_, calls_.size());
  }
  call->Begin();
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

grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* SdsServer::Service::StreamSecrets(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<SdsCaller> caller = Admit(context->peer());
  if (!caller.ok()) return RefusedStateOfTheWorldStream(caller.status());
  grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* reactor = nullptr;
  Start(NewStateOfTheWorldCall(this, *std::move(caller), &reactor), /*fetch=*/false);
  return reactor;
}

grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>*
SdsServer::Service::DeltaSecrets(grpc::CallbackServerContext* context) {
  absl::StatusOr<SdsCaller> caller = Admit(context->peer());
  if (!caller.ok()) return RefusedDeltaStream(caller.status());
  grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>* reactor = nullptr;
  Start(NewDeltaCall(this, *std::move(caller), &reactor), /*fetch=*/false);
  return reactor;
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
  grpc::ServerUnaryReactor* reactor = nullptr;
  // Tracking it also wakes the housekeeping thread to watch its deadline.
  Start(NewFetchCall(this, *std::move(caller), std::move(names), std::move(resolved), response,
                     deadline, &reactor),
        /*fetch=*/true);
  return reactor;
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
