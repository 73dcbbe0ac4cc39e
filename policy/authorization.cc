#include "policy/authorization.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace nodeward::policy {
namespace {

// One attribute of the connection: known or not, and when known, present or not (plaintext
// has no principal; a TLS connection may have no SNI).
struct Attribute {
  bool known = false;
  bool present = false;
  absl::string_view value;

  static Attribute Unknown() { return {}; }
  static Attribute Absent() { return {true, false, {}}; }
  static Attribute Of(absl::string_view v) { return {true, true, v}; }
};

// `address` unmapped: an IPv4-mapped address is that IPv4 host, matched against IPv4 blocks.
bool Contains(const IpBlock& block, const IpAddress& address) {
  if (block.v6 != (address.family == AF_INET6)) return false;
  const uint32_t full = block.prefix_length / 8, rest = block.prefix_length % 8;
  if (std::memcmp(block.address.data(), address.bytes.data(), full) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff00u >> rest);
  return (address.bytes[full] & mask) == block.address[full];
}

bool Matches(const StringMatcher& matcher, absl::string_view value) {
  switch (matcher.kind) {
    case StringMatcher::Kind::kExact:
      return value == matcher.value;
    case StringMatcher::Kind::kPrefix:
      return absl::StartsWith(value, matcher.value);
    case StringMatcher::Kind::kSuffix:
      return absl::EndsWith(value, matcher.value);
    case StringMatcher::Kind::kPresence:
      return !value.empty();
  }
  return false;
}

// What the rules look at, worked out once per connection.
struct Facts {
  Facts() = default;
  Facts(const Facts&) = delete;  // `principal` views `principal_text`
  Facts& operator=(const Facts&) = delete;

  std::string principal_text;
  Attribute principal;  // the SPIFFE ID without "spiffe://", as Istio writes principals
  Attribute ns;
  Attribute service_account;
  std::optional<IpAddress> source;  // unmapped
  std::optional<IpAddress> destination;
  uint32_t port = 0;
  Attribute sni;
};

// Facts views `connection` (and itself): it lives inside one Authorize call.
void FactsOf(const InboundConnection& connection, Facts& facts) {
  if (connection.transport == InboundTransport::kPlaintext) {
    facts.principal = facts.ns = facts.service_account = Attribute::Absent();
  } else if (connection.peer_identity.has_value()) {
    const SpiffeId& id = *connection.peer_identity;
    facts.principal_text =
        absl::StrCat(id.trust_domain(), "/ns/", id.ns(), "/sa/", id.service_account());
    facts.principal = Attribute::Of(facts.principal_text);
    facts.ns = Attribute::Of(id.ns());
    facts.service_account = Attribute::Of(id.service_account());
  }
  if (connection.source_ip.has_value()) facts.source = connection.source_ip->Unmapped();
  if (connection.destination_ip.has_value()) {
    facts.destination = connection.destination_ip->Unmapped();
  }
  facts.port = connection.port;
  if (connection.sni.has_value()) {
    facts.sni = connection.sni->empty() ? Attribute::Absent() : Attribute::Of(*connection.sni);
  }
}

// One field of a rule entry: true when it sets no value; `unknown` when the connection lacks
// the attribute (false in ALLOW rules, true elsewhere, so that missing knowledge never widens
// what is allowed); else true when a value matches and no negated value does.
template <typename T, typename Matches>
bool Field(const std::vector<T>& values, const std::vector<T>& negated, bool known, bool unknown,
           Matches matches) {
  if (values.empty() && negated.empty()) return true;
  if (!known) return unknown;
  auto any = [&](const std::vector<T>& list) {
    return std::any_of(list.begin(), list.end(), matches);
  };
  return (values.empty() || any(values)) && (negated.empty() || !any(negated));
}

bool Field(const std::vector<StringMatcher>& values, const std::vector<StringMatcher>& negated,
           const Attribute& attribute, bool unknown) {
  return Field(values, negated, attribute.known, unknown, [&](const StringMatcher& m) {
    return attribute.present && Matches(m, attribute.value);
  });
}

bool Field(const std::vector<IpBlock>& values, const std::vector<IpBlock>& negated,
           const std::optional<IpAddress>& address, bool unknown) {
  return Field(values, negated, address.has_value(), unknown,
               [&](const IpBlock& block) { return Contains(block, *address); });
}

bool Field(const std::vector<uint32_t>& values, const std::vector<uint32_t>& negated, uint32_t port,
           bool unknown) {
  return Field(values, negated, port != 0, unknown, [&](uint32_t p) { return p == port; });
}

bool AccountField(const std::vector<AuthorizationSource::ServiceAccount>& values,
                  const std::vector<AuthorizationSource::ServiceAccount>& negated,
                  const Facts& facts, bool unknown) {
  return Field(values, negated, facts.ns.known && facts.service_account.known, unknown,
               [&](const AuthorizationSource::ServiceAccount& account) {
                 return facts.ns.present && facts.service_account.present &&
                        account.ns == facts.ns.value && account.name == facts.service_account.value;
               });
}

bool SourceMatches(const AuthorizationSource& s, const Facts& f, bool unknown) {
  return Field(s.principals, s.not_principals, f.principal, unknown) &&
         Field(s.namespaces, s.not_namespaces, f.ns, unknown) &&
         AccountField(s.service_accounts, s.not_service_accounts, f, unknown) &&
         Field(s.ip_blocks, s.not_ip_blocks, f.source, unknown);
}

bool ConditionMatches(const AuthorizationCondition& c, const Facts& f, bool unknown) {
  using Key = AuthorizationCondition::Key;
  switch (c.kind) {
    case Key::kSourceIp:
      return Field(c.ips, c.not_ips, f.source, unknown);
    case Key::kDestinationIp:
      return Field(c.ips, c.not_ips, f.destination, unknown);
    case Key::kDestinationPort:
      return Field(c.ports, c.not_ports, f.port, unknown);
    case Key::kSourcePrincipal:
      return Field(c.strings, c.not_strings, f.principal, unknown);
    case Key::kSourceNamespace:
      return Field(c.strings, c.not_strings, f.ns, unknown);
    case Key::kConnectionSni:
      return Field(c.strings, c.not_strings, f.sni, unknown);
    case Key::kHttp:
      // Only reached outside ALLOW (an ALLOW rule with it never matches): applied without it.
      return true;
  }
  return false;
}

bool RuleMatches(const AuthorizationRule& rule, const Facts& facts, bool unknown) {
  if (!rule.from.empty()) {
    bool any = false;
    for (const AuthorizationSource& source : rule.from) {
      if ((any = SourceMatches(source, facts, unknown))) break;
    }
    if (!any) return false;
  }
  if (!rule.to.empty()) {
    bool any = false;
    for (const AuthorizationOperation& operation : rule.to) {
      if ((any = Field(operation.ports, operation.not_ports, facts.port, unknown))) break;
    }
    if (!any) return false;
  }
  for (const AuthorizationCondition& condition : rule.when) {
    if (!ConditionMatches(condition, facts, unknown)) return false;
  }
  return true;
}

// The index of the first rule of `policy` that matches, if any; notes in `trace` the rules
// an ALLOW policy cannot use at L4.
std::optional<size_t> FirstMatchingRule(const AuthorizationPolicy& policy, const Facts& facts,
                                        Trace& trace) {
  const bool allow = policy.action == AuthorizationAction::kAllow;
  for (size_t i = 0; i < policy.rules.size(); ++i) {
    const AuthorizationRule& rule = policy.rules[i];
    if (!rule.http_attributes.empty()) {
      trace.warnings.push_back(absl::StrCat(
          Describe(policy), " rule ", i, " uses HTTP attributes (",
          absl::StrJoin(rule.http_attributes, ", "), "), which a node agent cannot see: ",
          allow ? "the rule never matches, as in ztunnel"
                : "the rule is applied without them, which is more restrictive, as in ztunnel"));
      if (allow) continue;
    }
    if (RuleMatches(rule, facts, /*unknown=*/!allow)) return i;
  }
  return std::nullopt;
}

std::string Names(const std::vector<const AuthorizationPolicy*>& policies) {
  std::vector<std::string> names;
  for (const AuthorizationPolicy* policy : policies) names.push_back(Describe(*policy));
  return absl::StrJoin(names, ", ");
}

}  // namespace

absl::string_view AuthorizationOutcomeName(AuthorizationOutcome outcome) {
  switch (outcome) {
    case AuthorizationOutcome::kNoPolicy:
      return "NO_POLICY";
    case AuthorizationOutcome::kAllowed:
      return "ALLOWED";
    case AuthorizationOutcome::kDenied:
      return "DENIED";
    case AuthorizationOutcome::kNotAllowed:
      return "NOT_ALLOWED";
    case AuthorizationOutcome::kUnsupported:
      return "CUSTOM_UNSUPPORTED";
  }
  return "UNKNOWN";
}

AuthorizationResult Authorize(const Snapshot& snapshot, const Pod& destination,
                              const InboundConnection& connection) {
  AuthorizationResult result;
  if (!snapshot.HasAuthorizationPolicies()) return result;
  Trace& trace = result.trace;
  for (const AuthorizationPolicy* waypoint : snapshot.WaypointAuthorizationPolicies(destination)) {
    trace.warnings.push_back(absl::StrCat(Describe(*waypoint),
                                          " binds to a waypoint (targetRef) and is not enforced "
                                          "by a node agent, as in ztunnel"));
  }
  const std::vector<const AuthorizationPolicy*> policies =
      snapshot.AuthorizationPoliciesFor(destination);
  if (policies.empty()) return result;
  Facts facts;
  FactsOf(connection, facts);
  if (!connection.source_ip.has_value()) {
    trace.steps.push_back("source address unknown: conditions on it fail closed");
  }

  std::vector<const AuthorizationPolicy*> allow;
  const AuthorizationPolicy* custom = nullptr;
  const AuthorizationPolicy* deny = nullptr;
  size_t deny_rule = 0, custom_rule = 0;
  for (const AuthorizationPolicy* policy : policies) {
    if (!policy->rejected.empty()) {
      trace.warnings.push_back(absl::StrCat(Describe(*policy), " was rejected (", policy->rejected,
                                            "); it stands in failing closed until it is fixed"));
    }
    if (policy->action == AuthorizationAction::kAllow && !policy->dry_run) {
      allow.push_back(policy);
      continue;
    }
    std::optional<size_t> rule = FirstMatchingRule(*policy, facts, trace);
    const std::string name =
        absl::StrCat(Describe(*policy), " (", AuthorizationActionName(policy->action), ")");
    if (policy->dry_run) {
      trace.steps.push_back(
          absl::StrCat(name, " is in dry run: ", rule.has_value() ? "matches" : "does not match",
                       ", not enforced"));
      if (rule.has_value()) result.audit.push_back(policy);
      continue;
    }
    if (!rule.has_value()) {
      trace.steps.push_back(absl::StrCat(name, ": no rule matches"));
      continue;
    }
    trace.steps.push_back(absl::StrCat(name, ": rule ", *rule, " matches"));
    switch (policy->action) {
      case AuthorizationAction::kCustom:
        if (custom == nullptr) custom = policy, custom_rule = *rule;
        break;
      case AuthorizationAction::kDeny:
        if (deny == nullptr) deny = policy, deny_rule = *rule;
        break;
      case AuthorizationAction::kAudit:
        result.audit.push_back(policy);
        break;
      case AuthorizationAction::kAllow:
        break;
    }
  }

  auto refuse = [&](AuthorizationOutcome outcome, const AuthorizationPolicy* policy,
                    std::string reason) {
    result.allow = false;
    result.outcome = outcome;
    result.policy = policy;
    result.reason = std::move(reason);
    if (policy != nullptr) trace.deciding.push_back(Describe(*policy));
  };
  if (custom != nullptr) {
    trace.warnings.push_back(absl::StrCat(
        Describe(*custom), " delegates to the external authorizer \"", custom->provider,
        "\"; nodeward has none, so the connections it matches are refused"));
    refuse(
        AuthorizationOutcome::kUnsupported, custom,
        absl::StrCat("CUSTOM ", Describe(*custom), " (provider ", custom->provider,
                     ") matches rule ", custom_rule, ": external authorization is not supported"));
    return result;
  }
  if (deny != nullptr) {
    refuse(AuthorizationOutcome::kDenied, deny,
           absl::StrCat("denied by ", Describe(*deny), " rule ", deny_rule));
    return result;
  }
  if (allow.empty()) {
    result.reason = "no ALLOW AuthorizationPolicy applies and none denies";
    return result;
  }
  for (const AuthorizationPolicy* policy : allow) {
    std::optional<size_t> rule = FirstMatchingRule(*policy, facts, trace);
    if (!rule.has_value()) {
      trace.steps.push_back(absl::StrCat(Describe(*policy), " (ALLOW): no rule matches"));
      continue;
    }
    trace.steps.push_back(absl::StrCat(Describe(*policy), " (ALLOW): rule ", *rule, " matches"));
    result.outcome = AuthorizationOutcome::kAllowed;
    result.policy = policy;
    result.reason = absl::StrCat("allowed by ", Describe(*policy), " rule ", *rule);
    trace.deciding.push_back(Describe(*policy));
    return result;
  }
  for (const AuthorizationPolicy* policy : allow) trace.deciding.push_back(Describe(*policy));
  refuse(AuthorizationOutcome::kNotAllowed, nullptr,
         absl::StrCat("no ALLOW AuthorizationPolicy matches (", Names(allow), ")"));
  return result;
}

}  // namespace nodeward::policy
