// Over 600 lines on purpose: one case per view nodewardctl prints, each from a protobuf built
// in the test; the cases are independent and read top to bottom.
#include "agent/ctl/format.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/admin/admin.grpc.pb.h"
#include "agent/ctl/commands.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace nodeward::ctl {
namespace {

namespace v1 = admin::v1;
using ::testing::HasSubstr;
using ::testing::Not;

const absl::Time kNow = absl::FromUnixSeconds(1795000000);  // 2026-11-17T...

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// ---- tables and units

TEST(Table, AlignsColumnsFromContent) {
  Table table({"name", "ips", "reason"});
  table.AddRow({"web", "10.241.1.2", "namespace label"});
  table.AddRow({"a-longer-name", "", "x"});
  table.AddRow({"short"});
  EXPECT_EQ(table.Render(),
            "NAME           IPS         REASON\n"
            "web            10.241.1.2  namespace label\n"
            "a-longer-name  -           x\n"
            "short          -           -\n");
}

TEST(Table, NoTrailingBlanksAndWidthCountsCodePoints) {
  Table table({"A", "B"});
  table.AddRow({"ab:cd…", "1"});
  table.AddRow({"abcdefg", ""});
  for (const std::string& line : Lines(table.Render())) {
    EXPECT_NE(line.back(), ' ') << line;
  }
  EXPECT_EQ(table.Render(), "A        B\nab:cd…   1\nabcdefg  -\n");
}

TEST(Table, HeaderOnlyWhenEmpty) { EXPECT_EQ(Table({"a", "bb"}).Render(), "A  BB\n"); }

TEST(Units, Durations) {
  EXPECT_EQ(HumanDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(900)), "0s");
  EXPECT_EQ(HumanDuration(absl::Seconds(42)), "42s");
  EXPECT_EQ(HumanDuration(absl::Seconds(192)), "3m12s");
  EXPECT_EQ(HumanDuration(absl::Hours(11) + absl::Minutes(58) + absl::Seconds(59)), "11h58m");
  EXPECT_EQ(HumanDuration(absl::Hours(51)), "2d3h");
  EXPECT_EQ(HumanDuration(absl::Hours(24 * 15 + 5)), "15d");
  EXPECT_EQ(HumanDuration(-absl::Seconds(75)), "-1m15s");
  EXPECT_EQ(HumanSeconds(192.7), "3m12s");
}

TEST(Units, Bytes) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1024), "1.0 KiB");
  EXPECT_EQ(HumanBytes(1229), "1.2 KiB");
  EXPECT_EQ(HumanBytes(1024 * 1024 - 1), "1.0 MiB");
  EXPECT_EQ(HumanBytes(5ull * 1024 * 1024 * 1024 + 1), "5.0 GiB");
  EXPECT_EQ(HumanBytes(3ull << 40), "3.0 TiB");
}

TEST(Units, DurationUntilAndFingerprint) {
  EXPECT_EQ(DurationUntil(Rfc3339(kNow + absl::Hours(11) + absl::Minutes(58)), kNow), "11h58m");
  EXPECT_EQ(DurationUntil(Rfc3339(kNow - absl::Seconds(30)), kNow), "-30s");
  EXPECT_EQ(DurationUntil("", kNow), "");
  EXPECT_EQ(DurationUntil("soon", kNow), "soon");
  EXPECT_EQ(ShortFingerprint("AA:BB:CC:DD:EE:FF:00:11:22:33"), "AA:BB:CC:DD:EE:FF:00:11…");
  EXPECT_EQ(ShortFingerprint("0123456789abcdef0123"), "0123456789abcdef…");
  EXPECT_EQ(ShortFingerprint("abcd"), "abcd");
}

TEST(Output, Formats) {
  EXPECT_EQ(*ParseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_EQ(*ParseOutputFormat("yaml"), OutputFormat::kYaml);
  EXPECT_EQ(*ParseOutputFormat("table"), OutputFormat::kTable);
  EXPECT_FALSE(ParseOutputFormat("xml").ok());
}

// ---- hand-built responses

v1::ListWorkloadsResponse Workloads() {
  v1::ListWorkloadsResponse r;
  r.set_node_name("node1");
  v1::Workload* web = r.add_workloads();
  web->set_namespace_("frontend");
  web->set_name("web");
  web->set_service_account("web");
  web->set_spiffe_id("spiffe://cluster.local/ns/frontend/sa/web");
  web->add_ips("10.241.1.2");
  web->set_netns_cookie(4096);
  web->add_listeners("127.0.0.1:15001 outbound");
  web->add_listeners("0.0.0.0:15008 tunnel");
  web->set_enrollment_reason("namespace frontend: nodeward.io/dataplane-mode=enabled");
  web->set_enrolled_by("cni");
  v1::Workload* batch = r.add_workloads();
  batch->set_namespace_("frontend");
  batch->set_name("batch");
  batch->set_service_account("batch");
  batch->add_ips("10.241.1.4");
  batch->add_ips("fd00::4");
  return r;
}

TEST(Render, Workloads) {
  EXPECT_EQ(RenderWorkloads(Workloads()),
            "NAMESPACE  NAME   SERVICE-ACCOUNT  ENROLLED-BY  IPS                 NETNS-COOKIE  "
            "LISTENERS                                      REASON\n"
            "frontend   batch  batch            -            10.241.1.4,fd00::4  -             -"
            "                                              -\n"
            "frontend   web    web              cni          10.241.1.2          4096          "
            "127.0.0.1:15001/outbound,0.0.0.0:15008/tunnel  namespace frontend: "
            "nodeward.io/dataplane-mode=enabled\n");
}

TEST(Render, WorkloadsThatShouldBeEnrolledAndAreNot) {
  v1::ListWorkloadsResponse r = Workloads();
  v1::NotEnrolledWorkload* db = r.add_not_enrolled();
  db->set_namespace_("backend");
  db->set_name("db");
  db->set_uid("u-db");
  db->set_since("2026-01-02T03:04:05Z");
  db->set_attempts(3);
  db->set_reason("enrolling failed: netns vanished");
  EXPECT_THAT(RenderWorkloads(r),
              HasSubstr("\nSHOULD BE ENROLLED, ARE NOT\n"
                        "NAMESPACE  NAME  UID   SINCE                 ATTEMPTS  WHY\n"
                        "backend    db    u-db  2026-01-02T03:04:05Z  3         enrolling failed: "
                        "netns vanished\n"));
}

TEST(Render, WorkloadsJsonKeepsProtoNamesAndPrintsEveryPrimitive) {
  absl::StatusOr<std::string> json = ToJson(Workloads());
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"node_name\": \"node1\""));
  EXPECT_THAT(*json, HasSubstr("\"service_account\": \"web\""));
  EXPECT_THAT(*json, HasSubstr("\"netns_cookie\": \"4096\""));  // 64-bit: a string
  EXPECT_THAT(*json, HasSubstr("\"netns_path\": \"\""));        // empty, still printed
  EXPECT_THAT(*json, HasSubstr("\"enrollment_reason\""));
  EXPECT_THAT(*json, Not(HasSubstr("serviceAccount")));
  // It is JSON: a YAML 1.2 reader takes it.
  YAML::Node node = YAML::Load(*json);
  EXPECT_EQ(node["workloads"][0]["name"].as<std::string>(), "web");
  EXPECT_EQ(node["workloads"][1]["ips"][1].as<std::string>(), "fd00::4");
}

TEST(Render, WorkloadsYaml) {
  absl::StatusOr<std::string> yaml = ToYaml(Workloads());
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("node_name: node1\n"));
  EXPECT_THAT(*yaml, HasSubstr("netns_cookie: \"4096\""));  // stays a string
  EXPECT_THAT(*yaml, HasSubstr("netns_path: \"\""));
  EXPECT_THAT(*yaml, Not(HasSubstr("{\"")));  // block style, not JSON again
  YAML::Node node = YAML::Load(*yaml);
  EXPECT_EQ(node["workloads"][0]["spiffe_id"].as<std::string>(),
            "spiffe://cluster.local/ns/frontend/sa/web");
  EXPECT_EQ(node["workloads"][0]["netns_cookie"].Tag(), "!");
  EXPECT_EQ(node["workloads"][0]["listeners"].size(), 2u);
}

TEST(Render, YamlQuotesWhatWouldChangeType) {
  absl::StatusOr<std::string> yaml =
      JsonToYaml(R"({"a": "true", "b": true, "c": "12", "d": 12, "e": "null", "f": [], "g": {}})");
  ASSERT_TRUE(yaml.ok());
  EXPECT_THAT(*yaml, HasSubstr("a: \"true\"\n"));
  EXPECT_THAT(*yaml, HasSubstr("b: true\n"));
  EXPECT_THAT(*yaml, HasSubstr("c: \"12\"\n"));
  EXPECT_THAT(*yaml, HasSubstr("d: 12\n"));
  EXPECT_THAT(*yaml, HasSubstr("e: \"null\"\n"));
  EXPECT_THAT(*yaml, HasSubstr("f: []\n"));
  EXPECT_THAT(*yaml, HasSubstr("g: {}"));
}

v1::ListCertificatesResponse Certificates() {
  v1::ListCertificatesResponse r;
  v1::Certificate* c = r.add_certificates();
  c->set_spiffe_id("spiffe://cluster.local/ns/frontend/sa/web");
  c->set_state("ready");
  c->set_workloads(1);
  c->set_serial("1f2e");
  c->set_not_before(Rfc3339(kNow - absl::Minutes(2)));
  c->set_not_after(Rfc3339(kNow + absl::Hours(24)));
  c->set_next_refresh(Rfc3339(kNow + absl::Hours(11) + absl::Minutes(58) + absl::Seconds(10)));
  v1::Certificate* q = r.add_certificates();
  q->set_spiffe_id("spiffe://cluster.local/ns/frontend/sa/batch");
  q->set_state("refused");
  q->set_last_error("identity not allowed");
  v1::TrustRoot* root = r.add_trust_roots();
  root->set_subject("O=nodeward,CN=root");
  root->set_serial("01");
  root->set_not_after("2036-01-01T00:00:00Z");
  root->set_sha256_fingerprint("AA:BB:CC:DD:EE:FF:00:11:22:33:44");
  r.set_sds_socket("/run/sds.sock");
  r.set_rejected_secrets(2);
  return r;
}

TEST(Render, Certificates) {
  const std::string text = RenderCertificates(Certificates(), kNow);
  std::vector<std::string> lines = Lines(text);
  ASSERT_GE(lines.size(), 7u) << text;
  EXPECT_EQ(lines[0],
            "SPIFFE-ID                                    STATE    SERIAL  NOT-BEFORE"
            "            NOT-AFTER             REFRESH-IN  LAST-ERROR");
  EXPECT_THAT(lines[1], HasSubstr("spiffe://cluster.local/ns/frontend/sa/web    ready    1f2e"));
  EXPECT_THAT(lines[1], HasSubstr("  11h58m      -"));
  EXPECT_THAT(lines[2], HasSubstr("refused  -       -"));
  EXPECT_THAT(lines[2], HasSubstr("identity not allowed"));
  EXPECT_EQ(lines[3], "TRUST ROOTS");
  EXPECT_EQ(lines[4], "SUBJECT             SERIAL  NOT-AFTER             FINGERPRINT");
  EXPECT_EQ(lines[5], "O=nodeward,CN=root  01      2036-01-01T00:00:00Z  AA:BB:CC:DD:EE:FF:00:11…");
  EXPECT_THAT(text, HasSubstr("SDS-SOCKET        /run/sds.sock\nREJECTED-SECRETS  2\n"));

  v1::ListCertificatesResponse none;
  none.set_trust_bundle_error("no bundle pushed yet");
  EXPECT_THAT(RenderCertificates(none, kNow),
              HasSubstr("TRUST ROOTS\nnone: no bundle pushed yet\n"));
  absl::StatusOr<std::string> json = ToJson(Certificates());
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("\"next_refresh\""));
  EXPECT_THAT(*json, HasSubstr("\"sha256_fingerprint\""));
  EXPECT_THAT(*json, HasSubstr("\"rejected_secrets\": \"2\""));
}

v1::ExplainPolicyResponse Explained() {
  v1::ExplainPolicyResponse r;
  r.set_action("HBONE");
  r.set_reason("destination enrolled; effective mode STRICT");
  r.set_address("10.241.2.2");
  r.set_port(8080);
  r.set_destination_workload("backend/api");
  r.set_service("api.backend.svc.cluster.local");
  r.set_expected_peer_identity("spiffe://cluster.local/ns/backend/sa/api");
  r.mutable_mtls()->set_mesh("PERMISSIVE");
  r.mutable_mtls()->set_namespace_("STRICT");
  r.mutable_mtls()->set_workload("UNSET");
  r.mutable_mtls()->set_port("UNSET");
  r.mutable_mtls()->set_effective("STRICT");
  r.mutable_trace()->add_steps("source frontend/web enrolled");
  r.mutable_trace()->add_steps("destination 10.241.2.2 is backend/api");
  r.mutable_trace()->add_warnings("DestinationRule api-tls ignored: mesh mTLS wins");
  r.mutable_trace()->add_deciding("PeerAuthentication istio-system/default");
  r.mutable_trace()->add_deciding("PeerAuthentication backend/default");
  r.set_config_generation(7);
  return r;
}

TEST(Render, ExplainOutbound) {
  v1::ExplainPolicyRequest request;
  request.mutable_outbound()->set_from_pod("frontend/web");
  request.mutable_outbound()->set_to("10.241.2.2:8080");
  EXPECT_EQ(RenderExplain(request, Explained()),
            "ACTION                  HBONE\n"
            "REASON                  destination enrolled; effective mode STRICT\n"
            "FROM                    frontend/web\n"
            "DESTINATION             10.241.2.2:8080\n"
            "DESTINATION-WORKLOAD    backend/api\n"
            "SERVICE                 api.backend.svc.cluster.local\n"
            "EXPECTED-PEER-IDENTITY  spiffe://cluster.local/ns/backend/sa/api\n"
            "MTLS-MODE               mesh=PERMISSIVE namespace=STRICT workload=UNSET port=UNSET "
            "effective=STRICT\n"
            "DECIDED-BY              PeerAuthentication istio-system/default\n"
            "                        PeerAuthentication backend/default\n"
            "CONFIG-GENERATION       7\n"
            "\nTRACE\n"
            "  1. source frontend/web enrolled\n"
            "  2. destination 10.241.2.2 is backend/api\n"
            "\nWARNINGS\n"
            "  ! DestinationRule api-tls ignored: mesh mTLS wins\n");
  absl::StatusOr<std::string> json = ToJson(Explained());
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(
      *json, HasSubstr("\"expected_peer_identity\": \"spiffe://cluster.local/ns/backend/sa/api\""));
  EXPECT_THAT(*json, HasSubstr("\"origination\": \"\""));
}

TEST(Render, ExplainInbound) {
  v1::ExplainPolicyRequest request;
  request.mutable_inbound()->set_pod("backend/api");
  request.mutable_inbound()->set_port(8080);
  request.mutable_inbound()->set_plaintext(true);
  v1::ExplainPolicyResponse r;
  r.set_action("REFUSE");
  r.set_reason("STRICT refuses plaintext");
  const std::string text = RenderExplain(request, r);
  EXPECT_THAT(text, HasSubstr("ACTION             REFUSE\n"));
  EXPECT_THAT(text, HasSubstr("POD                backend/api:8080\n"));
  EXPECT_THAT(text, HasSubstr("ARRIVING           plaintext\n"));
  EXPECT_THAT(text, HasSubstr("MTLS-MODE          -\n"));
  EXPECT_THAT(text, Not(HasSubstr("TRACE")));
  EXPECT_THAT(text, HasSubstr("SOURCE             unknown\n"));
  EXPECT_THAT(text, HasSubstr("AUTHORIZATION      -\n"));
}

TEST(Render, ExplainInboundAuthorization) {
  v1::ExplainPolicyRequest request;
  request.mutable_inbound()->set_pod("backend/api");
  request.mutable_inbound()->set_port(8080);
  request.mutable_inbound()->set_peer_identity("spiffe://cluster.local/ns/other/sa/x");
  request.mutable_inbound()->set_source_ip("10.241.1.2");
  request.mutable_inbound()->set_sni("");
  v1::ExplainPolicyResponse r;
  r.set_action("REFUSE");
  r.set_reason("denied by AuthorizationPolicy backend/deny-other rule 0");
  r.set_reason_code("authorization");
  r.set_address("10.241.2.2");
  r.mutable_authorization()->set_outcome("DENIED");
  r.mutable_authorization()->set_policy("AuthorizationPolicy backend/deny-other");
  r.mutable_authorization()->add_audit("AuthorizationPolicy backend/audit-all");
  const std::string text = RenderExplain(request, r);
  EXPECT_THAT(text, HasSubstr("REASON-CODE        authorization\n"));
  EXPECT_THAT(text, HasSubstr("SOURCE             10.241.1.2\n"));
  EXPECT_THAT(text, HasSubstr("DESTINATION        10.241.2.2\n"));
  EXPECT_THAT(text, HasSubstr("SNI                (none)\n"));
  EXPECT_THAT(text,
              HasSubstr("AUTHORIZATION      DENIED by AuthorizationPolicy backend/deny-other\n"));
  EXPECT_THAT(text, HasSubstr("AUDITED-BY         AuthorizationPolicy backend/audit-all\n"));
}

TEST(Render, ExplainOutboundListsEveryAcceptedIdentity) {
  v1::ExplainPolicyRequest request;
  request.mutable_outbound()->set_from_pod("frontend/web");
  request.mutable_outbound()->set_to("10.96.0.5:80");
  v1::ExplainPolicyResponse r;
  r.set_action("HBONE");
  r.set_expected_peer_identity("spiffe://cluster.local/ns/backend/sa/a");
  r.add_expected_peer_identities("spiffe://cluster.local/ns/backend/sa/a");
  r.add_expected_peer_identities("spiffe://cluster.local/ns/backend/sa/b");
  const std::string text = RenderExplain(request, r);
  EXPECT_THAT(text, HasSubstr("EXPECTED-PEER-IDENTITY  spiffe://cluster.local/ns/backend/sa/a\n"
                              "                        spiffe://cluster.local/ns/backend/sa/b\n"));
}

TEST(Render, Connections) {
  v1::ListConnectionsResponse r;
  v1::Connection* c = r.add_connections();
  c->set_direction("outbound");
  c->set_source_workload("frontend/web");
  c->set_source_address("10.241.1.2:40000");
  c->set_source_principal("spiffe://cluster.local/ns/frontend/sa/web");
  c->set_destination_workload("backend/api");
  c->set_destination_address("10.241.2.2:8080");
  c->set_destination_principal("spiffe://cluster.local/ns/backend/sa/api");
  c->set_mode("hbone_mtls");
  c->set_sent_bytes(1229);
  c->set_received_bytes(12);
  c->set_age_seconds(192.4);
  v1::Connection* p = r.add_connections();
  p->set_direction("inbound");
  p->set_source_address("10.241.1.3:5555");
  p->set_destination_address("10.241.1.2:8080");
  p->set_mode("plaintext");
  EXPECT_EQ(RenderConnections(r),
            "DIRECTION  SOURCE           SOURCE-PRINCIPAL                           DESTINATION"
            "                  DESTINATION-PRINCIPAL                     MODE        SENT     "
            "RECEIVED  AGE\n"
            "outbound   frontend/web     spiffe://cluster.local/ns/frontend/sa/web  "
            "backend/api@10.241.2.2:8080  spiffe://cluster.local/ns/backend/sa/api  hbone_mtls  "
            "1.2 KiB  12 B      3m12s\n"
            "inbound    10.241.1.3:5555  -                                          "
            "10.241.1.2:8080              -                                         plaintext   "
            "0 B      0 B       0s\n");
}

TEST(Render, Tunnels) {
  v1::ListTunnelsResponse r;
  v1::Tunnel* t = r.add_tunnels();
  t->set_role("client");
  t->set_pod("frontend/web");
  t->set_local_identity("spiffe://cluster.local/ns/frontend/sa/web");
  t->set_peer_identity("spiffe://cluster.local/ns/backend/sa/api");
  t->set_peer_address("10.241.2.2:15008");
  t->set_established(true);
  t->set_active_streams(1);
  t->set_streams_opened(3);
  t->set_age_seconds(61);
  v1::Tunnel* d = r.add_tunnels();
  d->set_role("server");
  d->set_draining(true);
  std::vector<std::string> lines = Lines(RenderTunnels(r));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            "ROLE    POD           LOCAL-IDENTITY                             PEER-IDENTITY"
            "                             PEER-ADDRESS      STREAMS  OPENED  AGE   STATE");
  EXPECT_EQ(lines[1],
            "client  frontend/web  spiffe://cluster.local/ns/frontend/sa/web  "
            "spiffe://cluster.local/ns/backend/sa/api  10.241.2.2:15008  1        3       1m1s  "
            "established");
  EXPECT_THAT(lines[2], HasSubstr("0        0       0s    draining"));
}

TEST(Render, Bpf) {
  v1::DumpBpfResponse r;
  r.set_pin_path("/sys/fs/bpf/nodeward");
  v1::BpfEnrolledNetns* n = r.add_enrolled();
  n->set_netns_cookie(4096);
  n->set_pod_id(1);
  n->set_pod("frontend/web");
  n->set_sk_lookup_linked(true);
  v1::BpfPodAddress* a = r.add_pod_addresses();
  a->set_address("10.241.1.2");
  a->set_netns_cookie(4096);
  v1::BpfInboundListener* l = r.add_inbound_listeners();
  l->set_address("10.241.1.2");
  l->set_slot("tunnel");
  l->set_present(true);
  (*r.mutable_counters())["redirected"] = 10;
  (*r.mutable_counters())["bypassed"] = 3;
  r.add_attached("cgroup/connect4 on /sys/fs/cgroup");
  const std::string text = RenderBpf(r);
  EXPECT_THAT(text, HasSubstr("PIN-PATH                       /sys/fs/bpf/nodeward\n"));
  EXPECT_THAT(text, HasSubstr("ENROLLED NETNS\nNETNS-COOKIE  POD-ID  POD           SK-LOOKUP\n"
                              "4096          1       frontend/web  linked\n"));
  EXPECT_THAT(text, HasSubstr("POD ADDRESSES\nADDRESS     NETNS-COOKIE\n10.241.1.2  4096\n"));
  EXPECT_THAT(text, HasSubstr("INBOUND LISTENERS\nADDRESS     SLOT    PRESENT\n"
                              "10.241.1.2  tunnel  yes\n"));
  EXPECT_THAT(text, HasSubstr("COUNTERS\nCOUNTER     VALUE\nbypassed    3\nredirected  10\n"));
  EXPECT_THAT(text, HasSubstr("ATTACHED\n  cgroup/connect4 on /sys/fs/cgroup\n"));
  absl::StatusOr<std::string> json = ToJson(r);
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("\"sk_lookup_linked\": true"));
  EXPECT_THAT(*json, HasSubstr("\"pending_original_destinations\": \"0\""));
  // Map entries sorted by key, whatever the map's own order.
  for (int i = 0; i < 20; ++i) (*r.mutable_counters())[absl::StrCat("c", 99 - i)] = i;
  json = ToJson(r);
  ASSERT_TRUE(json.ok());
  EXPECT_LT(json->find("\"bypassed\""), json->find("\"c80\""));
  EXPECT_LT(json->find("\"c80\""), json->find("\"c99\""));
  EXPECT_LT(json->find("\"c99\""), json->find("\"redirected\""));
}

v1::DumpConfigResponse Config() {
  v1::DumpConfigResponse r;
  r.set_source("directory /etc/nodeward/config");
  r.set_generation(3);
  r.set_last_success("2026-11-23T12:00:00Z");
  v1::ConfigObject* pa = r.add_objects();
  pa->set_kind("PeerAuthentication");
  pa->set_namespace_("backend");
  pa->set_name("default");
  pa->set_origin("peer-authentication.yaml:12");
  (*pa->mutable_fields())["mtls"] = "STRICT";
  (*pa->mutable_fields())["selector"] = "";
  v1::ConfigObject* ns = r.add_objects();
  ns->set_kind("Namespace");
  ns->set_name("backend");
  ns->set_origin("namespaces.yaml:8");
  return r;
}

TEST(Render, Config) {
  EXPECT_EQ(RenderConfig(Config()),
            "SOURCE        directory /etc/nodeward/config\n"
            "GENERATION    3\n"
            "LAST-SUCCESS  2026-11-23T12:00:00Z\n"
            "LAST-ERROR    -\n"
            "\n"
            "KIND                NAMESPACE  NAME     ORIGIN                       FIELDS\n"
            "Namespace           -          backend  namespaces.yaml:8            -\n"
            "PeerAuthentication  backend    default  peer-authentication.yaml:12  mtls=STRICT "
            "selector=\n");
  absl::StatusOr<std::string> yaml = ToYaml(Config());
  ASSERT_TRUE(yaml.ok());
  YAML::Node node = YAML::Load(*yaml);
  EXPECT_EQ(node["objects"][0]["fields"]["mtls"].as<std::string>(), "STRICT");
  EXPECT_EQ(node["generation"].as<std::string>(), "3");
}

// ---- argument validation

int UsageCode(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  return Main(args, out, err);
}

TEST(Arguments, CommandsAndGlobalFlags) {
  absl::StatusOr<Invocation> i =
      ParseArguments({"-o", "json", "workloads", "--socket=/tmp/a.sock", "--timeout=2s"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->command, "workloads");
  EXPECT_EQ(i->output, OutputFormat::kJson);
  EXPECT_EQ(i->socket, "/tmp/a.sock");
  EXPECT_EQ(i->timeout, absl::Seconds(2));
  EXPECT_EQ(i->Target(), "unix:/tmp/a.sock");

  i = ParseArguments({"certs"});
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->socket, kDefaultSocket);  // defaults come back after an earlier parse
  EXPECT_EQ(i->output, OutputFormat::kTable);
  EXPECT_EQ(i->timeout, absl::Seconds(5));

  i = ParseArguments({"certificates", "--address", "127.0.0.1:15000", "--output=yaml"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->command, "certs");
  EXPECT_EQ(i->Target(), "127.0.0.1:15000");
  EXPECT_EQ(i->output, OutputFormat::kYaml);

  i = ParseArguments({"config", "dump", "-ojson"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->command, "config dump");
  EXPECT_EQ(i->output, OutputFormat::kJson);

  i = ParseArguments({"drain", "--grace=1500ms"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->grace_seconds, 2u);
  i = ParseArguments({"log-level", "debug"});
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->level, "debug");
}

TEST(Arguments, Help) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"workloads", "--help"},
                                             {"help", "policy", "explain"},
                                             {"policy", "explain", "-h"},
                                             {"policy", "--help"}}) {
    absl::StatusOr<Invocation> i = ParseArguments(args);
    ASSERT_TRUE(i.ok()) << absl::StrJoin(args, " ");
    EXPECT_TRUE(i->help);
  }
  std::ostringstream out, err;
  EXPECT_EQ(Main({"policy", "explain", "--help"}, out, err), kExitOk);
  EXPECT_THAT(out.str(), HasSubstr("Usage: nodewardctl policy explain"));
  EXPECT_THAT(out.str(), HasSubstr("--peer=VALUE"));
  EXPECT_THAT(out.str(), HasSubstr("--socket=PATH"));
  std::ostringstream out2;
  EXPECT_EQ(Main({"--help"}, out2, err), kExitOk);
  for (const char* command : {"workloads", "certs", "policy explain", "connections", "tunnels",
                              "bpf", "config dump", "log-level", "drain", "version"}) {
    EXPECT_THAT(out2.str(), HasSubstr(command));
  }
  std::ostringstream out3;
  EXPECT_EQ(Main({"version"}, out3, err), kExitOk);
  EXPECT_THAT(out3.str(), HasSubstr("nodewardctl "));
}

TEST(Arguments, ExplainQuestions) {
  absl::StatusOr<Invocation> i =
      ParseArguments({"policy", "explain", "--from", "frontend/web", "--to", "10.241.2.2:8080"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->explain.outbound().from_pod(), "frontend/web");
  EXPECT_EQ(i->explain.outbound().to(), "10.241.2.2:8080");

  i = ParseArguments({"policy", "explain", "--to=[fd00::2]:443", "--from=a/b"});
  ASSERT_TRUE(i.ok()) << i.status();

  i = ParseArguments({"policy", "explain", "--inbound=backend/api:8080", "--plaintext"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->explain.inbound().pod(), "backend/api");
  EXPECT_EQ(i->explain.inbound().port(), 8080u);
  EXPECT_TRUE(i->explain.inbound().plaintext());

  i = ParseArguments({"policy", "explain", "--inbound=backend/api:8080",
                      "--peer=spiffe://cluster.local/ns/frontend/sa/web"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_FALSE(i->explain.inbound().plaintext());  // reset from the previous parse
  EXPECT_EQ(i->explain.inbound().peer_identity(), "spiffe://cluster.local/ns/frontend/sa/web");
  EXPECT_TRUE(i->explain.inbound().source_ip().empty());
  EXPECT_FALSE(i->explain.inbound().has_sni());

  i = ParseArguments({"policy", "explain", "--inbound=backend/api:8080", "--source-ip=10.1.2.3",
                      "--destination-ip=fd00::2", "--sni=api.example.com"});
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->explain.inbound().source_ip(), "10.1.2.3");
  EXPECT_EQ(i->explain.inbound().destination_ip(), "fd00::2");
  ASSERT_TRUE(i->explain.inbound().has_sni());
  EXPECT_EQ(i->explain.inbound().sni(), "api.example.com");
}

TEST(Arguments, UsageErrorsExitTwoBeforeAnyCall) {
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"frobnicate"},
      {"policy"},
      {"policy", "explain"},
      {"policy", "explain", "--from=frontend/web", "--to=10.241.2.2"},  // no port
      {"policy", "explain", "--from=frontend/web", "--to=10.241.2.2:0"},
      {"policy", "explain", "--from=frontend/web", "--to=10.241.2.2:70000"},
      {"policy", "explain", "--from=frontend/web", "--to=api:8080"},  // not an IP
      {"policy", "explain", "--from=web", "--to=10.241.2.2:8080"},    // no namespace
      {"policy", "explain", "--from=frontend/web"},
      {"policy", "explain", "--from=a/b", "--to=10.0.0.1:1", "--inbound=a/b:1"},
      {"policy", "explain", "--from=a/b", "--to=10.0.0.1:1", "--plaintext"},
      {"policy", "explain", "--inbound=backend/api"},
      {"policy", "explain", "--inbound=backend/api:x"},
      {"policy", "explain", "--inbound=a/b:1", "--plaintext", "--peer=spiffe://x/y"},
      {"policy", "explain", "--inbound=a/b:1", "--peer=frontend/web"},
      {"policy", "explain", "--inbound=a/b:08080"},  // a port is written without leading zeros
      {"policy", "explain", "--inbound=a/b:+80"},
      {"policy", "explain", "--from=frontend/web", "--to=10.241.2.2:08080"},
      {"policy", "explain", "--inbound=a/b:1", "--source-ip=10.1.2"},
      {"policy", "explain", "--inbound=a/b:1", "--destination-ip=pod"},
      {"policy", "explain", "--from=a/b", "--to=10.0.0.1:1", "--source-ip=10.0.0.2"},
      {"workloads", "--bogus"},
      {"workloads", "--from=a/b"},  // another command's flag
      {"workloads", "extra"},
      {"workloads", "-o", "xml"},
      {"workloads", "--timeout=soon"},
      {"workloads", "--timeout=0s"},
      {"workloads", "--socket=/a", "--address=127.0.0.1:1"},
      {"workloads", "--address=localhost"},
      {"workloads", "--socket"},  // value missing
      {"log-level"},
      {"log-level", "loud"},
      {"log-level", "info", "debug"},
      {"drain", "--grace=-1s"},
      {"help", "frobnicate"},
  };
  for (const auto& args : bad) {
    EXPECT_FALSE(ParseArguments(args).ok()) << absl::StrJoin(args, " ");
    // The default socket does not exist here: reaching a call would exit 3, not 2.
    EXPECT_EQ(UsageCode(args), kExitUsage) << absl::StrJoin(args, " ");
  }
  std::ostringstream out, err;
  EXPECT_EQ(Main({"policy", "explain", "--from=frontend/web", "--to=10.241.2.2"}, out, err),
            kExitUsage);
  EXPECT_THAT(err.str(), HasSubstr("--to=10.241.2.2"));
  EXPECT_THAT(err.str(), HasSubstr("port"));
  EXPECT_TRUE(out.str().empty());
}

// ---- against a real gRPC server with canned answers

class FakeAdmin final : public v1::Admin::Service {
 public:
  grpc::Status ListWorkloads(grpc::ServerContext*, const v1::ListWorkloadsRequest*,
                             v1::ListWorkloadsResponse* response) override {
    *response = Workloads();
    return grpc::Status::OK;
  }
  grpc::Status ListCertificates(grpc::ServerContext*, const v1::ListCertificatesRequest*,
                                v1::ListCertificatesResponse* response) override {
    *response = Certificates();
    return grpc::Status::OK;
  }
  grpc::Status ExplainPolicy(grpc::ServerContext*, const v1::ExplainPolicyRequest* request,
                             v1::ExplainPolicyResponse* response) override {
    if (request->has_outbound() && request->outbound().from_pod() != "frontend/web") {
      return grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("pod ", request->outbound().from_pod(), " is not enrolled on this node"));
    }
    last_explain = *request;
    *response = Explained();
    return grpc::Status::OK;
  }
  grpc::Status DumpConfig(grpc::ServerContext*, const v1::DumpConfigRequest*,
                          v1::DumpConfigResponse* response) override {
    *response = Config();
    return grpc::Status::OK;
  }
  grpc::Status SetLogLevel(grpc::ServerContext*, const v1::SetLogLevelRequest* request,
                           v1::SetLogLevelResponse* response) override {
    response->set_previous("info");
    response->set_level(request->level());
    return grpc::Status::OK;
  }
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                     v1::DrainResponse* response) override {
    last_grace = request->grace_seconds();
    response->set_connections_cut(1);
    return grpc::Status::OK;
  }
  grpc::Status ListTunnels(grpc::ServerContext*, const v1::ListTunnelsRequest*,
                           v1::ListTunnelsResponse*) override {
    // An agent may answer UNAVAILABLE itself: that is an answer (1), not "unreachable" (3).
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "tunnels not started yet");
  }
  // ListConnections and DumpBpf stay unimplemented.

  v1::ExplainPolicyRequest last_explain;
  uint32_t last_grace = 0;
};

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/nodewardctl-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    socket_ = dir_ + "/admin.sock";
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }

  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    args.insert(args.begin(), "--socket=" + socket_);
    return Main(args, out_, err_);
  }

  FakeAdmin service_;
  std::unique_ptr<grpc::Server> server_;
  std::string dir_, socket_;
  std::ostringstream out_, err_;
};

TEST_F(AgentTest, AnswersExitZero) {
  ASSERT_EQ(Run({"workloads"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), RenderWorkloads(Workloads()));
  EXPECT_TRUE(err_.str().empty());

  ASSERT_EQ(Run({"workloads", "-o", "json"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), *ToJson(Workloads()));
  ASSERT_EQ(Run({"config", "dump", "-o", "yaml"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), *ToYaml(Config()));

  ASSERT_EQ(Run({"certs"}), kExitOk) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("spiffe://cluster.local/ns/frontend/sa/web"));
  EXPECT_THAT(out_.str(), HasSubstr("TRUST ROOTS"));

  ASSERT_EQ(Run({"policy", "explain", "--from=frontend/web", "--to=10.241.2.2:8080"}), kExitOk)
      << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("ACTION                  HBONE\n"));
  EXPECT_EQ(service_.last_explain.outbound().to(), "10.241.2.2:8080");

  ASSERT_EQ(Run({"log-level", "debug"}), kExitOk) << err_.str();
  EXPECT_EQ(out_.str(), "log level: info -> debug\n");
  ASSERT_EQ(Run({"drain", "--grace=3s"}), kExitOk) << err_.str();
  EXPECT_EQ(service_.last_grace, 3u);
  EXPECT_EQ(out_.str(), "draining (grace 3s): 1 connection cut\n");
}

TEST_F(AgentTest, AgentErrorsExitOne) {
  EXPECT_EQ(Run({"policy", "explain", "--from=shop/nope", "--to=10.241.2.2:8080"}),
            kExitAgentError);
  EXPECT_THAT(err_.str(), HasSubstr("pod shop/nope is not enrolled on this node"));
  EXPECT_THAT(err_.str(), HasSubstr("NOT_FOUND"));
  EXPECT_TRUE(out_.str().empty());

  EXPECT_EQ(Run({"connections"}), kExitAgentError);  // not implemented by this agent
  EXPECT_THAT(err_.str(), HasSubstr("UNIMPLEMENTED"));
  EXPECT_EQ(Run({"tunnels"}), kExitAgentError);
  EXPECT_THAT(err_.str(), HasSubstr("tunnels not started yet"));
}

TEST_F(AgentTest, NoAgentExitsThree) {
  const std::string missing = dir_ + "/missing/admin.sock";
  std::ostringstream out, err;
  EXPECT_EQ(Main({"workloads", "--socket=" + missing}, out, err), kExitUnreachable);
  EXPECT_THAT(err.str(), HasSubstr("cannot reach the agent at unix:" + missing));
  EXPECT_THAT(err.str(), HasSubstr("is nodeward-agent running on this node?"));
  EXPECT_TRUE(out.str().empty());

  // A socket file nobody listens on any more.
  server_->Shutdown();
  server_.reset();
  const std::string stale = dir_ + "/stale.sock";
  {
    grpc::ServerBuilder builder;
    FakeAdmin other;
    builder.AddListeningPort("unix:" + stale, grpc::InsecureServerCredentials());
    builder.RegisterService(&other);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    ASSERT_NE(server, nullptr);
    server->Shutdown();
  }
  if (!std::filesystem::exists(stale)) {
    // gRPC removed it: make a dead socket file by hand.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", stale.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  std::ostringstream out2, err2;
  EXPECT_EQ(Main({"certs", "--socket=" + stale, "--timeout=2s"}, out2, err2), kExitUnreachable);
  EXPECT_THAT(err2.str(), HasSubstr("cannot reach the agent at unix:" + stale));

  // TCP: nothing listens on this port.
  std::ostringstream out3, err3;
  EXPECT_EQ(Main({"workloads", "--address=127.0.0.1:1", "--timeout=2s"}, out3, err3),
            kExitUnreachable);
  EXPECT_THAT(err3.str(), HasSubstr("cannot reach the agent at 127.0.0.1:1"));
}

}  // namespace
}  // namespace nodeward::ctl
