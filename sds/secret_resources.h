// The SDS resources nodeward serves and consumes, as Envoy v3 Secret messages. Pure functions:
// no I/O, so both ends of the protocol and the tests share one definition of "well formed".
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/spiffe_id.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb.h"
#include "google/protobuf/any.pb.h"
#include "google/rpc/status.pb.h"

namespace nodeward::sds {

inline constexpr absl::string_view kSecretTypeUrl =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
// Resource name of the trust bundle, as Istio names it.
inline constexpr absl::string_view kRootCaResourceName = "ROOTCA";
// Resource name of the caller's own workload certificate, as Envoy configured by Istio asks.
inline constexpr absl::string_view kDefaultResourceName = "default";
// Longest resource name taken: the longest SPIFFE ID.
inline constexpr std::size_t kMaxResourceNameBytes = kMaxSpiffeIdLength;
// Domain of the structured error details nodeward attaches to refusals.
inline constexpr absl::string_view kErrorDomain = "nodeward.io";
inline constexpr absl::string_view kReasonIdentityNotAllowed = "IDENTITY_NOT_ALLOWED";
// ErrorInfo metadata key naming the refused resource.
inline constexpr absl::string_view kErrorResourceKey = "resource";

using SecretProto = envoy::extensions::transport_sockets::tls::v3::Secret;

// A resource name parsed: the bundle, the caller's own certificate or a workload identity.
struct RootCaResource {};
struct DefaultResource {};
using ResourceName = std::variant<RootCaResource, DefaultResource, SpiffeId>;

// Error naming the rule broken when `name` is neither ROOTCA, default nor a SPIFFE ID.
absl::StatusOr<ResourceName> ParseResourceName(absl::string_view name);

// `untrusted` as it may appear in a log line or an error sent back: escaped, and cut after
// 96 bytes (with its length said), so a huge name never becomes a huge message.
std::string Echo(absl::string_view untrusted);

SecretProto MakeTlsCertificateSecret(absl::string_view name, absl::string_view cert_chain_pem,
                                     absl::string_view private_key_pem);
SecretProto MakeValidationContextSecret(absl::string_view trusted_ca_pem);
google::protobuf::Any PackSecret(const SecretProto& secret);

// What a received Secret carries, its PEM extracted from inline_bytes or inline_string.
struct ReceivedCertificate {
  std::string name;
  std::string cert_chain_pem;
  std::string private_key_pem;
};
struct ReceivedBundle {
  std::string trusted_ca_pem;
};
using ReceivedSecret = std::variant<ReceivedCertificate, ReceivedBundle>;

// Unpacks and checks the shape of one resource of a DiscoveryResponse: the type URL, a name,
// inline data (file and environment sources are refused: they would name paths of the server),
// and that ROOTCA carries a validation context and every other name a certificate.
absl::StatusOr<ReceivedSecret> UnpackSecret(const google::protobuf::Any& resource);

// google.rpc.Status for a NACK's error_detail, from an absl::Status.
google::rpc::Status ToRpcStatus(const absl::Status& status);

}  // namespace nodeward::sds
