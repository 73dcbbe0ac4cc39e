#include "policy/gateway_resources.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"
#include "policy/snapshot.h"

namespace nodeward::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

absl::StatusOr<ResourceSet> Parse(const std::string& yaml) {
  ResourceSet out;
  absl::Status status = AppendYamlResources(yaml, "gw.yaml", out);
  if (!status.ok()) return status;
  return out;
}

constexpr char kGateway[] = R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: public
  namespace: istio-ingress
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https-shop, protocol: https}
    hosts: ["shop/shop.example.com", "./admin.example.com"]
    tls:
      mode: SIMPLE
      credentialName: shop-cert
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]
  - port: {number: 443, name: tls-bank, protocol: TLS}
    hosts: ["*/bank.example.com"]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/bank.crt
      privateKey: /etc/certs/bank.key
      caCertificates: /etc/certs/clients.pem
      subjectAltNames: [client.example.com]
      verifyCertificateSpki: ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]
      verifyCertificateHash: ["E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"]
  - port: {number: 8443, name: passthrough, protocol: TLS}
    hosts: ["*.internal.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: mesh, protocol: TLS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 5432, name: db, protocol: TCP}
    hosts: ["*"]
)";

TEST(GatewayResourcesTest, ParsesAGatewayAsIstioDefinesIt) {
  for (const char* version : {"v1", "v1beta1", "v1alpha3"}) {
    std::string yaml = absl::StrReplaceAll(
        kGateway,
        {{"networking.istio.io/v1\n", absl::StrCat("networking.istio.io/", version, "\n")}});
    absl::StatusOr<ResourceSet> set = Parse(yaml);
    ASSERT_TRUE(set.ok()) << version << ": " << set.status();
    ASSERT_EQ(set->gateways.size(), 1u);
    const Gateway& gateway = set->gateways[0];
    EXPECT_EQ(gateway.meta.ns, "istio-ingress");
    EXPECT_EQ(gateway.selector.at("istio"), "ingressgateway");
    ASSERT_EQ(gateway.servers.size(), 5u);
    const GatewayServer& https = gateway.servers[0];
    EXPECT_EQ(https.port.number, 443u);
    EXPECT_EQ(https.port.protocol, GatewayProtocol::kHttps);
    EXPECT_EQ(https.port.protocol_name, "https");
    EXPECT_THAT(https.hosts, ElementsAre("shop/shop.example.com", "./admin.example.com"));
    ASSERT_TRUE(https.tls.has_value());
    EXPECT_EQ(https.tls->mode, ServerTlsMode::kSimple);
    EXPECT_EQ(https.tls->credential_name, "shop-cert");
    EXPECT_EQ(https.tls->min_protocol_version, TlsProtocolVersion::kTlsV1_2);
    EXPECT_EQ(https.tls->max_protocol_version, TlsProtocolVersion::kTlsV1_3);
    EXPECT_THAT(https.tls->cipher_suites, ElementsAre("ECDHE-ECDSA-AES128-GCM-SHA256"));
    const ServerTlsSettings& mutual = *gateway.servers[1].tls;
    EXPECT_EQ(mutual.mode, ServerTlsMode::kMutual);
    EXPECT_EQ(mutual.ca_certificates, "/etc/certs/clients.pem");
    EXPECT_THAT(mutual.subject_alt_names, ElementsAre("client.example.com"));
    EXPECT_EQ(mutual.verify_certificate_spki.size(), 1u);
    EXPECT_EQ(mutual.verify_certificate_hash.size(), 1u);
    EXPECT_EQ(gateway.servers[2].tls->mode, ServerTlsMode::kPassthrough);
    EXPECT_EQ(gateway.servers[3].tls->mode, ServerTlsMode::kIstioMutual);
    EXPECT_EQ(gateway.servers[4].port.protocol, GatewayProtocol::kTcp);
    EXPECT_FALSE(gateway.servers[4].tls.has_value());
    EXPECT_THAT(gateway.warnings, IsEmpty());
  }
}

std::string GatewayWithServer(const std::string& server) {
  return absl::StrCat(R"(
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  servers:
)",
                      server);
}

TEST(GatewayResourcesTest, InvalidGatewaysAreRejectedNamingTheField) {
  struct Case {
    std::string server;
    const char* error;
  };
  for (const Case& c : std::vector<Case>{
           {"  - port: {number: 443, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "PASSTHROUGH}\n",
            "spec.servers[0].port.name: must be set"},
           {"  - port: {number: 80, name: x, protocol: UDP}\n    hosts: [a.com]\n",
            "spec.servers[0].port.protocol: invalid protocol \"UDP\""},
           {"  - port: {number: 0, name: x, protocol: TCP}\n    hosts: [a.com]\n",
            "spec.servers[0].port.number"},
           {"  - port: {number: 443, name: x, protocol: HTTPS}\n    hosts: [a.com]\n",
            "server must have TLS settings for HTTPS/TLS protocols"},
           {"  - port: {number: 9000, name: x, protocol: TCP}\n    hosts: [a.com]\n    tls: {mode: "
            "SIMPLE}\n",
            "server cannot have TLS settings for a plain text TCP port"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "SIMPLE, serverCertificate: /c}\n",
            "SIMPLE TLS requires a private key"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "MUTUAL, serverCertificate: /c, privateKey: /k}\n",
            "MUTUAL TLS requires a client CA bundle"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "ISTIO_MUTUAL, credentialName: c}\n",
            "ISTIO_MUTUAL TLS cannot have associated"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n"
            "    tls: {mode: ISTIO_MUTUAL, caCrl: /crl.pem}\n",
            "caCrl is not supported with ISTIO_MUTUAL here"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "BOGUS}\n",
            "spec.servers[0].tls.mode: unknown mode \"BOGUS\""},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: "
            "TLSV1_2}\n",
            "minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "SIMPLE, credentialName: c, minProtocolVersion: TLSV1_9}\n",
            "unknown version \"TLSV1_9\""},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "MUTUAL, credentialName: c, verifyCertificateSpki: [abc]}\n",
            "verifyCertificateSpki: \"abc\" is not a base64 SHA-256 digest"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "MUTUAL, credentialName: c, verifyCertificateHash: [\"00:11\"]}\n",
            "is not a hex SHA-256 digest"},
           {"  - port: {number: 443, name: x, protocol: TLS}\n    hosts: [a.com]\n    tls: {mode: "
            "SIMPLE, credentialNames: [a, b]}\n",
            "credentialNames: is not supported"},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: []\n",
            "a server must contain at least one host"},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: [\"Upper.example.com\"]\n",
            "is not a lowercase DNS-1123 label"},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: [\"a.*.com\"]\n",
            "only a whole first label"},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: [\"Bad_NS/a.com\"]\n",
            "invalid namespace \"Bad_NS\""},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: [\"/a.com\"]\n",
            "namespace and host cannot be empty"},
           {"  - port: {number: 80, name: x, protocol: TCP}\n    hosts: [a.com]\n"
            "  - port: {number: 81, name: x, protocol: TCP}\n    hosts: [b.com]\n",
            "spec.servers[1].port.name: port names in servers must be unique"},
       }) {
    absl::StatusOr<ResourceSet> set = Parse(GatewayWithServer(c.server));
    ASSERT_FALSE(set.ok()) << c.server;
    EXPECT_THAT(set.status().message(), HasSubstr("Gateway edge/gw")) << c.server;
    EXPECT_THAT(set.status().message(), HasSubstr(c.error)) << c.server;
  }
  absl::StatusOr<ResourceSet> empty = Parse(GatewayWithServer("  []\n"));
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("a gateway must have at least one server"));
}

TEST(GatewayResourcesTest, IgnoredSettingsAreWarnedAbout) {
  absl::StatusOr<ResourceSet> set = Parse(GatewayWithServer(
      "  - port: {number: 443, name: p, protocol: TLS}\n    hosts: [a.com]\n    bind: 10.0.0.1\n"
      "    tls: {mode: PASSTHROUGH, credentialName: unused}\n"
      "  - port: {number: 444, name: s, protocol: TLS}\n    hosts: [b.com]\n"
      "    tls: {mode: SIMPLE, credentialName: c, serverCertificate: /x, subjectAltNames: [x]}\n"));
  ASSERT_TRUE(set.ok()) << set.status();
  const std::vector<std::string>& warnings = set->gateways[0].warnings;
  ASSERT_EQ(warnings.size(), 4u);
  EXPECT_THAT(warnings[0], HasSubstr("PASSTHROUGH mode does not use certificates"));
  EXPECT_THAT(warnings[1], HasSubstr("bind: 10.0.0.1 is ignored"));
  EXPECT_THAT(warnings[2], HasSubstr("credentialName is set, so serverCertificate, privateKey, "
                                     "caCertificates and caCrl are ignored"));
  EXPECT_THAT(warnings[3], HasSubstr("only apply to MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL"));
}

constexpr char kVirtualService[] = R"(
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: routes, namespace: shop}
spec:
  hosts: ["*.example.com", shop.example.com]
  gateways: [istio-ingress/public, edge]
  exportTo: ["."]
  http:
  - route: [{destination: {host: web}}]
  tls:
  - match:
    - sniHosts: [a.example.com, "*.example.com"]
      port: 443
      gateways: [istio-ingress/public]
    route:
    - destination: {host: a, port: {number: 8443}}
      weight: 90
    - destination: {host: a-canary.shop.svc.cluster.local, port: {number: 8443}, subset: v2}
      weight: 10
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db}}]
  - route: [{destination: {host: fallback, port: {number: 9000}}}]
)";

TEST(GatewayResourcesTest, ParsesVirtualServiceL4RoutesAndCountsHttpOnes) {
  absl::StatusOr<ResourceSet> set = Parse(kVirtualService);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->virtual_services.size(), 1u);
  const VirtualService& vs = set->virtual_services[0];
  EXPECT_THAT(vs.hosts, ElementsAre("*.example.com", "shop.example.com"));
  EXPECT_THAT(vs.gateways, ElementsAre("istio-ingress/public", "edge"));
  EXPECT_THAT(vs.export_to, ElementsAre("."));
  EXPECT_EQ(vs.http_routes, 1u);
  ASSERT_EQ(vs.tls.size(), 1u);
  ASSERT_EQ(vs.tls[0].match.size(), 1u);
  EXPECT_THAT(vs.tls[0].match[0].sni_hosts, ElementsAre("a.example.com", "*.example.com"));
  EXPECT_EQ(vs.tls[0].match[0].port, 443u);
  ASSERT_EQ(vs.tls[0].route.size(), 2u);
  EXPECT_EQ(vs.tls[0].route[0].host, "a");
  EXPECT_EQ(vs.tls[0].route[0].port, 8443u);
  EXPECT_EQ(vs.tls[0].route[0].weight, 90u);
  EXPECT_EQ(vs.tls[0].route[1].subset, "v2");
  ASSERT_EQ(vs.tcp.size(), 2u);
  EXPECT_EQ(vs.tcp[0].match[0].port, 5432u);
  EXPECT_TRUE(vs.tcp[1].match.empty());
  EXPECT_EQ(vs.tcp[1].route[0].port, 9000u);
  ASSERT_EQ(vs.warnings.size(), 1u);
  EXPECT_THAT(vs.warnings[0], HasSubstr("1 http route(s) are not applied by the nodeward gateway"));
}

TEST(GatewayResourcesTest, InvalidVirtualServicesAreRejectedNamingTheField) {
  struct Case {
    std::string spec;
    const char* error;
  };
  for (const Case& c : std::vector<Case>{
           {"  tcp: [{route: [{destination: {host: a}}]}]\n",
            "spec.hosts: a virtual service must have at least one host"},
           {"  hosts: [a.com]\n", "http, tcp or tls must be provided"},
           {"  hosts: [a.com]\n  tls: [{route: [{destination: {host: a}}]}]\n",
            "spec.tls[0].match: a TLS route must have at least one match condition"},
           {"  hosts: [a.com]\n  tls: [{match: [{port: 443}], route: [{destination: {host: "
            "a}}]}]\n",
            "a TLS match must have at least one SNI host"},
           {"  hosts: [a.com]\n  tls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: "
            "a}}]}]\n",
            "the SNI host \"b.com\" is not a match on any of the hosts [a.com]"},
           {"  hosts: [a.com]\n  tcp: [{match: [{port: 5432}]}]\n",
            "spec.tcp[0].route: a TCP route needs a destination"},
           {"  hosts: [a.com]\n  tcp: [{route: [{destination: {host: \"*\"}}]}]\n",
            "invalid destination host \"*\""},
           {"  hosts: [a.com]\n  tcp: [{route: [{destination: {host: a}, weight: 0}, {destination: "
            "{host: b}}]}]\n",
            "total destination weight = 0"},
           {"  hosts: [a.com]\n  tcp: [{route: [{destination: {host: a}, weight: -5}]}]\n",
            "weight: must be a number, 0 or more"},
           {"  hosts: [a.com]\n  gateways: [\"/gw\"]\n  tcp: [{route: [{destination: {host: "
            "a}}]}]\n",
            "gateway \"/gw\": needs a namespace"},
           {"  hosts: [a.com]\n  exportTo: [\"Not Valid\"]\n  tcp: [{route: [{destination: {host: "
            "a}}]}]\n",
            "spec.exportTo"},
           {"  hosts: [a.com]\n  tcp: [{route: [{destination: {host: a, port: {number: "
            "70000}}}]}]\n",
            "spec.tcp[0].route[0].destination.port.number"},
       }) {
    absl::StatusOr<ResourceSet> set =
        Parse(absl::StrCat("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                           "metadata: {name: vs, namespace: shop}\nspec:\n",
                           c.spec));
    ASSERT_FALSE(set.ok()) << c.spec;
    EXPECT_THAT(set.status().message(), HasSubstr("VirtualService shop/vs")) << c.spec;
    EXPECT_THAT(set.status().message(), HasSubstr(c.error)) << c.spec;
  }
}

TEST(GatewayResourcesTest, SecretsKeepOnlyCredentialKeysDecoded) {
  const std::string yaml = absl::StrCat(R"(
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: istio-ingress}
type: kubernetes.io/tls
data:
  tls.crt: )",
                                        absl::Base64Escape("CERT PEM"), R"(
  tls.key: )",
                                        absl::Base64Escape("KEY PEM"), R"(
  password: )",
                                        absl::Base64Escape("hunter2"), R"(
---
apiVersion: v1
kind: Secret
metadata: {name: shop-cert-cacert, namespace: istio-ingress}
stringData:
  cacert: "CA PEM"
)");
  absl::StatusOr<ResourceSet> set = Parse(yaml);
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->secrets.size(), 2u);
  EXPECT_EQ(set->secrets[0].type, "kubernetes.io/tls");
  EXPECT_EQ(set->secrets[0].data.at("tls.crt"), "CERT PEM");
  EXPECT_EQ(set->secrets[0].data.at("tls.key"), "KEY PEM");
  EXPECT_EQ(set->secrets[0].data.count("password"), 0u);
  EXPECT_EQ(set->secrets[1].type, "Opaque");
  EXPECT_EQ(set->secrets[1].data.at("cacert"), "CA PEM");

  absl::StatusOr<ResourceSet> bad = Parse(
      "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: n}\ndata:\n  tls.crt: "
      "\"@@@\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("Secret n/s: data[tls.crt]: is not base64"));

  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(*set, {});
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  ASSERT_NE((*snapshot)->FindSecret("istio-ingress", "shop-cert"), nullptr);
  EXPECT_EQ((*snapshot)->FindSecret("default", "shop-cert"), nullptr);
}

TEST(GatewayResourcesTest, ASnapshotRefusesTwoGatewaysOfOneName) {
  absl::StatusOr<ResourceSet> set = Parse(absl::StrCat(kGateway, "---", kGateway));
  ASSERT_TRUE(set.ok()) << set.status();
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = Snapshot::Build(*set, {});
  ASSERT_FALSE(snapshot.ok());
  EXPECT_THAT(snapshot.status().message(),
              HasSubstr("Gateway istio-ingress/public is defined twice"));
}

TEST(GatewayHostsTest, OverlapAndSubsetFollowIstiosHostNames) {
  EXPECT_TRUE(HostsOverlap("a.example.com", "a.example.com"));
  EXPECT_FALSE(HostsOverlap("a.example.com", "b.example.com"));
  EXPECT_TRUE(HostsOverlap("*.example.com", "a.example.com"));
  EXPECT_TRUE(HostsOverlap("a.example.com", "*.example.com"));
  EXPECT_TRUE(HostsOverlap("*.example.com", "*.b.example.com"));
  EXPECT_FALSE(HostsOverlap("*.example.com", "example.com"));
  EXPECT_TRUE(HostsOverlap("*", "anything.com"));
  EXPECT_TRUE(HostSubsetOf("a.example.com", "*.example.com"));
  EXPECT_FALSE(HostSubsetOf("*.example.com", "a.example.com"));
  EXPECT_TRUE(HostSubsetOf("*.b.example.com", "*.example.com"));
  EXPECT_FALSE(HostSubsetOf("*.example.com", "*.b.example.com"));
  EXPECT_TRUE(HostSubsetOf("*.example.com", "*"));
}

TEST(GatewayHostsTest, SniRanksExactThenLongestWildcardThenCatchAll) {
  EXPECT_FALSE(SniMatchRank("a.example.com", "b.example.com").has_value());
  EXPECT_FALSE(SniMatchRank("*.example.com", "example.com").has_value());
  EXPECT_FALSE(SniMatchRank("a.example.com", "").has_value());
  EXPECT_EQ(SniMatchRank("*", ""), 0u);
  const auto exact = SniMatchRank("a.b.example.com", "A.B.Example.COM");
  const auto long_wildcard = SniMatchRank("*.b.example.com", "a.b.example.com");
  const auto short_wildcard = SniMatchRank("*.example.com", "a.b.example.com");
  const auto catch_all = SniMatchRank("*", "a.b.example.com");
  ASSERT_TRUE(exact && long_wildcard && short_wildcard && catch_all);
  EXPECT_GT(*exact, *long_wildcard);
  EXPECT_GT(*long_wildcard, *short_wildcard);
  EXPECT_GT(*short_wildcard, *catch_all);
}

TEST(GatewayHostsTest, ServerHostsAndGatewayNamesResolveAsIstioMergesThem) {
  EXPECT_EQ(ParseServerHost("a.com", "edge").ns, "*");
  EXPECT_EQ(ParseServerHost("./a.com", "edge").ns, "edge");
  EXPECT_EQ(ParseServerHost("./a.com", "edge").host, "a.com");
  EXPECT_EQ(ParseServerHost("*/a.com", "edge").ns, "*");
  EXPECT_EQ(ParseServerHost("shop/*", "edge").ns, "shop");
  EXPECT_EQ(ParseServerHost("shop/*", "edge").host, "*");
  EXPECT_EQ(ResolveGatewayName("gw", "shop"), "shop/gw");
  EXPECT_EQ(ResolveGatewayName("edge/gw", "shop"), "edge/gw");
  EXPECT_EQ(ResolveGatewayName("gw.edge.svc.cluster.local", "shop"), "edge/gw");
  EXPECT_EQ(ResolveGatewayName("mesh", "shop"), "mesh");
}

}  // namespace
}  // namespace nodeward::policy
