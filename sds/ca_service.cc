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
#include "sds/secret_resources.h"

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
    CaCaller caller{std::string(fields[1]), std::nullopt, std::nullopt};
    if (fields.size() > 2) {
      caller.allowed_identities.emplace();
      for (std::size_t i = 2; i < fields.size(); ++i) {
        absl::StatusOr<SpiffeId> id =
            SpiffeId::Parse(std::string_view(fields[i].data(), fields[i].size()));
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

namespace {

// The metadata key by which a node asks for a workload's certificate, as ztunnel asks istiod.
constexpr char kImpersonatedIdentity[] = "ImpersonatedIdentity";

grpc::Status Refuse(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

// A signer's refusal keeps its meaning for the caller; anything else is the CA's own failure.
grpc::Status SigningFailed(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
      return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                          std::string(status.message()));
    default:
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("signing failed: ", status.message()));
  }
}

}  // namespace

std::string CaCaller::Describe() const {
  if (workload.has_value()) return absl::StrCat("workload ", workload->ToString());
  return absl::StrCat("node ", node);
}

absl::StatusOr<CaCaller> CaTokenStore::Authenticate(absl::string_view token) {
  std::optional<CaCaller> caller = Lookup(token);
  if (!caller.has_value()) return absl::NotFoundError("not a node token");
  return *std::move(caller);
}

class CaServer::Service final : public istio::v1::auth::IstioCertificateService::Service {
 public:
  Service(CertificateSigner* signer, std::vector<CaAuthenticator*> authenticators,
          const CaServiceOptions& options)
      : signer_(signer), authenticators_(std::move(authenticators)), options_(options) {}

  grpc::Status CreateCertificate(grpc::ServerContext* context,
                                 const istio::v1::auth::IstioCertificateRequest* request,
                                 istio::v1::auth::IstioCertificateResponse* response) override {
    absl::StatusOr<CaCaller> caller = Authenticate(*context);
    if (!caller.ok()) {
      LogWarning("CA: request from ", context->peer(),
                 " not authenticated: ", caller.status().message());
      return grpc::Status(caller.status().code() == absl::StatusCode::kUnavailable
                              ? grpc::StatusCode::UNAVAILABLE
                              : grpc::StatusCode::UNAUTHENTICATED,
                          std::string(caller.status().message()));
    }
    absl::StatusOr<crypto::CsrInfo> csr = crypto::InspectCsr(request->csr());
    if (!csr.ok()) {
      return Refuse(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrCat("bad CSR: ", csr.status().message()));
    }
    std::string impersonated;
    if (request->has_metadata()) {
      auto field = request->metadata().fields().find(kImpersonatedIdentity);
      if (field != request->metadata().fields().end()) {
        impersonated = field->second.string_value();
      }
    }
    absl::StatusOr<SpiffeId> identity = IdentityFor(*caller, request->csr(), impersonated);
    if (!identity.ok()) {
      LogWarning("CA: ", caller->Describe(), " refused: ", identity.status().message());
      return grpc::Status(static_cast<grpc::StatusCode>(identity.status().code()),
                          std::string(identity.status().message()));
    }
    absl::Duration lifetime = options_.default_lifetime;
    if (request->validity_duration() > 0) {
      lifetime = std::min(absl::Seconds(request->validity_duration()), options_.max_lifetime);
    }
    absl::StatusOr<SignedChain> signed_chain = signer_->Sign(request->csr(), *identity, lifetime);
    if (!signed_chain.ok()) {
      LogWarning("CA: signing ", identity->ToString(), " for ", caller->Describe(),
                 " failed: ", signed_chain.status().message());
      return SigningFailed(signed_chain.status());
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
    LogInfo("CA: issued ", identity->ToString(), " (", csr->key_type, ") to ", caller->Describe(),
            " for ", absl::FormatDuration(lifetime));
    return grpc::Status::OK;
  }

 private:
  absl::StatusOr<CaCaller> Authenticate(const grpc::ServerContext& context) const {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return absl::UnauthenticatedError("a bearer token is required in the authorization metadata");
    }
    absl::string_view value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "Bearer ";
    if (!absl::StartsWithIgnoreCase(value, kBearer)) {
      return absl::UnauthenticatedError("the authorization metadata is not a bearer token");
    }
    value.remove_prefix(kBearer.size());
    value = absl::StripAsciiWhitespace(value);
    if (value.empty()) return absl::UnauthenticatedError("the bearer token is empty");
    for (CaAuthenticator* authenticator : authenticators_) {
      absl::StatusOr<CaCaller> caller = authenticator->Authenticate(value);
      if (caller.ok() || caller.status().code() != absl::StatusCode::kNotFound) return caller;
    }
    return absl::UnauthenticatedError("the bearer token is not valid");
  }

  // What the caller gets: a workload its own identity (a CSR naming another is refused when
  // signed); a node what the CSR, or the impersonation metadata, names, if it may hold it.
  absl::StatusOr<SpiffeId> IdentityFor(const CaCaller& caller, const std::string& csr,
                                       const std::string& impersonated) const {
    if (caller.workload.has_value()) {
      if (!impersonated.empty() && impersonated != caller.workload->ToString()) {
        return absl::PermissionDeniedError(absl::StrCat(
            "a workload may not impersonate another identity (", Echo(impersonated), ")"));
      }
      return *caller.workload;
    }
    absl::StatusOr<SpiffeId> identity = impersonated.empty()
                                            ? crypto::ParseCsrIdentity(csr)
                                            : SpiffeId::Parse(std::string_view(impersonated));
    if (!identity.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(impersonated.empty() ? "bad CSR: " : "bad ImpersonatedIdentity: ",
                       identity.status().message()));
    }
    if (identity->trust_domain() != options_.trust_domain) {
      return absl::PermissionDeniedError(
          absl::StrCat(identity->ToString(), " is outside trust domain ", options_.trust_domain));
    }
    if (caller.allowed_identities.has_value() && !caller.allowed_identities->contains(*identity)) {
      return absl::PermissionDeniedError(
          absl::StrCat("node ", caller.node, " may not request ", identity->ToString()));
    }
    return identity;
  }

  CertificateSigner* const signer_;
  const std::vector<CaAuthenticator*> authenticators_;
  const CaServiceOptions options_;
};

CaServer::CaServer(CertificateSigner* signer, std::vector<CaAuthenticator*> authenticators,
                   CaServiceOptions options)
    : options_(std::move(options)),
      service_(std::make_unique<Service>(signer, std::move(authenticators), options_)) {}

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
