#include "policy/gateway_credentials.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<const Snapshot> Secrets(const std::string& yaml) {
  ResourceSet resources;
  absl::Status status = AppendYamlResources(yaml, "secrets.yaml", resources);
  EXPECT_TRUE(status.ok()) << status;
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
      Snapshot::Build(std::move(resources), {});
  EXPECT_TRUE(snapshot.ok()) << snapshot.status();
  return *snapshot;
}

std::string SecretYaml(const std::string& name, const std::string& ns,
                       const std::string& string_data) {
  return absl::StrCat("---\napiVersion: v1\nkind: Secret\nmetadata: {name: ", name,
                      ", namespace: ", ns, ", resourceVersion: \"7\"}\nstringData: ", string_data,
                      "\n");
}

ServerTlsSettings Tls(ServerTlsMode mode, const std::string& name) {
  ServerTlsSettings tls;
  tls.mode = mode;
  tls.credential_name = name;
  return tls;
}

TEST(GatewayCredentialsTest, ReadsATlsSecretOfTheGatewayWorkloadsNamespace) {
  auto snapshot = Secrets(SecretYaml("web", "istio-ingress", "{tls.crt: C, tls.key: K}") +
                          SecretYaml("web", "shop", "{tls.crt: X, tls.key: Y}"));
  absl::StatusOr<ResolvedCredential> credential =
      ResolveCredentialName(*snapshot, "istio-ingress", Tls(ServerTlsMode::kSimple, "web"));
  ASSERT_TRUE(credential.ok()) << credential.status();
  EXPECT_EQ(credential->cert_chain_pem, "C");
  EXPECT_EQ(credential->private_key_pem, "K");
  EXPECT_TRUE(credential->ca_certificates_pem.empty());
  EXPECT_THAT(credential->sources, ElementsAre("Secret istio-ingress/web (tls.crt, tls.key)"));
  EXPECT_THAT(credential->versions, ElementsAre("7"));
}

TEST(GatewayCredentialsTest, GenericKeysWinOverTlsKeys) {
  auto snapshot =
      Secrets(SecretYaml("web", "gw", "{cert: GC, key: GK, tls.crt: C, tls.key: K, cacert: CA}"));
  absl::StatusOr<ResolvedCredential> credential =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kMutual, "web"));
  ASSERT_TRUE(credential.ok()) << credential.status();
  EXPECT_EQ(credential->cert_chain_pem, "GC");
  EXPECT_EQ(credential->ca_certificates_pem, "CA");
  EXPECT_THAT(credential->sources,
              ElementsAre("Secret gw/web (cert, key)", "Secret gw/web (cacert)"));
}

TEST(GatewayCredentialsTest, MutualTakesTheCaFromTheCacertSecretFirst) {
  auto snapshot = Secrets(SecretYaml("bank", "gw", "{tls.crt: C, tls.key: K, ca.crt: OWN}") +
                          SecretYaml("bank-cacert", "gw", "{cacert: SEPARATE}"));
  absl::StatusOr<ResolvedCredential> credential =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kOptionalMutual, "bank"));
  ASSERT_TRUE(credential.ok()) << credential.status();
  EXPECT_EQ(credential->ca_certificates_pem, "SEPARATE");
  EXPECT_TRUE(credential->ca_crl_pem.empty());
  auto with_crl = Secrets(SecretYaml("bank", "gw", "{tls.crt: C, tls.key: K}") +
                          SecretYaml("bank-cacert", "gw", "{cacert: CA, ca.crl: CRL}"));
  absl::StatusOr<ResolvedCredential> revoking =
      ResolveCredentialName(*with_crl, "gw", Tls(ServerTlsMode::kMutual, "bank"));
  ASSERT_TRUE(revoking.ok()) << revoking.status();
  EXPECT_EQ(revoking->ca_crl_pem, "CRL");
  EXPECT_THAT(revoking->sources, ElementsAre("Secret gw/bank (tls.crt, tls.key)",
                                             "Secret gw/bank-cacert (cacert, ca.crl)"));
  // Without the -cacert Secret, the credential's own ca.crt.
  auto own = Secrets(SecretYaml("bank", "gw", "{tls.crt: C, tls.key: K, ca.crt: OWN}"));
  EXPECT_EQ(
      ResolveCredentialName(*own, "gw", Tls(ServerTlsMode::kMutual, "bank"))->ca_certificates_pem,
      "OWN");
}

TEST(GatewayCredentialsTest, MissingSecretsAndKeysSayWhat) {
  auto snapshot = Secrets(SecretYaml("empty", "gw", "{tls.crt: \"\", tls.key: K}") +
                          SecretYaml("noca", "gw", "{tls.crt: C, tls.key: K}"));
  absl::StatusOr<ResolvedCredential> missing =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kSimple, "absent"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("Secret gw/absent not found"));
  absl::StatusOr<ResolvedCredential> empty =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kSimple, "empty"));
  EXPECT_THAT(empty.status().message(), HasSubstr("found: tls.crt, tls.key"));
  absl::StatusOr<ResolvedCredential> noca =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kMutual, "noca"));
  EXPECT_THAT(noca.status().message(),
              HasSubstr("MUTUAL needs the client CA: Secret gw/noca has no non-empty cacert or "
                        "ca.crt (found: tls.crt, tls.key), and there is no Secret gw/noca-cacert"));
  absl::StatusOr<ResolvedCredential> foreign =
      ResolveCredentialName(*snapshot, "gw", Tls(ServerTlsMode::kSimple, "shop/web"));
  EXPECT_THAT(foreign.status().message(), HasSubstr("names another namespace"));
}

}  // namespace
}  // namespace nodeward::policy
