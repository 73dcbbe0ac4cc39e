#include "sds/ca_service.h"

#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "crypto/certificate.h"
#include "crypto/keys.h"
#include "grpcpp/grpcpp.h"
#include "istio/v1/auth/ca.grpc.pb.h"
#include "sds/log.h"

namespace nodeward::sds {

absl::StatusOr<absl::flat_hash_map<std::string, CaCaller>> ParseCaTokens(absl::string_view text) {
  absl::flat_hash_map<std::string, CaCaller> callers;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": want \"<token> <node-name> [spiffe-id ...]\""));
    }
    CaCaller caller{std::string(fields[1]), std::nullopt};
    if (fields.size() > 2) {
      caller.allowed_identities.emplace();
      for (std::size_t i = 2; i < fields.size(); ++i) {
        absl::StatusOr<crypto::SpiffeId> id =
            crypto::SpiffeId::Parse(std::string_view(fields[i].data(), fields[i].size()));
        if (!id.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("line ", line_number, ": ", id.status().message()));
        }
        caller.allowed_identities->insert(*std::move(id));
      }
    }
    if (!callers.emplace(std::string(fields[0]), std::move(caller)).second) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": duplicate token"));
    }
  }
  return callers;
}

absl::Status CaTokenStore::Reload() {
  std::ifstream in(path_);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read CA tokens file ", path_));
  std::stringstream contents;
  contents << in.rdbuf();
  absl::StatusOr<absl::flat_hash_map<std::string, CaCaller>> parsed = ParseCaTokens(contents.str());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, " ", parsed.status().message()));
  }
  absl::MutexLock lock(&mu_);
  callers_ = *std::move(parsed);
  return absl::OkStatus();
}

std::optional<CaCaller> CaTokenStore::Lookup(absl::string_view token) const {
  absl::MutexLock lock(&mu_);
  auto it = callers_.find(token);
  if (it == callers_.end()) return std::nullopt;
  return it->second;
}

class CaServer::Service final : public istio::v1::auth::IstioCertificateService::Service {
 public:
  Service(CertificateSigner* signer, CaTokenStore* tokens, const CaServiceOptions& options)
      : signer_(signer), tokens_(tokens), options_(options) {}

  grpc::Status CreateCertificate(grpc::ServerContext* context,
                                 const istio::v1::auth::IstioCertificateRequest* request,
                                 istio::v1::auth::IstioCertificateResponse* response) override {
    std::optional<CaCaller> caller = Authenticate(*context);
    if (!caller.has_value()) {
      LogWarning("CA: unauthenticated request from ", context->peer());
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "a valid bearer token is required in the authorization metadata");
    }
    absl::StatusOr<crypto::SpiffeId> identity = crypto::ParseCsrIdentity(request->csr());
    if (!identity.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("bad CSR: ", identity.status().message()));
    }
    if (identity->trust_domain() != options_.trust_domain) {
      return grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          absl::StrCat(identity->ToString(), " is outside trust domain ", options_.trust_domain));
    }
    if (caller->allowed_identities.has_value() &&
        !caller->allowed_identities->contains(*identity)) {
      LogWarning("CA: node ", caller->node, " refused ", identity->ToString());
      return grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          absl::StrCat("node ", caller->node, " may not request ", identity->ToString()));
    }
    absl::Duration lifetime = options_.default_lifetime;
    if (request->validity_duration() > 0) {
      lifetime = std::min(absl::Seconds(request->validity_duration()), options_.max_lifetime);
    }
    absl::StatusOr<SignedChain> signed_chain = signer_->Sign(request->csr(), *identity, lifetime);
    if (!signed_chain.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("signing failed: ", signed_chain.status().message()));
    }
    absl::StatusOr<std::vector<std::string>> chain =
        crypto::SplitPemCertificates(signed_chain->chain_pem);
    absl::StatusOr<std::vector<std::string>> roots =
        crypto::SplitPemCertificates(signed_chain->roots_pem);
    if (!chain.ok() || !roots.ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "CA produced an unparseable chain");
    }
    for (std::string& pem : *chain) response->add_cert_chain(std::move(pem));
    // The root the chain verifies to goes last, as Istio does; with several roots (during a
    // root rotation) the current one is first in the CA's bundle.
    response->add_cert_chain(std::move(roots->front()));
    LogInfo("CA: issued ", identity->ToString(), " to node ", caller->node, " for ",
            absl::FormatDuration(lifetime));
    return grpc::Status::OK;
  }

 private:
  std::optional<CaCaller> Authenticate(const grpc::ServerContext& context) const {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it == metadata.end()) return std::nullopt;
    absl::string_view value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "Bearer ";
    if (!absl::StartsWithIgnoreCase(value, kBearer)) return std::nullopt;
    value.remove_prefix(kBearer.size());
    value = absl::StripAsciiWhitespace(value);
    if (value.empty()) return std::nullopt;
    return tokens_->Lookup(value);
  }

  CertificateSigner* const signer_;
  CaTokenStore* const tokens_;
  const CaServiceOptions options_;
};

CaServer::CaServer(CertificateSigner* signer, CaTokenStore* tokens, CaServiceOptions options)
    : options_(std::move(options)), service_(std::make_unique<Service>(signer, tokens, options_)) {}

CaServer::~CaServer() { Shutdown(); }

absl::Status CaServer::Start() {
  if (server_ != nullptr) return absl::FailedPreconditionError("CA server already started");
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({options_.server_key_pem, options_.server_cert_chain_pem});
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address, grpc::SslServerCredentials(ssl), &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen_address));
  }
  LogInfo("serving IstioCertificateService on ", options_.listen_address, " (port ", port_, ")");
  return absl::OkStatus();
}

void CaServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
}

}  // namespace nodeward::sds
