// DestinationRules indexed as Istio's PushContext holds them (pilot/pkg/model/push_context.go
// setDestinationRules, pilot/pkg/model/destination_rule.go mergeDestinationRule): for each
// namespace the rules its own clients see and the rules it exports to others, plus the root
// namespace's private rules; in each group the rules for one host are merged into consolidated
// entries. Which group a client looks in, and in what order, is the decision's business
// (destination_rules.h); this is the data they look in.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "policy/resources.h"

namespace nodeward::policy {

// One or more DestinationRules of one namespace for one host, merged as Istio merges them:
// the first present trafficPolicy is kept whole, exportTo is the first rule's.
struct ConsolidatedDestinationRule {
  // The first rule merged in: its namespace, workloadSelector and exportTo describe the entry.
  const DestinationRule* rule = nullptr;
  // Whose trafficPolicy (tls and portLevelSettings) is in force; null when none has one.
  const DestinationRule* traffic_policy = nullptr;
  // Every rule merged in, in Istio's order.
  std::vector<const DestinationRule*> from;
  // As the entry was added: the rule's exportTo, or "." for a rule with a workloadSelector,
  // which Istio never exports.
  std::vector<std::string> export_to;
};

class DestinationRuleIndex {
 public:
  // Consolidated entries of one group, by host.
  class HostGroup {
   public:
    struct Match {
      std::string host;  // the host written in the rules (exact, or the wildcard that matched)
      const std::vector<ConsolidatedDestinationRule>* entries = nullptr;
    };
    // Istio's MostSpecificHostMatch: the exact host, else the longest wildcard that covers
    // `host`; entries is null when nothing matches.
    Match MostSpecific(absl::string_view host) const;
    void Merge(const DestinationRule& rule, const std::string& host,
               std::vector<std::string> export_to);

   private:
    std::vector<ConsolidatedDestinationRule>& EntriesFor(const std::string& host);

    absl::flat_hash_map<std::string, std::vector<ConsolidatedDestinationRule>> exact_;
    // (suffix after "*", host, entries), longest suffix first; "*" alone has an empty suffix.
    struct Wildcard {
      std::string suffix;
      std::string host;
      std::vector<ConsolidatedDestinationRule> entries;
    };
    std::vector<Wildcard> wildcards_;
  };

  // `resolved_host(rule)` gives the rule's host as an FQDN or wildcard.
  template <typename ResolveHost>
  void Build(const std::vector<DestinationRule>& rules, const std::string& root_namespace,
             ResolveHost resolved_host) {
    std::vector<std::pair<const DestinationRule*, std::string>> hosts;
    for (const DestinationRule& rule : rules) hosts.emplace_back(&rule, resolved_host(rule));
    BuildFrom(std::move(hosts), root_namespace);
  }

  // The rules a client of `ns` sees from its own namespace (exportTo ".", "*", its name or
  // none); null when the namespace has none.
  const HostGroup* NamespaceLocal(absl::string_view ns) const;
  // The rules `ns` exports beyond itself; each entry's export_to says to whom.
  const HostGroup* Exported(absl::string_view ns) const;
  // The root namespace's rules private to it, which only its own clients see.
  const HostGroup& RootLocal() const { return root_local_; }

 private:
  void BuildFrom(std::vector<std::pair<const DestinationRule*, std::string>> hosts,
                 const std::string& root_namespace);

  absl::flat_hash_map<std::string, HostGroup> namespace_local_;
  absl::flat_hash_map<std::string, HostGroup> exported_;
  HostGroup root_local_;
};

}  // namespace nodeward::policy
