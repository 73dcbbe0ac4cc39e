#include "policy/trace.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {

std::string Trace::ToString() const {
  std::string text;
  for (const std::string& step : steps) absl::StrAppend(&text, "- ", step, "\n");
  for (const std::string& warning : warnings) absl::StrAppend(&text, "! ", warning, "\n");
  if (!deciding.empty()) {
    absl::StrAppend(&text, "decided by: ", absl::StrJoin(deciding, ", "), "\n");
  }
  return text;
}

void AppendTrace(Trace& into, const Trace& from, absl::string_view prefix) {
  for (const std::string& step : from.steps) into.steps.push_back(absl::StrCat(prefix, step));
  into.warnings.insert(into.warnings.end(), from.warnings.begin(), from.warnings.end());
  into.deciding.insert(into.deciding.end(), from.deciding.begin(), from.deciding.end());
}

std::string Describe(const PeerAuthentication& policy) {
  return DescribeObject("PeerAuthentication", policy.meta);
}

std::string Describe(const DestinationRule& rule) {
  return DescribeObject("DestinationRule", rule.meta);
}

std::string Describe(const AuthorizationPolicy& policy) {
  return DescribeObject("AuthorizationPolicy", policy.meta);
}

std::string Describe(const Pod& pod) {
  return absl::StrCat("pod ", pod.meta.ns, "/", pod.meta.name);
}

}  // namespace nodeward::policy
