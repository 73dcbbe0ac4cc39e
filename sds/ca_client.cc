#include "sds/ca_client.h"

#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "crypto/certificate.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "istio/v1/auth/ca.grpc.pb.h"

namespace nodeward::sds {
namespace {

// Post-handshake check that the CA is who we expect, by SPIFFE ID (the chain itself is
// verified by gRPC against the configured roots before this runs).
class SpiffeIdVerifier : public grpc::experimental::ExternalCertificateVerifier {
 public:
  explicit SpiffeIdVerifier(std::string expected) : expected_(std::move(expected)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)>, grpc::Status* sync_status) override {
    for (const grpc::string_ref& uri : request->uri_names()) {
      if (std::string_view(uri.data(), uri.size()) == expected_) {
        *sync_status = grpc::Status::OK;
        return true;
      }
    }
    *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                absl::StrCat("CA certificate does not carry ", expected_));
    return true;
  }
  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  const std::string expected_;
};

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read CA token file ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(contents.str()));
  if (token.empty())
    return absl::InvalidArgumentError(absl::StrCat("CA token file ", path, " is empty"));
  return token;
}

}  // namespace

absl::StatusOr<SignedChain> SplitIstioCertChain(const std::vector<std::string>& cert_chain) {
  std::string joined;
  for (const std::string& entry : cert_chain) {
    absl::StrAppend(&joined, entry);
    if (!entry.empty() && entry.back() != '\n') joined.push_back('\n');
  }
  absl::StatusOr<std::vector<std::string>> certificates = crypto::SplitPemCertificates(joined);
  if (!certificates.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CA answer is not a PEM chain: ", certificates.status().message()));
  }
  if (certificates->size() < 2) {
    return absl::InvalidArgumentError(
        "CA answer must hold the leaf and the root (leaf first, root last)");
  }
  SignedChain out;
  for (std::size_t i = 0; i + 1 < certificates->size(); ++i) {
    absl::StrAppend(&out.chain_pem, (*certificates)[i]);
  }
  out.roots_pem = certificates->back();
  return out;
}

absl::StatusOr<std::unique_ptr<IstioCaSigner>> IstioCaSigner::Create(IstioCaClientOptions options) {
  if (options.address.empty()) return absl::InvalidArgumentError("CA address is empty");
  if (options.root_cert_pem.empty()) {
    return absl::InvalidArgumentError("CA root certificate is needed to verify the CA");
  }
  if (absl::StatusOr<std::string> token = ReadToken(options.token_file); !token.ok()) {
    return token.status();
  }
  grpc::ChannelArguments arguments;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.server_identity.has_value()) {
    grpc::experimental::TlsChannelCredentialsOptions tls;
    tls.set_certificate_provider(
        std::make_shared<grpc::experimental::StaticDataCertificateProvider>(options.root_cert_pem));
    tls.watch_root_certs();
    tls.set_verify_server_certs(true);
    tls.set_check_call_host(false);
    tls.set_certificate_verifier(
        grpc::experimental::ExternalCertificateVerifier::Create<SpiffeIdVerifier>(
            options.server_identity->ToString()));
    credentials = grpc::experimental::TlsCredentials(tls);
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.root_cert_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  if (credentials == nullptr) return absl::InternalError("cannot build TLS credentials for the CA");
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.address, credentials, arguments);
  return std::unique_ptr<IstioCaSigner>(new IstioCaSigner(std::move(options), std::move(channel)));
}

IstioCaSigner::IstioCaSigner(IstioCaClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)), channel_(std::move(channel)) {}

std::optional<std::string> IstioCaSigner::KnownRoots() {
  if (options_.initial_trust_bundle_pem.empty()) return std::nullopt;
  return options_.initial_trust_bundle_pem;
}

absl::StatusOr<SignedChain> IstioCaSigner::Sign(const std::string& csr_pem,
                                                const SpiffeId& identity, absl::Duration lifetime) {
  absl::StatusOr<std::string> token = ReadToken(options_.token_file);
  if (!token.ok()) return token.status();
  istio::v1::auth::IstioCertificateRequest request;
  request.set_csr(csr_pem);
  request.set_validity_duration(absl::ToInt64Seconds(lifetime));
  auto& metadata = *request.mutable_metadata()->mutable_fields();
  if (!options_.cluster_id.empty()) metadata["ClusterID"].set_string_value(options_.cluster_id);
  // A node asks for its workloads' certificates as ztunnel asks istiod: istiod signs for the
  // caller's own identity unless the caller, a trusted node account (CA_TRUSTED_NODE_ACCOUNTS),
  // names the workload it asks for and that workload has a pod on the caller's node.
  metadata["ImpersonatedIdentity"].set_string_value(identity.ToString());
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Bearer ", *token));
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  istio::v1::auth::IstioCertificateResponse response;
  auto stub = istio::v1::auth::IstioCertificateService::NewStub(channel_);
  grpc::Status status = stub->CreateCertificate(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("CA ", options_.address, " refused ", identity.ToString(),
                                     ": ", status.error_message()));
  }
  return SplitIstioCertChain({response.cert_chain().begin(), response.cert_chain().end()});
}

}  // namespace nodeward::sds
