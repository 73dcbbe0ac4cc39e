#include "sandbox/spec.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/testing/literals.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/resources.h"

namespace nodeward::sandbox {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kTwoNodes[] = R"(
name: t1
nodes: [a, b]
pods:
- {name: web, namespace: front, serviceAccount: web, node: a, ports: [8080], labels: {app: web}}
- {name: api, namespace: back, serviceAccount: api, node: b, ports: [80, 9090]}
- {name: out, namespace: front, node: b, labels: {nodeward.io/dataplane-mode: none}}
config: cfg/
)";

TEST(ParseSandbox, DerivesAddressesAndNames) {
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(kTwoNodes, "/base");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "t1");
  EXPECT_EQ(spec->trust_domain, "cluster.local");
  EXPECT_EQ(spec->config_dir, "/base/cfg");
  ASSERT_EQ(spec->nodes.size(), 2u);
  EXPECT_EQ(spec->nodes[1].address, "10.240.0.2");
  EXPECT_EQ(spec->nodes[1].pod_cidr, "10.241.2.0/24");
  ASSERT_EQ(spec->pods.size(), 3u);
  EXPECT_EQ(spec->pods[0].address, "10.241.1.2");
  EXPECT_EQ(spec->pods[1].address, "10.241.2.2");
  EXPECT_EQ(spec->pods[2].address, "10.241.2.3");
  EXPECT_EQ(spec->pods[2].service_account, "default");
  EXPECT_THAT(spec->pods[1].ports, ElementsAre(80, 9090));
  EXPECT_EQ(NetnsName("t1", "web"), "nws-t1-web");
  EXPECT_EQ(SandboxCgroup("t1"), "/sys/fs/cgroup/unified/nodeward-sandbox-t1");
}

TEST(ParseSandbox, RejectsMistakes) {
  struct Case {
    const char* text;
    const char* error;
  };
  for (const Case& c : {
           Case{"name: Demo\nnodes: [a]", "sandbox name"},
           Case{"name: a-b\nnodes: [a]", "sandbox name"},
           Case{"name: x\nnodes: []", "nodes"},
           Case{"name: x\nnodes: [a, a]", "listed twice"},
           Case{"name: x\nnodes: [fabric]", "reserved"},
           Case{"name: x\nnodes: [a]\nnode: [b]", "unknown key \"node\""},
           Case{"name: x\nnodes: [a]\npods: [{name: p, node: z}]", "not in nodes"},
           Case{"name: x\nnodes: [a]\npods: [{name: a, node: a}]", "also a node name"},
           Case{"name: x\nnodes: [a]\npods: [{name: p, node: a, ports: [15001]}]", "reserved"},
           Case{"name: x\nnodes: [a]\npods: [{name: p, node: a, ports: [http]}]", "not a number"},
           Case{"name: x\nnodes: [a]\npods: [{name: p, node: a, sa: x}]", "unknown key \"sa\""},
           Case{"name: x\nnodes: [a]\npods: [{name: P, node: a}]", "lower-case"},
           Case{"name: x\nnodes: [a\n", "not valid YAML"},
       }) {
    absl::StatusOr<SandboxSpec> spec = ParseSandbox(c.text, "/");
    ASSERT_FALSE(spec.ok()) << c.text;
    EXPECT_THAT(spec.status().message(), HasSubstr(c.error)) << c.text;
  }
}

TEST(DecideEnrollment, NamespaceLabelAndPodOptOut) {
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(kTwoNodes, "/base");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ClusterConfig config;
  config.namespaces["front"] = {{"nodeward.io/dataplane-mode", "enabled"}};
  config.namespaces["back"] = {};
  DecideEnrollment(config, *spec);
  EXPECT_TRUE(spec->pods[0].enrolled);
  EXPECT_FALSE(spec->pods[1].enrolled);  // namespace not labelled
  EXPECT_FALSE(spec->pods[2].enrolled);  // pod opts out

  config.namespaces["back"] = {{"istio.io/dataplane-mode", "ambient"}};
  DecideEnrollment(config, *spec);
  EXPECT_TRUE(spec->pods[1].enrolled);
}

// The generated objects must load with the agents' own parser, with the derived values.
TEST(ParseSandbox, NamedContainerPorts) {
  constexpr char kNamed[] = R"(
name: t2
nodes: [a]
pods:
- name: api
  node: a
  ports: [{port: 8080, name: secure}, 7070, {port: 9090, name: open}]
)";
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(kNamed, "/");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->pods.size(), 1u);
  EXPECT_THAT(spec->pods[0].ports, ElementsAre(8080, 7070, 9090));
  EXPECT_EQ(spec->pods[0].port_names,
            (std::map<int, std::string>{{8080, "secure"}, {9090, "open"}}));

  policy::ResourceSet resources;
  ASSERT_TRUE(policy::AppendYamlResources(PodsYaml(*spec), "pods.yaml", resources).ok());
  ASSERT_EQ(resources.pods.size(), 1u);
  ASSERT_EQ(resources.pods[0].ports.size(), 3u);
  EXPECT_EQ(resources.pods[0].ports[0].name, "secure");
  EXPECT_EQ(resources.pods[0].ports[1].name, "");
  EXPECT_EQ(resources.pods[0].ports[2].name, "open");

  for (const char* bad : {"ports: [{name: x}]", "ports: [{port: 1, name: x}, {port: 2, name: x}]",
                          "ports: [{port: 1, name: Bad_Name}]", "ports: [{port: 1, nam: x}]"}) {
    EXPECT_FALSE(
        ParseSandbox(absl::StrCat("name: x\nnodes: [a]\npods: [{name: p, node: a, ", bad, "}]"),
                     "/")
            .ok())
        << bad;
  }
}

TEST(GeneratedConfig, LoadsWithThePolicyParser) {
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(kTwoNodes, "/base");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ClusterConfig config;
  config.namespaces["front"] = {};
  policy::ResourceSet resources;
  ASSERT_TRUE(policy::AppendYamlResources(PodsYaml(*spec), "pods.yaml", resources).ok());
  const std::string namespaces = MissingNamespacesYaml(*spec, config);
  ASSERT_TRUE(policy::AppendYamlResources(namespaces, "ns.yaml", resources).ok());

  ASSERT_EQ(resources.namespaces.size(), 1u);
  EXPECT_EQ(resources.namespaces[0].meta.name, "back");
  EXPECT_TRUE(resources.namespaces[0].meta.labels.empty());
  ASSERT_EQ(resources.pods.size(), 3u);
  const policy::Pod& api = resources.pods[1];
  EXPECT_EQ(api.meta.name, "api");
  EXPECT_EQ(api.meta.ns, "back");
  EXPECT_EQ(api.meta.uid, "sandbox-t1-back-api");
  EXPECT_EQ(api.service_account, "api");
  EXPECT_EQ(api.node_name, "b");
  EXPECT_THAT(api.ips, ElementsAre(literals::IpOf("10.241.2.2")));
  ASSERT_EQ(api.ports.size(), 2u);
  EXPECT_EQ(api.ports[1].container_port, 9090u);
  EXPECT_TRUE(api.ready);
  EXPECT_EQ(api.phase, "Running");
  EXPECT_EQ(resources.pods[0].meta.labels.at("app"), "web");
  EXPECT_EQ(resources.pods[2].meta.labels.at("nodeward.io/dataplane-mode"), "none");
}

TEST(LoadConfigDir, DemoConfigLoads) {
  absl::StatusOr<SandboxSpec> spec = LoadSandboxFile(NODEWARD_SANDBOX_DEMO "/demo.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<ClusterConfig> config = LoadConfigDir(spec->config_dir);
  ASSERT_TRUE(config.ok()) << config.status();
  DecideEnrollment(*config, *spec);
  std::map<std::string, bool> enrolled;
  for (const PodSpec& pod : spec->pods) enrolled[pod.name] = pod.enrolled;
  EXPECT_EQ(enrolled, (std::map<std::string, bool>{{"web", true},
                                                   {"old", false},
                                                   {"batch", true},
                                                   {"api", true},
                                                   {"db", true},
                                                   {"ext", false}}));
  policy::ResourceSet resources;
  for (const auto& [name, text] : config->files) {
    absl::Status parsed = policy::AppendYamlResources(text, name, resources);
    EXPECT_TRUE(parsed.ok()) << parsed;
  }
  EXPECT_EQ(resources.peer_authentications.size(), 3u);
  EXPECT_EQ(resources.destination_rules.size(), 1u);
  EXPECT_EQ(resources.services.size(), 3u);
  EXPECT_EQ(MissingNamespacesYaml(*spec, *config), "");

  // The traffic matrix of `nodeward-sandbox demo` resolves against the configuration.
  ASSERT_EQ(spec->traffic.size(), 7u);
  std::vector<std::string> resolved;
  for (const TrafficSpec& traffic : spec->traffic) {
    absl::StatusOr<TrafficTarget> target = ResolveTarget(*spec, *config, traffic.to);
    ASSERT_TRUE(target.ok()) << target.status();
    ASSERT_NE(target->pod, nullptr) << traffic.to;
    resolved.push_back(absl::StrCat(traffic.from, ">", target->address, ":", traffic.port, "=",
                                    target->pod->name, "/", traffic.expect));
  }
  EXPECT_THAT(resolved,
              ElementsAre("web>10.241.2.2:8080=api/mtls", "web>10.96.0.10:80=api/mtls",
                          "web>10.241.2.3:5432=db/mtls", "batch>10.241.2.2:9090=api/mtls",
                          "old>10.241.2.2:8080=api/refused", "web>10.96.0.12:8443=ext/plaintext",
                          "batch>10.241.1.2:8080=web/same-node"));
}

TEST(ParseSandbox, Traffic) {
  const std::string base = kTwoNodes;
  absl::StatusOr<SandboxSpec> spec = ParseSandbox(
      base +
          "traffic:\n- {from: front/web, to: api, port: 80, expect: mtls}\n"
          "- {from: web, to: 10.241.2.3, port: 1}\n- {from: web, to: api.back, port: 80}\n",
      "/base");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->traffic.size(), 3u);
  EXPECT_EQ(spec->traffic[0].from, "front/web");
  EXPECT_EQ(spec->traffic[0].expect, "mtls");
  EXPECT_EQ(spec->traffic[1].to, "10.241.2.3");
  EXPECT_EQ(spec->traffic[1].expect, "");

  ClusterConfig config;
  config.services.push_back({"back", "api", "10.96.0.1", {}});
  absl::StatusOr<TrafficTarget> target = ResolveTarget(*spec, config, "api.back");
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(target->address, "10.96.0.1");
  EXPECT_EQ(target->pod, nullptr);  // no selector
  target = ResolveTarget(*spec, config, "10.241.2.3");
  ASSERT_TRUE(target.ok());
  ASSERT_NE(target->pod, nullptr);
  EXPECT_EQ(target->pod->name, "out");
  EXPECT_FALSE(ResolveTarget(*spec, config, "db.back").ok());

  for (const char* bad : {"- {from: nobody, to: api, port: 80}", "- {from: web, to: api}",
                          "- {from: web, to: api, port: 0}", "- {from: web, to: nopod, port: 1}",
                          "- {from: web, to: api, port: 80, expect: maybe}",
                          "- {from: web, to: api, port: 80, extra: 1}"}) {
    EXPECT_FALSE(ParseSandbox(base + "traffic:\n" + bad + "\n", "/base").ok()) << bad;
  }
  ASSERT_TRUE(RenameSandbox(*spec, "t2").ok());
  EXPECT_EQ(spec->pods[1].uid, "sandbox-t2-back-api");
  EXPECT_FALSE(RenameSandbox(*spec, "Bad-Name").ok());
}

}  // namespace
}  // namespace nodeward::sandbox
