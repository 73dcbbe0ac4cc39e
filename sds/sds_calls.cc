#include "sds/sds_calls.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "sds/secret_resources.h"

namespace nodeward::sds {

using envoy::service::discovery::v3::DeltaDiscoveryRequest;
using envoy::service::discovery::v3::DeltaDiscoveryResponse;
using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

std::optional<grpc::Status> CheckTypeUrl(const std::string& type_url) {
  if (type_url.empty() || type_url == kSecretTypeUrl) return std::nullopt;
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("this server only serves ", kSecretTypeUrl, ", not ", Echo(type_url)));
}

namespace {

// A streaming call, state of the world or delta: requests change the subscription, and a
// response is written whenever something subscribed changed and no write is in flight.
// Owned by the service's table until gRPC is done with it; the publications that reach it
// meanwhile hold it too, so it is never used after it is freed.
template <typename Request, typename Response>
class StreamCall : public grpc::ServerBidiReactor<Request, Response>, public Call {
 public:
  StreamCall(CallHost* host, SecretStream::Variant variant, SdsCaller caller)
      : host_(host),
        limit_key_(caller.LimitKey()),
        stream_(variant, host->manager(), host->authorizer(), std::move(caller), host->counters(),
                host->workloads()) {}

  void Begin() override { this->StartRead(&request_); }

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
    std::shared_ptr<Call> last = host_->Forget(this, limit_key_);
    // `last` frees this call on return, unless a publication still holds it.
  }

  void OnCertificate(const SpiffeId& identity) override {
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

  CallHost* const host_;
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
  FetchCall(CallHost* host, SdsCaller caller, std::vector<std::string> names,
            std::vector<ResolvedName> resolved, DiscoveryResponse* response, absl::Time deadline)
      : host_(host),
        limit_key_(caller.LimitKey()),
        names_(std::move(names)),
        resolved_(std::move(resolved)),
        response_(response),
        deadline_(deadline) {
    for (const ResolvedName& name : resolved_) {
      if (name.identity.has_value()) host_->manager()->Retain(*name.identity);
    }
  }
  ~FetchCall() override {
    for (const ResolvedName& name : resolved_) {
      if (name.identity.has_value()) host_->manager()->Release(*name.identity);
    }
  }

  // Answers at once when everything is there already.
  void Begin() override { TryComplete(); }

  void OnCertificate(const SpiffeId&) override { TryComplete(); }
  void OnBundle() override { TryComplete(); }
  void OnIssueFailed(const SpiffeId& identity, const absl::Status& error) override {
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
                            ? host_->manager()->Bundle() != nullptr
                            : host_->manager()->Current(*resolved_[i].identity) != nullptr;
      if (!have) missing.push_back(Echo(names_[i]));
    }
    Complete(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("not available yet: ", absl::StrJoin(missing, ", "))));
  }
  void OnCancel() override { Complete(grpc::Status::CANCELLED); }
  void OnDone() override { std::shared_ptr<Call> last = host_->Forget(this, limit_key_); }

 private:
  void TryComplete() {
    {
      absl::MutexLock lock(&mu_);
      if (completed_) return;
      DiscoveryResponse answer;
      std::vector<std::string> versions;
      for (std::size_t i = 0; i < names_.size(); ++i) {
        if (resolved_[i].bundle) {
          std::shared_ptr<const TrustBundleSnapshot> bundle = host_->manager()->Bundle();
          if (bundle == nullptr) return;
          versions.push_back(bundle->version);
          *answer.add_resources() = PackSecret(MakeValidationContextSecret(bundle->roots_pem));
          continue;
        }
        std::shared_ptr<const IssuedIdentity> issued =
            host_->manager()->Current(*resolved_[i].identity);
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

  CallHost* const host_;
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

std::shared_ptr<Call> NewStateOfTheWorldCall(
    CallHost* host, SdsCaller caller,
    grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>** reactor) {
  auto call = std::make_shared<StateOfTheWorldCall>(host, SecretStream::Variant::kStateOfTheWorld,
                                                    std::move(caller));
  *reactor = call.get();
  return call;
}

std::shared_ptr<Call> NewDeltaCall(
    CallHost* host, SdsCaller caller,
    grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>** reactor) {
  auto call = std::make_shared<DeltaCall>(host, SecretStream::Variant::kDelta, std::move(caller));
  *reactor = call.get();
  return call;
}

std::shared_ptr<Call> NewFetchCall(CallHost* host, SdsCaller caller, std::vector<std::string> names,
                                   std::vector<ResolvedName> resolved, DiscoveryResponse* response,
                                   absl::Time deadline, grpc::ServerUnaryReactor** reactor) {
  auto call = std::make_shared<FetchCall>(host, std::move(caller), std::move(names),
                                          std::move(resolved), response, deadline);
  *reactor = call.get();
  return call;
}

grpc::ServerBidiReactor<DiscoveryRequest, DiscoveryResponse>* RefusedStateOfTheWorldStream(
    const absl::Status& status) {
  return new RefusedStream<DiscoveryRequest, DiscoveryResponse>(status);
}

grpc::ServerBidiReactor<DeltaDiscoveryRequest, DeltaDiscoveryResponse>* RefusedDeltaStream(
    const absl::Status& status) {
  return new RefusedStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(status);
}

}  // namespace nodeward::sds
