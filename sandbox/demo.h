// `nodeward-sandbox demo`: brings a sandbox up, captures the wire between its nodes with
// tcpdump, makes the calls of the sandbox file's `traffic:` list from inside the source pods
// (each sending a unique marker), and prints per call what decided it (the agents' access logs),
// how it was carried, whether its marker was readable on the wire, and the call's own outcome.
// Fails when an mTLS call's marker was seen on the wire or a result differs from `expect`.
// Tears the sandbox down afterwards, also on failure, unless `keep`.
#pragma once

#include "sandbox/cluster.h"

namespace nodeward::sandbox {

struct DemoOptions {
  UpOptions up;
  bool keep = false;  // leave the sandbox (and the capture) in place
};

// Returns the process exit code: 0 when every call went as expected.
int RunDemo(const DemoOptions& options);

}  // namespace nodeward::sandbox
