#include "sds/sds_client.h"

#include "absl/strings/str_cat.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "grpcpp/grpcpp.h"
#include "sds/log.h"

namespace nodeward::sds {

using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;

namespace {

// The resource named by a refusal's ErrorInfo, if the status carries one.
std::optional<std::string> RefusedResource(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::PERMISSION_DENIED) return std::nullopt;
  google::rpc::Status detail;
  if (status.error_details().empty() || !detail.ParseFromString(status.error_details())) {
    return std::nullopt;
  }
  for (const google::protobuf::Any& any : detail.details()) {
    google::rpc::ErrorInfo info;
    if (!any.UnpackTo(&info) || info.domain() != kErrorDomain) continue;
    auto it = info.metadata().find(std::string(kErrorResourceKey));
    if (it != info.metadata().end()) return it->second;
  }
  return std::nullopt;
}

}  // namespace

SdsClient::SdsClient(SdsClientOptions options, Handler* handler)
    : options_(std::move(options)), handler_(handler) {}

SdsClient::~SdsClient() { Stop(); }

void SdsClient::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Run(); });
}

void SdsClient::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

std::int64_t SdsClient::connections() const {
  absl::MutexLock lock(const_cast<absl::Mutex*>(&mu_));
  return connections_;
}

bool SdsClient::connected() const {
  absl::MutexLock lock(&write_mu_);
  return stream_ != nullptr;
}

DiscoveryRequest SdsClient::BaseRequestLocked() const {
  DiscoveryRequest request;
  request.set_type_url(std::string(kSecretTypeUrl));
  request.mutable_node()->set_id(options_.node_id);
  for (const std::string& name : names_) request.add_resource_names(name);
  request.set_version_info(accepted_version_);
  return request;
}

void SdsClient::SetResourceNames(std::vector<std::string> names) {
  absl::MutexLock lock(&write_mu_);
  if (names == names_) return;
  names_ = std::move(names);
  if (stream_ == nullptr) return;
  DiscoveryRequest request = BaseRequestLocked();
  request.set_response_nonce(last_nonce_);
  // A failed write means the stream is ending; the reader sees it and reconnects.
  stream_->Write(request);
}

absl::Status SdsClient::Probe(const std::string& resource, absl::Duration timeout) const {
  auto channel = grpc::CreateChannel(absl::StrCat("unix:", options_.socket_path),
                                     grpc::InsecureChannelCredentials());
  auto stub = envoy::service::secret::v3::SecretDiscoveryService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  DiscoveryRequest request;
  request.set_type_url(std::string(kSecretTypeUrl));
  request.mutable_node()->set_id(options_.node_id);
  request.add_resource_names(resource);
  DiscoveryResponse response;
  grpc::Status status = stub->FetchSecrets(&context, request, &response);
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void SdsClient::Run() {
  Backoff backoff(options_.reconnect);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    bool received_any = false;
    absl::Status ended = RunStream(&received_any);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    handler_->OnDisconnected(ended);
    if (received_any) backoff.Reset();
    absl::Duration delay = backoff.Next();
    LogInfo("SDS stream to ", options_.socket_path, " ended (", ended.ToString(),
            "); reconnecting in ", absl::FormatDuration(delay));
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), delay);
  }
}

absl::Status SdsClient::RunStream(bool* received_any) {
  auto channel = grpc::CreateChannel(absl::StrCat("unix:", options_.socket_path),
                                     grpc::InsecureChannelCredentials());
  auto stub = envoy::service::secret::v3::SecretDiscoveryService::NewStub(channel);
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
    context_ = &context;
    ++connections_;
  }
  std::unique_ptr<Stream> stream = stub->StreamSecrets(&context);
  {
    absl::MutexLock lock(&write_mu_);
    // A new stream starts from scratch: the server sends every resource again.
    accepted_version_.clear();
    last_nonce_.clear();
    stream_ = stream.get();
    stream_->Write(BaseRequestLocked());
  }
  DiscoveryResponse response;
  while (stream->Read(&response)) {
    *received_any = true;
    HandleResponse(response, stream.get());
  }
  {
    absl::MutexLock lock(&write_mu_);
    stream_ = nullptr;
  }
  grpc::Status status = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
  }
  absl::Status ended(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  if (ended.ok()) ended = absl::UnavailableError("server closed the stream");
  if (std::optional<std::string> refused = RefusedResource(status); refused.has_value()) {
    handler_->OnRefused(*refused, ended);
  }
  return ended;
}

void SdsClient::HandleResponse(const DiscoveryResponse& response, Stream* stream) {
  absl::Status verdict = absl::OkStatus();
  if (response.type_url() != kSecretTypeUrl) {
    verdict = absl::InvalidArgumentError(
        absl::StrCat("response type ", response.type_url(), ", want ", kSecretTypeUrl));
  }
  for (const google::protobuf::Any& resource : response.resources()) {
    if (!verdict.ok()) break;
    absl::StatusOr<ReceivedSecret> secret = UnpackSecret(resource);
    if (!secret.ok()) {
      verdict = secret.status();
      break;
    }
    verdict = handler_->OnSecret(*secret);
  }
  absl::MutexLock lock(&write_mu_);
  last_nonce_ = response.nonce();
  if (verdict.ok()) accepted_version_ = response.version_info();
  DiscoveryRequest request = BaseRequestLocked();
  request.set_response_nonce(response.nonce());
  if (!verdict.ok()) {
    *request.mutable_error_detail() = ToRpcStatus(verdict);
    LogWarning("rejected SDS version ", response.version_info(), ": ", verdict.message());
  }
  stream->Write(request);
}

}  // namespace nodeward::sds
