#include "policy/destination_rules.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {
namespace {

std::string ExportToText(const std::vector<std::string>& export_to) {
  return export_to.empty() ? std::string("*") : absl::StrJoin(export_to, ",");
}

// push_context.go getExportedDestinationRuleFromNamespace: exported to every namespace, or by
// name to the client's.
bool ExportedTo(const ConsolidatedDestinationRule& entry, absl::string_view client_ns) {
  if (entry.export_to.empty()) return true;
  for (const std::string& target : entry.export_to) {
    if (target == "*" || target == client_ns) return true;
  }
  return false;
}

std::string Names(const std::vector<const DestinationRule*>& rules) {
  std::vector<std::string> names;
  for (const DestinationRule* rule : rules) names.push_back(Describe(*rule));
  return absl::StrJoin(names, ", ");
}

// The consolidated rules one step of the lookup finds: the most specific host of `group`, with
// `visible_only` keeping those exported to the client. Empty when the step finds nothing usable.
std::vector<const ConsolidatedDestinationRule*> Find(const DestinationRuleIndex::HostGroup* group,
                                                     absl::string_view host,
                                                     absl::string_view client_ns, bool visible_only,
                                                     absl::string_view where, Trace& trace) {
  std::vector<const ConsolidatedDestinationRule*> found;
  if (group == nullptr) return found;
  DestinationRuleIndex::HostGroup::Match match = group->MostSpecific(host);
  if (match.entries == nullptr) return found;
  for (const ConsolidatedDestinationRule& entry : *match.entries) {
    if (!visible_only || ExportedTo(entry, client_ns)) {
      found.push_back(&entry);
      continue;
    }
    trace.steps.push_back(absl::StrCat(Names(entry.from), " (host ", match.host, ", ", where,
                                       ") is exported only to ", ExportToText(entry.export_to),
                                       ", not to ", client_ns));
  }
  if (found.empty() && visible_only) {
    // Istio looks no further in this namespace: a less specific host there never stands in.
    trace.steps.push_back(absl::StrCat("the most specific host in ", where, " is ", match.host,
                                       " and no rule for it is visible from ", client_ns,
                                       "; less specific hosts there are not considered"));
  }
  return found;
}

}  // namespace

std::string TlsSummary(const ClientTlsSettings& tls) {
  std::string text(TlsModeName(tls.mode));
  if (!tls.sni.empty()) absl::StrAppend(&text, " sni=", tls.sni);
  if (!tls.subject_alt_names.empty()) {
    absl::StrAppend(&text, " subjectAltNames=", absl::StrJoin(tls.subject_alt_names, ","));
  }
  if (!tls.credential_name.empty()) absl::StrAppend(&text, " credentialName=", tls.credential_name);
  if (tls.insecure_skip_verify) absl::StrAppend(&text, " insecureSkipVerify");
  return text;
}

AppliedDestinationRule ResolveDestinationRule(const Snapshot& snapshot, const Pod& client,
                                              absl::string_view host, absl::string_view service_ns,
                                              uint32_t port) {
  AppliedDestinationRule result;
  Trace& trace = result.trace;
  const DestinationRuleIndex& index = snapshot.destination_rules();
  const std::string& root = snapshot.options().root_namespace;
  const absl::string_view client_ns = client.meta.ns;

  std::vector<const ConsolidatedDestinationRule*> found;
  std::vector<std::string> looked;
  if (client_ns != root) {
    looked.push_back(absl::StrCat("namespace ", client_ns));
    found = Find(index.NamespaceLocal(client_ns), host, client_ns, false, looked.back(), trace);
  } else {
    // A client in the root namespace (a gateway, typically) first sees the root namespace's
    // private rules, then the service's namespace, and only then the root's exported ones, so
    // a broad wildcard there cannot shadow the service owner's rule.
    looked.push_back(absl::StrCat("the rules private to the root namespace ", root));
    found = Find(&index.RootLocal(), host, client_ns, false, looked.back(), trace);
  }
  for (absl::string_view ns : {service_ns, absl::string_view(root)}) {
    if (!found.empty() || ns.empty()) break;
    std::string where = absl::StrCat("the rules namespace ", ns, " exports");
    if (std::find(looked.begin(), looked.end(), where) != looked.end()) continue;
    looked.push_back(where);
    found = Find(index.Exported(ns), host, client_ns, true, where, trace);
  }
  if (found.empty()) {
    trace.steps.push_back(absl::StrCat("no DestinationRule for ", host, " is visible from ",
                                       client_ns, " (looked in ", absl::StrJoin(looked, "; "),
                                       ")"));
    return result;
  }

  // SidecarScope.DestinationRule: a rule selecting this client wins; else the one without a
  // selector; a selector that does not match leaves nothing, without looking further.
  const ConsolidatedDestinationRule* chosen = nullptr;
  const ConsolidatedDestinationRule* catch_all = nullptr;
  for (const ConsolidatedDestinationRule* entry : found) {
    const DestinationRule& first = *entry->rule;
    if (!first.workload_selector.has_value()) {
      catch_all = entry;
      continue;
    }
    if (first.meta.ns == client_ns &&
        SelectorMatches(*first.workload_selector, client.meta.labels)) {
      chosen = entry;
      trace.steps.push_back(absl::StrCat(Describe(first), " selects ", Describe(client),
                                         " with its workloadSelector"));
      break;
    }
    trace.steps.push_back(absl::StrCat(Describe(first), " (host ", first.host,
                                       ") has a workloadSelector that does not select ",
                                       Describe(client)));
  }
  if (chosen == nullptr) chosen = catch_all;
  if (chosen == nullptr) {
    trace.steps.push_back(absl::StrCat(
        "no DestinationRule for ", host, " applies to ", Describe(client),
        ": the rules found all select other workloads, and Istio does not look further"));
    return result;
  }

  result.rule = chosen->rule;
  result.traffic_policy = chosen->traffic_policy;
  result.merged = chosen->from;
  const DestinationRule* deciding =
      chosen->traffic_policy != nullptr ? chosen->traffic_policy : chosen->rule;
  trace.deciding.push_back(Describe(*deciding));
  trace.steps.push_back(absl::StrCat(Describe(*chosen->rule), " (host ", chosen->rule->host,
                                     ") applies to ", host, " for ", Describe(client)));
  if (chosen->from.size() > 1) {
    trace.steps.push_back(absl::StrCat(
        "merged, as Istio merges rules for one host: ", Names(chosen->from),
        "; the trafficPolicy is ",
        chosen->traffic_policy != nullptr
            ? absl::StrCat(Describe(*chosen->traffic_policy), "'s (the first that has one)")
            : std::string("absent from all of them")));
  }
  if (chosen->traffic_policy == nullptr) {
    trace.steps.push_back("the rule has no trafficPolicy");
    return result;
  }
  const DestinationRule& policy = *chosen->traffic_policy;
  for (const PortTrafficPolicy& port_policy : policy.port_level) {
    if (port_policy.port != port) continue;
    result.port_level = true;
    result.tls = port_policy.tls;
    if (port_policy.tls.has_value()) {
      trace.steps.push_back(absl::StrCat("portLevelSettings for port ", port, " sets tls mode ",
                                         TlsSummary(*port_policy.tls)));
    } else {
      // Istio: port-level settings replace the rule-level ones for that port, unset included.
      trace.steps.push_back(absl::StrCat("portLevelSettings for port ", port,
                                         " has no tls, which replaces the rule-level tls"));
    }
    return result;
  }
  result.tls = policy.tls;
  if (policy.tls.has_value()) {
    trace.steps.push_back(absl::StrCat("trafficPolicy.tls sets mode ", TlsSummary(*policy.tls)));
  } else {
    trace.steps.push_back("the rule has no tls settings");
  }
  return result;
}

}  // namespace nodeward::policy
