// AuthorizationPolicy (security.istio.io/v1, v1beta1): parsed and validated as Istio's own
// validation does (pkg/config/validation ValidateAuthorizationPolicy), so a policy Istio would
// refuse is refused here too, with the resource and the field named. The HTTP-only parts are
// recognised and named, not kept: a node agent cannot evaluate them (see authorization.h).
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/port_number.h"
#include "policy/kind_parsers.h"
#include "policy/object_parser.h"

namespace nodeward::policy::internal {
namespace {

// A list of strings none of which may be empty (Istio's CheckEmptyValues).
absl::StatusOr<std::vector<std::string>> Values(const Context& ctx, const YAML::Node& map,
                                                const char* key, const std::string& field) {
  NW_ASSIGN_OR_RETURN(std::vector<std::string> values, StringList(ctx, map, key, field));
  for (const std::string& value : values) {
    if (value.empty()) return ctx.Error(Child(map, key), field, "an entry is empty");
  }
  return values;
}

absl::StatusOr<std::vector<StringMatcher>> Matchers(const Context& ctx, const YAML::Node& map,
                                                    const char* key, const std::string& field) {
  NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, map, key, field));
  std::vector<StringMatcher> matchers;
  for (const std::string& value : values) matchers.push_back(ParseStringMatcher(value));
  return matchers;
}

absl::StatusOr<std::vector<IpBlock>> IpBlocks(const Context& ctx, const YAML::Node& at,
                                              const std::vector<std::string>& values,
                                              const std::string& field) {
  std::vector<IpBlock> blocks;
  for (const std::string& value : values) {
    absl::StatusOr<IpBlock> block = ParseIpBlock(value);
    if (!block.ok()) return ctx.Error(at, field, block.status().message());
    blocks.push_back(*std::move(block));
  }
  return blocks;
}

absl::StatusOr<std::vector<uint32_t>> Ports(const Context& ctx, const YAML::Node& at,
                                            const std::vector<std::string>& values,
                                            const std::string& field) {
  std::vector<uint32_t> ports;
  for (const std::string& value : values) {
    std::optional<uint16_t> port = ParsePortNumber(value);
    if (!port.has_value()) {
      return ctx.Error(
          at, field,
          absl::StrCat("\"", value, "\" is not a port number (1-65535, without leading zeros)"));
    }
    ports.push_back(*port);
  }
  return ports;
}

absl::StatusOr<std::vector<AuthorizationSource::ServiceAccount>> ServiceAccounts(
    const Context& ctx, const YAML::Node& map, const char* key, const std::string& field,
    const std::string& policy_namespace) {
  NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, map, key, field));
  std::vector<AuthorizationSource::ServiceAccount> accounts;
  for (const std::string& value : values) {
    std::vector<std::string> parts = absl::StrSplit(value, '/');
    // "namespace/name", or a bare name relative to the policy's namespace as ztunnel's
    // conversion reads it (ambient/authorization.go stringToServiceAccountMatch).
    if (parts.size() == 1) {
      accounts.push_back({policy_namespace, parts[0]});
    } else if (parts.size() == 2 && !parts[0].empty() && !parts[1].empty()) {
      accounts.push_back({parts[0], parts[1]});
    } else {
      return ctx.Error(Child(map, key), field,
                       absl::StrCat("\"", value, "\" is not NAMESPACE/SERVICE-ACCOUNT"));
    }
  }
  return accounts;
}

// The fields ztunnel cannot evaluate (ambient/authorization.go httpSources and
// httpOperations): present means the rule needs HTTP.
constexpr const char* kHttpSourceFields[] = {"requestPrincipals", "notRequestPrincipals",
                                             "remoteIpBlocks", "notRemoteIpBlocks"};
constexpr const char* kHttpOperationFields[] = {"hosts",      "notHosts", "methods",
                                                "notMethods", "paths",    "notPaths"};

absl::Status ParseSource(const Context& ctx, const YAML::Node& source, const std::string& field,
                         const std::string& policy_namespace, AuthorizationRule& rule) {
  AuthorizationSource out;
  NW_ASSIGN_OR_RETURN(out.principals, Matchers(ctx, source, "principals", field + ".principals"));
  NW_ASSIGN_OR_RETURN(out.not_principals,
                      Matchers(ctx, source, "notPrincipals", field + ".notPrincipals"));
  NW_ASSIGN_OR_RETURN(out.namespaces, Matchers(ctx, source, "namespaces", field + ".namespaces"));
  NW_ASSIGN_OR_RETURN(out.not_namespaces,
                      Matchers(ctx, source, "notNamespaces", field + ".notNamespaces"));
  NW_ASSIGN_OR_RETURN(out.service_accounts,
                      ServiceAccounts(ctx, source, "serviceAccounts", field + ".serviceAccounts",
                                      policy_namespace));
  NW_ASSIGN_OR_RETURN(out.not_service_accounts,
                      ServiceAccounts(ctx, source, "notServiceAccounts",
                                      field + ".notServiceAccounts", policy_namespace));
  for (auto [key, blocks] :
       {std::pair{"ipBlocks", &out.ip_blocks}, std::pair{"notIpBlocks", &out.not_ip_blocks}}) {
    const std::string key_field = absl::StrCat(field, ".", key);
    NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, source, key, key_field));
    NW_ASSIGN_OR_RETURN(*blocks, IpBlocks(ctx, Child(source, key), values, key_field));
  }
  bool any_http = false;
  for (const char* key : kHttpSourceFields) {
    const std::string key_field = absl::StrCat(field, ".", key);
    NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, source, key, key_field));
    if (absl::StrContains(key, "IpBlocks")) {
      // Checked even though unused, as Istio checks them: a typo is still a typo.
      NW_RETURN_IF_ERROR(IpBlocks(ctx, Child(source, key), values, key_field).status());
    }
    if (!values.empty()) {
      rule.http_attributes.push_back(key_field);
      any_http = true;
    }
  }
  const bool any_account = !out.service_accounts.empty() || !out.not_service_accounts.empty();
  if (any_account && (!out.principals.empty() || !out.not_principals.empty() ||
                      !out.namespaces.empty() || !out.not_namespaces.empty())) {
    return ctx.Error(source, field, "cannot set serviceAccounts with namespaces or principals");
  }
  if (!any_http && !any_account && out.principals.empty() && out.not_principals.empty() &&
      out.namespaces.empty() && out.not_namespaces.empty() && out.ip_blocks.empty() &&
      out.not_ip_blocks.empty()) {
    return ctx.Error(source, field, "must not be empty");
  }
  rule.from.push_back(std::move(out));
  return absl::OkStatus();
}

absl::Status ParseOperation(const Context& ctx, const YAML::Node& operation,
                            const std::string& field, AuthorizationRule& rule) {
  AuthorizationOperation out;
  for (auto [key, ports] :
       {std::pair{"ports", &out.ports}, std::pair{"notPorts", &out.not_ports}}) {
    const std::string key_field = absl::StrCat(field, ".", key);
    NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, operation, key, key_field));
    NW_ASSIGN_OR_RETURN(*ports, Ports(ctx, Child(operation, key), values, key_field));
  }
  bool any_http = false;
  for (const char* key : kHttpOperationFields) {
    const std::string key_field = absl::StrCat(field, ".", key);
    NW_ASSIGN_OR_RETURN(std::vector<std::string> values, Values(ctx, operation, key, key_field));
    if (!values.empty()) {
      rule.http_attributes.push_back(key_field);
      any_http = true;
    }
  }
  if (!any_http && out.ports.empty() && out.not_ports.empty()) {
    return ctx.Error(operation, field, "must not be empty");
  }
  rule.to.push_back(std::move(out));
  return absl::OkStatus();
}

// The condition keys Istio accepts (pkg/config/security ValidateAttribute); only the L4 ones
// are evaluated. connection.sni is one of them for Istio's sidecars (Envoy's network RBAC
// matches the requested server name) though not for ztunnel: nodeward evaluates it against
// the SNI the data plane saw, when it saw one.
absl::StatusOr<AuthorizationCondition::Key> ConditionKind(absl::string_view key) {
  using Key = AuthorizationCondition::Key;
  if (key == "source.ip") return Key::kSourceIp;
  if (key == "source.namespace") return Key::kSourceNamespace;
  if (key == "source.principal") return Key::kSourcePrincipal;
  if (key == "destination.ip") return Key::kDestinationIp;
  if (key == "destination.port") return Key::kDestinationPort;
  if (key == "connection.sni") return Key::kConnectionSni;
  for (absl::string_view http : {"remote.ip", "request.auth.principal", "request.auth.audiences",
                                 "request.auth.presenter", "source.serviceAccount"}) {
    if (key == http) return Key::kHttp;
  }
  for (absl::string_view prefix : {"request.headers[", "request.auth.claims["}) {
    if (absl::StartsWith(key, prefix)) {
      if (!absl::EndsWith(key, "]") || key.size() == prefix.size() + 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", key, "\" needs a name in brackets, as ", prefix, "NAME]"));
      }
      return Key::kHttp;
    }
  }
  if (absl::StartsWith(key, "experimental.envoy.filters.")) return Key::kHttp;
  return absl::InvalidArgumentError(absl::StrCat("unknown attribute \"", key, "\""));
}

absl::Status ParseCondition(const Context& ctx, const YAML::Node& when, const std::string& field,
                            AuthorizationRule& rule) {
  using Key = AuthorizationCondition::Key;
  AuthorizationCondition out;
  NW_ASSIGN_OR_RETURN(out.key, String(ctx, when, "key", field + ".key"));
  if (out.key.empty()) return ctx.Error(when, field + ".key", "must not be empty");
  absl::StatusOr<Key> kind = ConditionKind(out.key);
  if (!kind.ok()) return ctx.Error(Child(when, "key"), field + ".key", kind.status().message());
  out.kind = *kind;
  NW_ASSIGN_OR_RETURN(std::vector<std::string> values,
                      Values(ctx, when, "values", field + ".values"));
  NW_ASSIGN_OR_RETURN(std::vector<std::string> not_values,
                      Values(ctx, when, "notValues", field + ".notValues"));
  if (values.empty() && not_values.empty()) {
    return ctx.Error(when, field, absl::StrCat("set values or notValues for key ", out.key));
  }
  struct Side {
    const std::vector<std::string>& texts;
    const char* key;
    std::vector<StringMatcher>& strings;
    std::vector<IpBlock>& ips;
    std::vector<uint32_t>& ports;
  };
  for (const Side& side :
       {Side{values, "values", out.strings, out.ips, out.ports},
        Side{not_values, "notValues", out.not_strings, out.not_ips, out.not_ports}}) {
    const std::string side_field = absl::StrCat(field, ".", side.key);
    switch (out.kind) {
      case Key::kSourceIp:
      case Key::kDestinationIp: {
        NW_ASSIGN_OR_RETURN(side.ips, IpBlocks(ctx, Child(when, side.key), side.texts, side_field));
        break;
      }
      case Key::kDestinationPort: {
        NW_ASSIGN_OR_RETURN(side.ports, Ports(ctx, Child(when, side.key), side.texts, side_field));
        break;
      }
      case Key::kSourceNamespace:
      case Key::kSourcePrincipal:
      case Key::kConnectionSni:
        for (const std::string& text : side.texts) side.strings.push_back(ParseStringMatcher(text));
        break;
      case Key::kHttp:
        if (out.key == "remote.ip") {
          NW_RETURN_IF_ERROR(IpBlocks(ctx, Child(when, side.key), side.texts, side_field).status());
        }
        break;
    }
  }
  if (out.kind == Key::kHttp) rule.http_attributes.push_back(absl::StrCat(field, " ", out.key));
  rule.when.push_back(std::move(out));
  return absl::OkStatus();
}

absl::StatusOr<AuthorizationAction> ParseAction(const Context& ctx, const YAML::Node& spec) {
  NW_ASSIGN_OR_RETURN(std::string action, String(ctx, spec, "action", "spec.action"));
  if (action.empty() || action == "ALLOW") return AuthorizationAction::kAllow;
  if (action == "DENY") return AuthorizationAction::kDeny;
  if (action == "AUDIT") return AuthorizationAction::kAudit;
  if (action == "CUSTOM") return AuthorizationAction::kCustom;
  return ctx.Error(
      Child(spec, "action"), "spec.action",
      absl::StrCat("unknown action \"", action, "\" (expected ALLOW, DENY, AUDIT or CUSTOM)"));
}

absl::StatusOr<std::optional<Labels>> ParseSelector(const Context& ctx, const YAML::Node& spec) {
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> selector,
                      Map(ctx, spec, "selector", "spec.selector"));
  if (!selector.has_value()) return std::optional<Labels>();
  NW_ASSIGN_OR_RETURN(std::optional<Labels> labels,
                      LabelMap(ctx, *selector, "matchLabels", "spec.selector.matchLabels"));
  // An empty matchLabels selects every workload in scope, as no selector does.
  if (labels.has_value() && labels->empty()) return std::optional<Labels>();
  return labels;
}

}  // namespace

absl::Status ParseAuthorizationPolicy(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  AuthorizationPolicy policy;
  NW_ASSIGN_OR_RETURN(policy.meta,
                      Metadata(ctx, object, "AuthorizationPolicy", /*namespaced=*/true));
  YAML::Node annotations = Child(Child(object, "metadata"), "annotations");
  if (Present(annotations) && annotations.IsMap()) {
    policy.dry_run = ScalarField(annotations, "istio.io/dry-run") == "true";
  }
  YAML::Node spec = Child(object, "spec");
  if (Present(spec) && !spec.IsMap()) return ctx.Error(spec, "spec", "expected a map");
  NW_ASSIGN_OR_RETURN(policy.selector, ParseSelector(ctx, spec));
  for (const char* key : {"targetRef", "targetRefs"}) {
    if (Present(Child(spec, key))) policy.targets_waypoint = true;
  }
  if (policy.targets_waypoint && Present(Child(spec, "selector"))) {
    return ctx.Error(spec, "spec", "selector cannot be combined with targetRef or targetRefs");
  }
  NW_ASSIGN_OR_RETURN(policy.action, ParseAction(ctx, spec));
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> provider,
                      Map(ctx, spec, "provider", "spec.provider"));
  if (provider.has_value()) {
    if (policy.action != AuthorizationAction::kCustom) {
      return ctx.Error(*provider, "spec.provider", "only a CUSTOM action takes a provider");
    }
    NW_ASSIGN_OR_RETURN(policy.provider, String(ctx, *provider, "name", "spec.provider.name"));
  }
  YAML::Node rules = Child(spec, "rules");
  const bool no_rules = !Present(rules) || (rules.IsSequence() && rules.size() == 0);
  if (no_rules && (policy.action == AuthorizationAction::kDeny ||
                   policy.action == AuthorizationAction::kCustom)) {
    return ctx.Error(spec, "spec.rules",
                     absl::StrCat(AuthorizationActionName(policy.action),
                                  " without rules never matches; write `rules: [{}]` to match "
                                  "every connection"));
  }
  if (policy.action == AuthorizationAction::kCustom && policy.provider.empty()) {
    return ctx.Error(spec, "spec.provider.name", "a CUSTOM action needs a provider");
  }
  NW_RETURN_IF_ERROR(ForEach(
      ctx, spec, "rules", "spec.rules",
      [&](const YAML::Node& item, const std::string& field) -> absl::Status {
        AuthorizationRule rule;
        for (const char* key : {"from", "to"}) {
          YAML::Node list = Child(item, key);
          if (Present(list) && list.IsSequence() && list.size() == 0) {
            return ctx.Error(list, absl::StrCat(field, ".", key), "must not be empty");
          }
        }
        NW_RETURN_IF_ERROR(ForEach(
            ctx, item, "from", field + ".from",
            [&](const YAML::Node& from, const std::string& from_field) -> absl::Status {
              NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> source,
                                  Map(ctx, from, "source", from_field + ".source"));
              if (!source.has_value()) return ctx.Error(from, from_field + ".source", "missing");
              return ParseSource(ctx, *source, from_field + ".source", policy.meta.ns, rule);
            }));
        NW_RETURN_IF_ERROR(
            ForEach(ctx, item, "to", field + ".to",
                    [&](const YAML::Node& to, const std::string& to_field) -> absl::Status {
                      NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> operation,
                                          Map(ctx, to, "operation", to_field + ".operation"));
                      if (!operation.has_value()) {
                        return ctx.Error(to, to_field + ".operation", "missing");
                      }
                      return ParseOperation(ctx, *operation, to_field + ".operation", rule);
                    }));
        NW_RETURN_IF_ERROR(ForEach(ctx, item, "when", field + ".when",
                                   [&](const YAML::Node& when, const std::string& when_field) {
                                     return ParseCondition(ctx, when, when_field, rule);
                                   }));
        policy.rules.push_back(std::move(rule));
        return absl::OkStatus();
      }));
  out.authorization_policies.push_back(std::move(policy));
  return absl::OkStatus();
}

AuthorizationPolicy RejectedAuthorizationPolicy(const YAML::Node& object, std::string why) {
  AuthorizationPolicy policy;
  Context ctx("api", -1, "AuthorizationPolicy");
  YAML::Node metadata = Child(object, "metadata");
  policy.meta.name = ScalarField(metadata, "name");
  policy.meta.ns = ScalarField(metadata, "namespace");
  if (policy.meta.ns.empty()) policy.meta.ns = "default";
  policy.meta.origin = "api (rejected)";
  YAML::Node spec = Child(object, "spec");
  absl::StatusOr<std::optional<Labels>> selector = ParseSelector(ctx, spec);
  if (selector.ok()) policy.selector = *std::move(selector);
  absl::StatusOr<AuthorizationAction> action = ParseAction(ctx, spec);
  if (action.ok() && *action == AuthorizationAction::kAllow) {
    // Present and matching nothing: the workloads it selects admit only what other ALLOW
    // policies admit, never everything.
    policy.action = AuthorizationAction::kAllow;
  } else {
    policy.action = AuthorizationAction::kDeny;
    policy.rules.emplace_back();  // `{}`: every connection
  }
  policy.rejected = std::move(why);
  return policy;
}

}  // namespace nodeward::policy::internal
