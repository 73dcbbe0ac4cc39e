// Addresses and SPIFFE IDs written as text in tests, where a literal that does not parse is a
// mistake in the test itself: it stops the test binary with the literal named.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "common/net_address.h"
#include "common/spiffe_id.h"

namespace nodeward::literals {

inline IpAddress IpOf(absl::string_view text) {
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(text);
  if (!ip.ok()) {
    std::fprintf(stderr, "test literal: %s\n", std::string(ip.status().message()).c_str());
    std::abort();
  }
  return *ip;
}

inline SpiffeId IdOf(absl::string_view text) {
  absl::StatusOr<SpiffeId> id = SpiffeId::Parse(std::string_view(text.data(), text.size()));
  if (!id.ok()) {
    std::fprintf(stderr, "test literal %s: %s\n", std::string(text).c_str(),
                 std::string(id.status().message()).c_str());
    std::abort();
  }
  return *id;
}

}  // namespace nodeward::literals
