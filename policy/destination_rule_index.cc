#include "policy/destination_rule_index.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"

namespace nodeward::policy {
namespace {

bool Contains(const std::vector<std::string>& set, absl::string_view value) {
  return std::find(set.begin(), set.end(), value) != set.end();
}

bool SameSet(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  absl::flat_hash_set<absl::string_view> left(a.begin(), a.end());
  absl::flat_hash_set<absl::string_view> right(b.begin(), b.end());
  return left == right;
}

bool SupersetOf(const std::vector<std::string>& big, const std::vector<std::string>& small) {
  for (const std::string& value : small) {
    if (!Contains(big, value)) return false;
  }
  return true;
}

// Istio's sortConfigBySelectorAndCreationTime: rules with a workloadSelector first, then the
// oldest, then by name, then by namespace.
bool IstioOrder(const DestinationRule* a, const DestinationRule* b) {
  const bool a_selects = a->workload_selector.has_value();
  const bool b_selects = b->workload_selector.has_value();
  if (a_selects != b_selects) return a_selects;
  if (a->meta.creation_timestamp != b->meta.creation_timestamp) {
    return a->meta.creation_timestamp < b->meta.creation_timestamp;
  }
  if (a->meta.name != b->meta.name) return a->meta.name < b->meta.name;
  return a->meta.ns < b->meta.ns;
}

}  // namespace

DestinationRuleIndex::HostGroup::Match DestinationRuleIndex::HostGroup::MostSpecific(
    absl::string_view host) const {
  if (auto it = exact_.find(host); it != exact_.end()) return {it->first, &it->second};
  for (const Wildcard& wildcard : wildcards_) {
    // "*.example.com" needs at least one label before ".example.com".
    if (wildcard.suffix.empty() ||
        (host.size() > wildcard.suffix.size() && absl::EndsWith(host, wildcard.suffix))) {
      return {wildcard.host, &wildcard.entries};
    }
  }
  return {};
}

std::vector<ConsolidatedDestinationRule>& DestinationRuleIndex::HostGroup::EntriesFor(
    const std::string& host) {
  if (host != "*" && !absl::StartsWith(host, "*.")) return exact_[host];
  for (Wildcard& wildcard : wildcards_) {
    if (wildcard.host == host) return wildcard.entries;
  }
  std::string suffix = host == "*" ? std::string() : host.substr(1);
  auto position = std::find_if(wildcards_.begin(), wildcards_.end(),
                               [&](const Wildcard& w) { return w.suffix.size() < suffix.size(); });
  return wildcards_.insert(position, Wildcard{std::move(suffix), host, {}})->entries;
}

void DestinationRuleIndex::HostGroup::Merge(const DestinationRule& rule, const std::string& host,
                                            std::vector<std::string> export_to) {
  std::vector<ConsolidatedDestinationRule>& entries = EntriesFor(host);
  // Istio's mergeDestinationRule with ENABLE_ENHANCED_DESTINATIONRULE_MERGE on (its default):
  // rules with the same exportTo merge, other exportTo sets stay separate entries, and rules
  // whose workload selectors differ never merge into each other. The flag is overwritten on
  // every pass, so the last existing entry has the final say, exactly as in Istio.
  bool append_separately = true;
  for (ConsolidatedDestinationRule& entry : entries) {
    const DestinationRule& existing = *entry.rule;
    const bool both_without = !rule.workload_selector && !existing.workload_selector;
    const bool both_with = rule.workload_selector && existing.workload_selector;
    const bool selectors_match =
        rule.workload_selector.value_or(Labels()) == existing.workload_selector.value_or(Labels());
    if (SameSet(export_to, entry.export_to)) {
      append_separately = !(both_without || (both_with && selectors_match));
    } else if (!entry.export_to.empty() && SupersetOf(export_to, entry.export_to)) {
      append_separately = true;
    } else {
      append_separately = true;
      continue;
    }
    if (both_with && !selectors_match) {
      append_separately = true;
      continue;
    }
    if (both_without || (both_with && selectors_match)) append_separately = false;
    entry.from.push_back(&rule);
    // The first present trafficPolicy is kept whole; a later one never fills in its gaps.
    if (entry.traffic_policy == nullptr && rule.HasTrafficPolicy()) entry.traffic_policy = &rule;
  }
  if (entries.empty() || append_separately) {
    entries.push_back(
        {&rule, rule.HasTrafficPolicy() ? &rule : nullptr, {&rule}, std::move(export_to)});
  }
}

const DestinationRuleIndex::HostGroup* DestinationRuleIndex::NamespaceLocal(
    absl::string_view ns) const {
  auto it = namespace_local_.find(ns);
  return it == namespace_local_.end() ? nullptr : &it->second;
}

const DestinationRuleIndex::HostGroup* DestinationRuleIndex::Exported(absl::string_view ns) const {
  auto it = exported_.find(ns);
  return it == exported_.end() ? nullptr : &it->second;
}

void DestinationRuleIndex::BuildFrom(
    std::vector<std::pair<const DestinationRule*, std::string>> hosts,
    const std::string& root_namespace) {
  std::sort(hosts.begin(), hosts.end(),
            [](const auto& a, const auto& b) { return IstioOrder(a.first, b.first); });
  for (const auto& [rule, host] : hosts) {
    const std::string& ns = rule->meta.ns;
    // Istio never exports a rule with a workload selector (push_context.go setDestinationRules).
    std::vector<std::string> export_to =
        rule->workload_selector.has_value() ? std::vector<std::string>{"."} : rule->export_to;
    if (export_to.empty() || Contains(export_to, "*") || Contains(export_to, ".") ||
        Contains(export_to, ns)) {
      namespace_local_[ns].Merge(*rule, host, export_to);
    }
    // The mesh's default exportTo for DestinationRules is "*", so only an explicit "." (or the
    // rule's own namespace) alone keeps a rule private.
    const bool private_only =
        export_to.size() == 1 && (export_to.front() == "." || export_to.front() == ns);
    if (!private_only) {
      exported_[ns].Merge(*rule, host, export_to);
    } else if (ns == root_namespace) {
      root_local_.Merge(*rule, host, export_to);
    }
  }
}

}  // namespace nodeward::policy
