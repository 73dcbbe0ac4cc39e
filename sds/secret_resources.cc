#include "sds/secret_resources.h"

#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace nodeward::sds {
namespace {

using envoy::config::core::v3::DataSource;

absl::StatusOr<std::string> InlineData(const DataSource& source, absl::string_view what) {
  switch (source.specifier_case()) {
    case DataSource::kInlineBytes:
      return source.inline_bytes();
    case DataSource::kInlineString:
      return source.inline_string();
    case DataSource::kFilename:
    case DataSource::kEnvironmentVariable:
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be inline data, not a file or environment variable"));
    case DataSource::SPECIFIER_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
}

}  // namespace

absl::StatusOr<ResourceName> ParseResourceName(absl::string_view name) {
  if (name == kRootCaResourceName) return RootCaResource{};
  if (name == kDefaultResourceName) return DefaultResource{};
  if (name.size() > kMaxResourceNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resource name \"", Echo(name), "\" is longer than ", kMaxResourceNameBytes, " bytes"));
  }
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(std::string_view(name.data(), name.size()));
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("resource name \"", Echo(name),
                     "\" is neither ROOTCA, default nor a SPIFFE ID: ", id.status().message()));
  }
  return *std::move(id);
}

std::string Echo(absl::string_view untrusted) {
  constexpr std::size_t kShown = 96;
  if (untrusted.size() <= kShown) return absl::CHexEscape(untrusted);
  return absl::StrCat(absl::CHexEscape(untrusted.substr(0, kShown)), "... (", untrusted.size(),
                      " bytes)");
}

SecretProto MakeTlsCertificateSecret(absl::string_view name, absl::string_view cert_chain_pem,
                                     absl::string_view private_key_pem) {
  SecretProto secret;
  secret.set_name(std::string(name));
  auto* certificate = secret.mutable_tls_certificate();
  certificate->mutable_certificate_chain()->set_inline_bytes(std::string(cert_chain_pem));
  certificate->mutable_private_key()->set_inline_bytes(std::string(private_key_pem));
  return secret;
}

SecretProto MakeValidationContextSecret(absl::string_view trusted_ca_pem) {
  SecretProto secret;
  secret.set_name(std::string(kRootCaResourceName));
  secret.mutable_validation_context()->mutable_trusted_ca()->set_inline_bytes(
      std::string(trusted_ca_pem));
  return secret;
}

google::protobuf::Any PackSecret(const SecretProto& secret) {
  google::protobuf::Any any;
  any.PackFrom(secret);
  return any;
}

absl::StatusOr<ReceivedSecret> UnpackSecret(const google::protobuf::Any& resource) {
  if (resource.type_url() != kSecretTypeUrl) {
    return absl::InvalidArgumentError(
        absl::StrCat("resource has type ", resource.type_url(), ", want ", kSecretTypeUrl));
  }
  SecretProto secret;
  if (!resource.UnpackTo(&secret)) {
    return absl::InvalidArgumentError("resource is not a parseable Secret");
  }
  if (secret.name().empty()) return absl::InvalidArgumentError("Secret has no name");
  absl::StatusOr<ResourceName> name = ParseResourceName(secret.name());
  if (!name.ok()) return name.status();

  if (std::holds_alternative<RootCaResource>(*name)) {
    if (!secret.has_validation_context()) {
      return absl::InvalidArgumentError("ROOTCA must carry a validation_context");
    }
    absl::StatusOr<std::string> roots =
        InlineData(secret.validation_context().trusted_ca(), "ROOTCA trusted_ca");
    if (!roots.ok()) return roots.status();
    return ReceivedBundle{*std::move(roots)};
  }
  if (!secret.has_tls_certificate()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Secret ", secret.name(), " must carry a tls_certificate"));
  }
  absl::StatusOr<std::string> chain = InlineData(secret.tls_certificate().certificate_chain(),
                                                 absl::StrCat(secret.name(), " certificate_chain"));
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key = InlineData(secret.tls_certificate().private_key(),
                                               absl::StrCat(secret.name(), " private_key"));
  if (!key.ok()) return key.status();
  return ReceivedCertificate{secret.name(), *std::move(chain), *std::move(key)};
}

google::rpc::Status ToRpcStatus(const absl::Status& status) {
  google::rpc::Status rpc;
  rpc.set_code(static_cast<int>(status.code()));
  rpc.set_message(std::string(status.message()));
  return rpc;
}

}  // namespace nodeward::sds
