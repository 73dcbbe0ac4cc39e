// How every untrusted port number is read: configuration fields, API objects, flags and
// command lines. Only the canonical decimal form is a port: "08080", "+80", " 80", "0x50" and
// "80.0" are refused rather than read as something the writer may not have meant.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"

namespace nodeward {

inline std::optional<uint16_t> ParsePortNumber(absl::string_view text) {
  if (text.empty() || text.size() > 5 || text.front() == '0') return std::nullopt;
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

}  // namespace nodeward
