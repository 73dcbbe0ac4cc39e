// Enrollment requests come over a socket: any bytes must give a parsed-and-validated request
// or a clear error, never a crash.
#include <cstddef>
#include <cstdint>

#include "agent/capture/enrollment.pb.h"
#include "agent/capture/enrollment_manager.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nodeward::capture::v1::EnrollRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)nodeward::capture::ValidateEnrollRequest(request);
  return 0;
}
