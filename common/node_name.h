// The name of this node as pods' spec.nodeName says it: the --node-name flag when given, else
// the host name (what the kubelet registers by default).
#pragma once

#include <unistd.h>

#include <string>

namespace nodeward {

inline std::string NodeNameOr(std::string flag_value) {
  if (!flag_value.empty()) return flag_value;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

}  // namespace nodeward
