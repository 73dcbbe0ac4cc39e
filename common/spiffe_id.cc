#include "common/spiffe_id.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nodeward {
namespace {

constexpr std::string_view kScheme = "spiffe://";

// This abseil build keeps its own string_view type.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
// DNS names cannot be longer, and the SPIFFE spec caps trust domains at the same length.
constexpr std::size_t kMaxTrustDomainLength = 255;

bool IsTrustDomainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool IsPathSegmentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

absl::Status ValidateTrustDomain(std::string_view td) {
  if (td.empty()) return absl::InvalidArgumentError("SPIFFE ID has an empty trust domain");
  if (td.size() > kMaxTrustDomainLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("trust domain is longer than ", kMaxTrustDomainLength, " characters"));
  }
  for (char c : td) {
    if (c == ':') return absl::InvalidArgumentError("trust domain must not carry a port");
    if (c == '@') return absl::InvalidArgumentError("trust domain must not carry userinfo");
    if (!IsTrustDomainChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat("trust domain has an illegal character '",
                                                     absl::string_view(&c, 1),
                                                     "' (allowed: a-z 0-9 . - _)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSegment(std::string_view what, std::string_view segment) {
  if (segment.empty()) return absl::InvalidArgumentError(absl::StrCat(Sv(what), " is empty"));
  if (segment == "." || segment == "..") {
    return absl::InvalidArgumentError(absl::StrCat(Sv(what), " must not be '.' or '..'"));
  }
  for (char c : segment) {
    if (!IsPathSegmentChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(Sv(what), " has an illegal character '",
                                                     absl::string_view(&c, 1),
                                                     "' (allowed: A-Z a-z 0-9 . - _)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SpiffeId> SpiffeId::Parse(std::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError("SPIFFE ID is empty");
  if (uri.size() > kMaxSpiffeIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("SPIFFE ID is longer than ", kMaxSpiffeIdLength, " characters"));
  }
  // These are checked before anything else so that the error names the trick, not a symptom.
  if (uri.find('%') != std::string_view::npos) {
    return absl::InvalidArgumentError("SPIFFE ID must not contain percent-encoding");
  }
  if (uri.find('?') != std::string_view::npos) {
    return absl::InvalidArgumentError("SPIFFE ID must not contain a query");
  }
  if (uri.find('#') != std::string_view::npos) {
    return absl::InvalidArgumentError("SPIFFE ID must not contain a fragment");
  }
  if (!uri.starts_with(kScheme)) {
    return absl::InvalidArgumentError("SPIFFE ID must start with 'spiffe://'");
  }
  std::string_view rest = uri.substr(kScheme.size());
  const std::size_t slash = rest.find('/');
  std::string_view td = rest.substr(0, slash);
  if (absl::Status s = ValidateTrustDomain(td); !s.ok()) return s;
  if (slash == std::string_view::npos) {
    return absl::InvalidArgumentError("SPIFFE ID has no path (want /ns/<namespace>/sa/<sa>)");
  }
  std::vector<std::string_view> parts;
  for (std::string_view path = rest.substr(slash + 1);;) {
    const std::size_t next = path.find('/');
    parts.push_back(path.substr(0, next));
    if (next == std::string_view::npos) break;
    path.remove_prefix(next + 1);
  }
  if (parts.size() != 4 || parts[0] != "ns" || parts[2] != "sa") {
    return absl::InvalidArgumentError(
        "SPIFFE ID path must be exactly /ns/<namespace>/sa/<service-account>");
  }
  if (absl::Status s = ValidateSegment("namespace", parts[1]); !s.ok()) return s;
  if (absl::Status s = ValidateSegment("service account", parts[3]); !s.ok()) return s;
  return SpiffeId(std::string(td), std::string(parts[1]), std::string(parts[3]));
}

absl::StatusOr<SpiffeId> SpiffeId::Make(std::string_view trust_domain, std::string_view ns,
                                        std::string_view service_account) {
  if (absl::Status s = ValidateTrustDomain(trust_domain); !s.ok()) return s;
  if (absl::Status s = ValidateSegment("namespace", ns); !s.ok()) return s;
  if (absl::Status s = ValidateSegment("service account", service_account); !s.ok()) return s;
  SpiffeId id{std::string(trust_domain), std::string(ns), std::string(service_account)};
  if (id.ToString().size() > kMaxSpiffeIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("SPIFFE ID is longer than ", kMaxSpiffeIdLength, " characters"));
  }
  return id;
}

absl::Status SpiffeId::CheckTrustDomain(std::string_view trust_domain) {
  return ValidateTrustDomain(trust_domain);
}

std::string SpiffeId::ToString() const {
  return absl::StrCat(Sv(kScheme), trust_domain_, "/ns/", namespace_, "/sa/", service_account_);
}

}  // namespace nodeward
