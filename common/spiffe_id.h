// SPIFFE identities of Kubernetes workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<sa>.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace nodeward {

// Longest URI accepted, as in the SPIFFE ID spec.
inline constexpr std::size_t kMaxSpiffeIdLength = 2048;
inline constexpr std::string_view kDefaultTrustDomain = "cluster.local";

class SpiffeId {
 public:
  // Accepts only the exact form above: lowercase scheme, a valid trust domain
  // ([a-z0-9.-_], no port or userinfo), segments of [A-Za-z0-9.-_] (no "." or ".."),
  // no percent-encoding, query or fragment. The error says which rule failed.
  static absl::StatusOr<SpiffeId> Parse(std::string_view uri);
  static absl::StatusOr<SpiffeId> Make(std::string_view trust_domain, std::string_view ns,
                                       std::string_view service_account);
  // Whether `trust_domain` can be one of a SPIFFE ID, by the same rules; the error says why not.
  static absl::Status CheckTrustDomain(std::string_view trust_domain);

  const std::string& trust_domain() const { return trust_domain_; }
  const std::string& ns() const { return namespace_; }
  const std::string& service_account() const { return service_account_; }
  std::string ToString() const;

  friend bool operator==(const SpiffeId&, const SpiffeId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const SpiffeId& id) {
    return H::combine(std::move(h), id.trust_domain_, id.namespace_, id.service_account_);
  }

 private:
  SpiffeId(std::string td, std::string ns, std::string sa)
      : trust_domain_(std::move(td)), namespace_(std::move(ns)), service_account_(std::move(sa)) {}
  std::string trust_domain_;
  std::string namespace_;
  std::string service_account_;
};

}  // namespace nodeward
