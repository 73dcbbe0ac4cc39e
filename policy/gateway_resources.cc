// Istio's host names, and the Gateway kind: parsed with the checks of Istio's ValidateGateway
// (pkg/config/validation/validation.go), errors naming the field.
#include "policy/gateway_resources.h"

#include <map>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "policy/gateway_kind_parsers.h"

namespace nodeward::policy {
namespace {

bool IsWildcard(absl::string_view host) { return !host.empty() && host.front() == '*'; }

bool IsDns1123Label(absl::string_view label) {
  if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
    return false;
  }
  for (char c : label) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return true;
}

// An exact SNI outranks every wildcard, whose rank is its suffix length (at most 255).
constexpr std::size_t kExactSniRank = 1 << 16;

}  // namespace

absl::string_view GatewayProtocolName(GatewayProtocol protocol) {
  switch (protocol) {
    case GatewayProtocol::kHttp:
      return "HTTP";
    case GatewayProtocol::kHttps:
      return "HTTPS";
    case GatewayProtocol::kTls:
      return "TLS";
    case GatewayProtocol::kTcp:
      return "TCP";
  }
  return "UNKNOWN";
}

absl::string_view ServerTlsModeName(ServerTlsMode mode) {
  switch (mode) {
    case ServerTlsMode::kPassthrough:
      return "PASSTHROUGH";
    case ServerTlsMode::kSimple:
      return "SIMPLE";
    case ServerTlsMode::kMutual:
      return "MUTUAL";
    case ServerTlsMode::kAutoPassthrough:
      return "AUTO_PASSTHROUGH";
    case ServerTlsMode::kIstioMutual:
      return "ISTIO_MUTUAL";
    case ServerTlsMode::kOptionalMutual:
      return "OPTIONAL_MUTUAL";
  }
  return "UNKNOWN";
}

absl::string_view TlsProtocolVersionName(TlsProtocolVersion version) {
  switch (version) {
    case TlsProtocolVersion::kAuto:
      return "TLS_AUTO";
    case TlsProtocolVersion::kTlsV1_0:
      return "TLSV1_0";
    case TlsProtocolVersion::kTlsV1_1:
      return "TLSV1_1";
    case TlsProtocolVersion::kTlsV1_2:
      return "TLSV1_2";
    case TlsProtocolVersion::kTlsV1_3:
      return "TLSV1_3";
  }
  return "UNKNOWN";
}

bool HostsOverlap(absl::string_view a, absl::string_view b) {
  if (IsWildcard(a) && IsWildcard(b)) {
    return a.size() < b.size() ? absl::EndsWith(b.substr(1), a.substr(1))
                               : absl::EndsWith(a.substr(1), b.substr(1));
  }
  if (IsWildcard(a)) return absl::EndsWith(b, a.substr(1));
  if (IsWildcard(b)) return absl::EndsWith(a, b.substr(1));
  return a == b;
}

bool HostSubsetOf(absl::string_view a, absl::string_view b) {
  if (IsWildcard(a)) return IsWildcard(b) && absl::EndsWith(a.substr(1), b.substr(1));
  if (IsWildcard(b)) return absl::EndsWith(a, b.substr(1));
  return a == b;
}

std::optional<std::size_t> SniMatchRank(absl::string_view pattern, absl::string_view sni) {
  if (pattern == "*") return 0;
  const std::string name = absl::AsciiStrToLower(sni);
  if (absl::StartsWith(pattern, "*.")) {
    // Envoy's wildcard never matches the bare suffix: "*.example.com" is not "example.com".
    const absl::string_view suffix = pattern.substr(1);
    if (name.size() > suffix.size() && absl::EndsWith(name, suffix)) return suffix.size();
    return std::nullopt;
  }
  if (!name.empty() && absl::EqualsIgnoreCase(pattern, name)) return kExactSniRank;
  return std::nullopt;
}

ServerHost ParseServerHost(absl::string_view written, absl::string_view gateway_namespace) {
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(written, absl::MaxSplits('/', 1));
  if (written.find('/') == absl::string_view::npos) return {"*", std::string(written)};
  if (parts.first == ".") return {std::string(gateway_namespace), std::string(parts.second)};
  return {std::string(parts.first), std::string(parts.second)};
}

std::string ResolveGatewayName(absl::string_view written, absl::string_view virtual_service_ns) {
  if (written == "mesh") return "mesh";
  if (written.find('/') != absl::string_view::npos) return std::string(written);
  if (written.find('.') != absl::string_view::npos) {
    std::vector<absl::string_view> labels = absl::StrSplit(written, '.');
    return absl::StrCat(labels[1], "/", labels[0]);
  }
  return absl::StrCat(virtual_service_ns, "/", written);
}

std::string WildcardDomainProblem(absl::string_view domain) {
  if (domain.empty()) return "empty host name";
  if (domain.size() > 255) return absl::StrCat("\"", domain, "\" is longer than 255 bytes");
  if (domain == "*") return "";
  std::vector<absl::string_view> labels = absl::StrSplit(domain, '.');
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i == 0 && labels[0] == "*") continue;
    if (labels[i].find('*') != absl::string_view::npos) {
      return absl::StrCat("\"", domain, "\": only a whole first label may be a \"*\" wildcard");
    }
    if (!IsDns1123Label(labels[i])) {
      return absl::StrCat("\"", domain, "\": label \"", labels[i],
                          "\" is not a lowercase DNS-1123 label");
    }
  }
  return "";
}

namespace internal {
namespace {

absl::StatusOr<GatewayProtocol> ParseProtocol(const Context& ctx, const YAML::Node& port,
                                              absl::string_view field) {
  NW_ASSIGN_OR_RETURN(std::string written, String(ctx, port, "protocol", field));
  const std::string name = absl::AsciiStrToUpper(written);
  if (name == "HTTP" || name == "HTTP2" || name == "GRPC" || name == "GRPC-WEB") {
    return GatewayProtocol::kHttp;
  }
  if (name == "HTTPS") return GatewayProtocol::kHttps;
  if (name == "TLS") return GatewayProtocol::kTls;
  if (name == "TCP" || name == "MONGO" || name == "REDIS" || name == "MYSQL") {
    return GatewayProtocol::kTcp;
  }
  return ctx.Error(Child(port, "protocol"), field,
                   absl::StrCat("invalid protocol \"", written,
                                "\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, "
                                "TLS, TCP, MONGO, REDIS, MYSQL"));
}

absl::StatusOr<TlsProtocolVersion> ParseVersion(const Context& ctx, const YAML::Node& tls,
                                                const char* key, absl::string_view field) {
  NW_ASSIGN_OR_RETURN(std::string written, String(ctx, tls, key, field));
  static const auto* const kVersions = new std::map<std::string, TlsProtocolVersion>{
      {"", TlsProtocolVersion::kAuto},           {"TLS_AUTO", TlsProtocolVersion::kAuto},
      {"TLSV1_0", TlsProtocolVersion::kTlsV1_0}, {"TLSV1_1", TlsProtocolVersion::kTlsV1_1},
      {"TLSV1_2", TlsProtocolVersion::kTlsV1_2}, {"TLSV1_3", TlsProtocolVersion::kTlsV1_3}};
  auto it = kVersions->find(written);
  if (it != kVersions->end()) return it->second;
  return ctx.Error(Child(tls, key), field,
                   absl::StrCat("unknown version \"", written,
                                "\" (expected TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2 or TLSV1_3)"));
}

absl::StatusOr<ServerTlsMode> ParseMode(const Context& ctx, const YAML::Node& tls,
                                        absl::string_view field) {
  NW_ASSIGN_OR_RETURN(std::string written, String(ctx, tls, "mode", field));
  static const auto* const kModes = new std::map<std::string, ServerTlsMode>{
      {"", ServerTlsMode::kPassthrough},
      {"PASSTHROUGH", ServerTlsMode::kPassthrough},
      {"SIMPLE", ServerTlsMode::kSimple},
      {"MUTUAL", ServerTlsMode::kMutual},
      {"AUTO_PASSTHROUGH", ServerTlsMode::kAutoPassthrough},
      {"ISTIO_MUTUAL", ServerTlsMode::kIstioMutual},
      {"OPTIONAL_MUTUAL", ServerTlsMode::kOptionalMutual}};
  auto it = kModes->find(written);
  if (it != kModes->end()) return it->second;
  return ctx.Error(Child(tls, "mode"), field,
                   absl::StrCat("unknown mode \"", written,
                                "\" (expected PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, "
                                "ISTIO_MUTUAL or OPTIONAL_MUTUAL)"));
}

absl::Status ValidateServerHost(const Context& ctx, const YAML::Node& at, absl::string_view field,
                                absl::string_view written) {
  if (written.find('/') == absl::string_view::npos) {
    std::string problem = WildcardDomainProblem(written);
    return problem.empty() ? absl::OkStatus() : ctx.Error(at, field, problem);
  }
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(written, absl::MaxSplits('/', 1));
  if (parts.first.empty() || parts.second.empty()) {
    return ctx.Error(at, field,
                     absl::StrCat("\"", written, "\": namespace and host cannot be empty"));
  }
  if (parts.first != "*" && parts.first != "." && !IsDns1123Label(parts.first)) {
    return ctx.Error(at, field,
                     absl::StrCat("invalid namespace \"", parts.first, "\" in \"", written, "\""));
  }
  std::string problem = WildcardDomainProblem(parts.second);
  return problem.empty() ? absl::OkStatus() : ctx.Error(at, field, problem);
}

// Envoy's forms: verifyCertificateSpki is the base64 SHA-256 of the SubjectPublicKeyInfo,
// verifyCertificateHash the hex SHA-256 of the DER certificate, colons allowed.
absl::Status ValidatePins(const Context& ctx, const YAML::Node& tls, absl::string_view prefix,
                          const ServerTlsSettings& settings) {
  for (const std::string& pin : settings.verify_certificate_spki) {
    std::string decoded;
    if (!absl::Base64Unescape(pin, &decoded) || decoded.size() != 32) {
      return ctx.Error(Child(tls, "verifyCertificateSpki"),
                       absl::StrCat(prefix, "verifyCertificateSpki"),
                       absl::StrCat("\"", pin, "\" is not a base64 SHA-256 digest"));
    }
  }
  for (const std::string& hash : settings.verify_certificate_hash) {
    const std::string hex = absl::StrReplaceAll(hash, {{":", ""}});
    if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), absl::ascii_isxdigit)) {
      return ctx.Error(Child(tls, "verifyCertificateHash"),
                       absl::StrCat(prefix, "verifyCertificateHash"),
                       absl::StrCat("\"", hash, "\" is not a hex SHA-256 digest"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerTlsSettings> ParseServerTls(const Context& ctx, const YAML::Node& tls,
                                                 absl::string_view field, Gateway& gateway) {
  ServerTlsSettings settings;
  const std::string prefix = absl::StrCat(field, ".");
  NW_ASSIGN_OR_RETURN(std::optional<bool> redirect,
                      Bool(ctx, tls, "httpsRedirect", prefix + "httpsRedirect"));
  settings.https_redirect = redirect.value_or(false);
  NW_ASSIGN_OR_RETURN(settings.mode, ParseMode(ctx, tls, prefix + "mode"));
  struct {
    const char* key;
    std::string* value;
  } strings[] = {{"serverCertificate", &settings.server_certificate},
                 {"privateKey", &settings.private_key},
                 {"caCertificates", &settings.ca_certificates},
                 {"caCrl", &settings.ca_crl},
                 {"credentialName", &settings.credential_name}};
  for (const auto& entry : strings) {
    NW_ASSIGN_OR_RETURN(*entry.value, String(ctx, tls, entry.key, prefix + entry.key));
  }
  struct {
    const char* key;
    std::vector<std::string>* value;
  } lists[] = {{"subjectAltNames", &settings.subject_alt_names},
               {"verifyCertificateSpki", &settings.verify_certificate_spki},
               {"verifyCertificateHash", &settings.verify_certificate_hash},
               {"cipherSuites", &settings.cipher_suites}};
  for (const auto& entry : lists) {
    NW_ASSIGN_OR_RETURN(*entry.value, StringList(ctx, tls, entry.key, prefix + entry.key));
  }
  NW_ASSIGN_OR_RETURN(settings.min_protocol_version,
                      ParseVersion(ctx, tls, "minProtocolVersion", prefix + "minProtocolVersion"));
  NW_ASSIGN_OR_RETURN(settings.max_protocol_version,
                      ParseVersion(ctx, tls, "maxProtocolVersion", prefix + "maxProtocolVersion"));
  // Newer Istio serves several certificates per server; none of them may be silently left out.
  for (const char* key : {"credentialNames", "tlsCertificates"}) {
    if (Present(Child(tls, key))) {
      return ctx.Error(Child(tls, key), prefix + key,
                       "is not supported; give one certificate with credentialName or "
                       "serverCertificate and privateKey");
    }
  }
  NW_RETURN_IF_ERROR(ValidatePins(ctx, tls, prefix, settings));

  const absl::string_view mode = ServerTlsModeName(settings.mode);
  const bool mutual =
      settings.mode == ServerTlsMode::kMutual || settings.mode == ServerTlsMode::kOptionalMutual;
  const bool has_files = !settings.server_certificate.empty() || !settings.private_key.empty() ||
                         !settings.ca_certificates.empty();
  switch (settings.mode) {
    case ServerTlsMode::kIstioMutual:
      // The gateway's own mesh certificate and roots serve it: Istio refuses any other.
      if (has_files || !settings.credential_name.empty()) {
        return ctx.Error(tls, field,
                         "ISTIO_MUTUAL TLS cannot have associated server certificate, private "
                         "key, CA bundle or credentialName");
      }
      break;
    case ServerTlsMode::kPassthrough:
    case ServerTlsMode::kAutoPassthrough:
      if (has_files || !settings.credential_name.empty() || !settings.ca_crl.empty()) {
        gateway.warnings.push_back(absl::StrCat(
            field, ": ", mode, " mode does not use certificates, they will be ignored"));
      }
      break;
    case ServerTlsMode::kSimple:
    case ServerTlsMode::kMutual:
    case ServerTlsMode::kOptionalMutual:
      if (!settings.credential_name.empty()) {
        if (has_files || !settings.ca_crl.empty()) {
          gateway.warnings.push_back(
              absl::StrCat(field,
                           ": credentialName is set, so serverCertificate, privateKey, "
                           "caCertificates and caCrl are ignored (the CRL comes from the "
                           "Secret's crl or ca.crl)"));
        }
        break;
      }
      if (settings.server_certificate.empty()) {
        return ctx.Error(tls, field, absl::StrCat(mode, " TLS requires a server certificate"));
      }
      if (settings.private_key.empty()) {
        return ctx.Error(tls, field, absl::StrCat(mode, " TLS requires a private key"));
      }
      if (mutual && settings.ca_certificates.empty()) {
        return ctx.Error(tls, field, absl::StrCat(mode, " TLS requires a client CA bundle"));
      }
      break;
  }
  if (settings.mode == ServerTlsMode::kIstioMutual && !settings.ca_crl.empty()) {
    return ctx.Error(tls, field, "caCrl is not supported with ISTIO_MUTUAL here");
  }
  if (settings.mode == ServerTlsMode::kSimple && !settings.ca_crl.empty()) {
    gateway.warnings.push_back(
        absl::StrCat(field, ": caCrl checks client certificates, which SIMPLE does not ask for"));
  }
  if (!mutual && settings.mode != ServerTlsMode::kIstioMutual &&
      (!settings.subject_alt_names.empty() || !settings.verify_certificate_spki.empty() ||
       !settings.verify_certificate_hash.empty())) {
    gateway.warnings.push_back(absl::StrCat(
        field,
        ": subjectAltNames, verifyCertificateSpki and verifyCertificateHash check client "
        "certificates and only apply to MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL"));
  }
  if (settings.min_protocol_version != TlsProtocolVersion::kAuto &&
      settings.max_protocol_version != TlsProtocolVersion::kAuto &&
      settings.min_protocol_version > settings.max_protocol_version) {
    return ctx.Error(
        tls, field,
        absl::StrCat("minProtocolVersion ", TlsProtocolVersionName(settings.min_protocol_version),
                     " is above maxProtocolVersion ",
                     TlsProtocolVersionName(settings.max_protocol_version)));
  }
  return settings;
}

absl::Status ParseServer(const Context& ctx, const YAML::Node& item, const std::string& field,
                         Gateway& gateway) {
  GatewayServer server;
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> port, Map(ctx, item, "port", field + ".port"));
  if (!port.has_value()) return ctx.Error(item, field + ".port", "missing");
  YAML::Node number = Child(*port, "number");
  if (!Present(number)) return ctx.Error(*port, field + ".port.number", "missing");
  NW_ASSIGN_OR_RETURN(server.port.number, PortNumber(ctx, number, field + ".port.number"));
  NW_ASSIGN_OR_RETURN(server.port.protocol_name,
                      String(ctx, *port, "protocol", field + ".port.protocol"));
  NW_ASSIGN_OR_RETURN(server.port.protocol, ParseProtocol(ctx, *port, field + ".port.protocol"));
  NW_ASSIGN_OR_RETURN(server.port.name, String(ctx, *port, "name", field + ".port.name"));
  if (server.port.name.empty()) return ctx.Error(*port, field + ".port.name", "must be set");
  NW_ASSIGN_OR_RETURN(server.bind, String(ctx, item, "bind", field + ".bind"));
  NW_ASSIGN_OR_RETURN(server.name, String(ctx, item, "name", field + ".name"));
  NW_ASSIGN_OR_RETURN(server.hosts, StringList(ctx, item, "hosts", field + ".hosts"));
  if (server.hosts.empty()) {
    return ctx.Error(item, field + ".hosts", "a server must contain at least one host");
  }
  for (const std::string& host : server.hosts) {
    NW_RETURN_IF_ERROR(ValidateServerHost(ctx, Child(item, "hosts"), field + ".hosts", host));
  }
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> tls, Map(ctx, item, "tls", field + ".tls"));
  const GatewayProtocol protocol = server.port.protocol;
  if ((protocol == GatewayProtocol::kHttps || protocol == GatewayProtocol::kTls) &&
      !tls.has_value()) {
    return ctx.Error(item, field + ".tls", "server must have TLS settings for HTTPS/TLS protocols");
  }
  if (protocol == GatewayProtocol::kTcp && tls.has_value()) {
    return ctx.Error(*tls, field + ".tls",
                     absl::StrCat("server cannot have TLS settings for a plain text ",
                                  server.port.protocol_name, " port (use protocol TLS)"));
  }
  if (tls.has_value()) {
    NW_ASSIGN_OR_RETURN(server.tls, ParseServerTls(ctx, *tls, field + ".tls", gateway));
  }
  if (!server.bind.empty()) {
    gateway.warnings.push_back(absl::StrCat(
        field, ".bind: ", server.bind, " is ignored: the gateway listens on all its addresses"));
  }
  gateway.servers.push_back(std::move(server));
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseGateway(Context& ctx, const YAML::Node& object, ResourceSet& out) {
  Gateway gateway;
  NW_ASSIGN_OR_RETURN(gateway.meta, Metadata(ctx, object, "Gateway", /*namespaced=*/true));
  NW_ASSIGN_OR_RETURN(std::optional<YAML::Node> spec, Map(ctx, object, "spec", "spec"));
  YAML::Node spec_node = spec.value_or(YAML::Node(YAML::NodeType::Undefined));
  NW_ASSIGN_OR_RETURN(std::optional<Labels> selector,
                      LabelMap(ctx, spec_node, "selector", "spec.selector"));
  if (selector.has_value()) gateway.selector = *std::move(selector);
  NW_RETURN_IF_ERROR(ForEach(ctx, spec_node, "servers", "spec.servers",
                             [&](const YAML::Node& item, const std::string& field) {
                               return ParseServer(ctx, item, field, gateway);
                             }));
  if (gateway.servers.empty()) {
    return ctx.Error(object, "spec.servers", "a gateway must have at least one server");
  }
  // Port names tell servers apart (Istio names HTTPS routes after them).
  std::map<std::string, std::size_t> names;
  for (std::size_t i = 0; i < gateway.servers.size(); ++i) {
    auto [it, inserted] = names.emplace(gateway.servers[i].port.name, i);
    if (!inserted) {
      return ctx.Error(Child(spec_node, "servers"), absl::StrCat("spec.servers[", i, "].port.name"),
                       absl::StrCat("port names in servers must be unique: \"", it->first,
                                    "\" is also servers[", it->second, "]'s"));
    }
  }
  out.gateways.push_back(std::move(gateway));
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace nodeward::policy
