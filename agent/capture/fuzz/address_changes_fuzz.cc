// Address changes are read off rtnetlink: whatever bytes arrive, the parser returns changes or
// an error and never reads past the buffer.
#include <cstddef>
#include <cstdint>

#include "agent/capture/pod_network.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)nodeward::capture::ParseAddressChanges(absl::MakeConstSpan(data, size));
  return 0;
}
