// SpiffeId::Parse on arbitrary input: never crashes, every refusal has a reason, and whatever
// it accepts formats back to exactly the input (no normalisation that two peers could read
// differently).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/spiffe_id.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<nodeward::SpiffeId> id = nodeward::SpiffeId::Parse(input);
  if (!id.ok()) {
    if (id.status().message().empty()) __builtin_trap();
    return 0;
  }
  if (id->ToString() != input) __builtin_trap();
  absl::StatusOr<nodeward::SpiffeId> made =
      nodeward::SpiffeId::Make(id->trust_domain(), id->ns(), id->service_account());
  if (!made.ok() || *made != *id) __builtin_trap();
  return 0;
}
