// Measures the certificate supply of a node:
//  - issuance rate of the built-in CA through the IdentityManager (key generation, CSR,
//    signing, validation), with 1 and with N issuing threads;
//  - the same identities delivered end to end over SDS on a Unix socket to a CertificateCache;
//  - issuance through IstioCertificateService over TLS on loopback (the multi-node path);
//  - resident memory per identity held by the server and by the agent's cache;
//  - threads and resident memory of the nodeward-sds process holding thousands of streams.
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/sds/open_streams.h"
#include "crypto/certificate_authority.h"
#include "crypto/keys.h"
#include "sds/authorizer.h"
#include "sds/ca_client.h"
#include "sds/ca_service.h"
#include "sds/certificate_cache.h"
#include "sds/certificate_signer.h"
#include "sds/identity_manager.h"
#include "sds/sds_server.h"

ABSL_FLAG(int, identities, 1000, "Identities per measurement");
ABSL_FLAG(int, threads, 2, "Issuing threads for the parallel measurements");
ABSL_FLAG(int, streams, 5000, "Open SDS streams to measure nodeward-sds with (0: skip)");
ABSL_FLAG(int, stream_connections, 50, "Connections the open streams are spread over");

namespace nodeward::sds {
namespace {

// Heap bytes in use: exact where resident memory is blurred by freed pages being reused.
std::int64_t HeapBytes() { return static_cast<std::int64_t>(::mallinfo2().uordblks); }

std::int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

std::vector<SpiffeId> Identities(int count, const std::string& prefix) {
  std::vector<SpiffeId> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(*SpiffeId::Make("cluster.local", "bench-" + std::to_string(i % 50),
                                  prefix + std::to_string(i)));
  }
  return out;
}

IdentityManagerOptions ManagerOptions(int threads) {
  IdentityManagerOptions options;
  options.lifetime = absl::Hours(24);
  options.issuing_threads = threads;
  return options;
}

// Issues every identity through a manager; returns certificates per second.
double IssueAll(std::shared_ptr<CertificateSigner> signer, int threads,
                const std::vector<SpiffeId>& identities,
                std::unique_ptr<IdentityManager>* keep = nullptr) {
  auto manager = std::make_unique<IdentityManager>(std::move(signer), ManagerOptions(threads));
  absl::Time start = absl::Now();
  for (const auto& identity : identities) manager->Retain(identity);
  for (const auto& identity : identities) {
    auto issued = manager->WaitForCertificate(identity, absl::Now() + absl::Minutes(5));
    if (!issued.ok()) {
      std::fprintf(stderr, "issuing failed: %s\n", issued.status().ToString().c_str());
      std::exit(1);
    }
  }
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (keep != nullptr) *keep = std::move(manager);
  return identities.size() / seconds;
}

void Run() {
  const int count = absl::GetFlag(FLAGS_identities);
  const int threads = absl::GetFlag(FLAGS_threads);
  char pattern[] = "/tmp/nodeward-sds-bench-XXXXXX";
  const std::filesystem::path dir = ::mkdtemp(pattern);
  auto ca = crypto::CertificateAuthority::LoadOrCreate((dir / "ca").string());
  if (!ca.ok()) {
    std::fprintf(stderr, "CA: %s\n", ca.status().ToString().c_str());
    std::exit(1);
  }
  std::shared_ptr<const crypto::CertificateAuthority> authority = *std::move(ca);
  auto signer = std::make_shared<LocalCaSigner>(authority);
  std::printf("sds_bench: %d identities, %ld cores online\n", count,
              ::sysconf(_SC_NPROCESSORS_ONLN));

  {
    // Baseline: the same crypto work in a plain loop, without threads, scheduling or copies.
    std::vector<SpiffeId> baseline = Identities(count, "base-");
    absl::Time start = absl::Now();
    for (const auto& identity : baseline) {
      auto key = crypto::PrivateKey::GenerateP256();
      auto csr = crypto::MakeCsr(*key, identity);
      auto chain = signer->Sign(*csr, identity, absl::Hours(24));
      auto roots = crypto::TrustBundle::FromPem(chain->roots_pem);
      if (!crypto::ValidateWorkloadCertificate(chain->chain_pem, *key, *roots, identity).ok()) {
        std::exit(1);
      }
    }
    std::printf("baseline, crypto only (key, CSR, sign, validate): %8.0f certificates/s\n",
                count / absl::ToDoubleSeconds(absl::Now() - start));
  }
  std::printf("built-in CA, 1 issuing thread:   %8.0f certificates/s\n",
              IssueAll(signer, 1, Identities(count, "one-")));
  std::printf("built-in CA, %d issuing threads:  %8.0f certificates/s\n", threads,
              IssueAll(signer, threads, Identities(count, "par-")));

  // Server side memory: a manager holding `count` identities.
  std::vector<SpiffeId> held = Identities(count, "held-");
  std::int64_t before_server = ResidentBytes();
  std::int64_t before_server_heap = HeapBytes();
  std::unique_ptr<IdentityManager> manager;
  IssueAll(signer, threads, held, &manager);
  std::int64_t after_server = ResidentBytes();
  std::int64_t after_server_heap = HeapBytes();

  // End to end over SDS: a fresh manager so issuance is part of the measurement.
  std::vector<SpiffeId> delivered = Identities(count, "sds-");
  AllowListAuthorizer authorizer(delivered, std::nullopt);
  IdentityManager sds_manager(signer, ManagerOptions(threads));
  SdsServerOptions server_options;
  server_options.socket_path = (dir / "sds.sock").string();
  SdsServer server(&sds_manager, &authorizer, server_options);
  if (!server.Start().ok()) std::exit(1);
  CertificateCacheOptions cache_options;
  cache_options.sds.socket_path = (dir / "sds.sock").string();
  cache_options.max_outstanding_requests = 64;
  CertificateCache cache(cache_options);
  cache.Start();
  absl::Time start = absl::Now();
  for (const auto& identity : delivered) cache.Acquire(identity);
  for (const auto& identity : delivered) {
    auto credentials = cache.WaitForCredentials(identity, absl::Now() + absl::Minutes(5));
    if (!credentials.ok()) {
      std::fprintf(stderr, "SDS: %s\n", credentials.status().ToString().c_str());
      std::exit(1);
    }
  }
  double sds_seconds = absl::ToDoubleSeconds(absl::Now() - start);

  // Agent side memory: a second cache taking the same, already issued, identities.
  CertificateCache second_cache(cache_options);
  second_cache.Start();
  // Let the previous phase's buffers settle so they are not counted either way.
  absl::SleepFor(absl::Milliseconds(500));
  std::int64_t before_cache = ResidentBytes();
  std::int64_t before_cache_heap = HeapBytes();
  for (const auto& identity : delivered) second_cache.Acquire(identity);
  for (const auto& identity : delivered) {
    if (!second_cache.WaitForCredentials(identity, absl::Now() + absl::Minutes(5)).ok()) {
      std::exit(1);
    }
  }
  absl::SleepFor(absl::Milliseconds(500));
  std::int64_t after_cache = ResidentBytes();
  std::int64_t after_cache_heap = HeapBytes();
  std::printf(
      "end to end over SDS (issue + push + validate in cache): %8.0f certificates/s "
      "(%d in %.2f s)\n",
      count / sds_seconds, count, sds_seconds);

  // Upstream path: IstioCertificateService over TLS on loopback.
  std::ofstream(dir / "tokens") << "bench-token bench-node\n";
  std::ofstream(dir / "token") << "bench-token\n";
  CaTokenStore tokens((dir / "tokens").string());
  if (!tokens.Reload().ok()) std::exit(1);
  auto serving_id = *SpiffeId::Make("cluster.local", "nodeward-system", "nodeward-ca");
  auto serving_key = *crypto::PrivateKey::GenerateP256();
  auto serving =
      *signer->Sign(*crypto::MakeCsr(serving_key, serving_id), serving_id, absl::Hours(1));
  CaServiceOptions ca_options;
  ca_options.listen_address = "127.0.0.1:0";
  ca_options.trust_domain = "cluster.local";
  ca_options.server_cert_chain_pem = serving.chain_pem;
  ca_options.server_key_pem = *serving_key.ToPem();
  CaServer ca_server(signer.get(), {&tokens}, ca_options);
  if (!ca_server.Start().ok()) std::exit(1);
  IstioCaClientOptions client;
  client.address = absl::StrCat("127.0.0.1:", ca_server.port());
  client.root_cert_pem = authority->RootsPem();
  client.token_file = (dir / "token").string();
  client.server_identity = serving_id;
  std::shared_ptr<CertificateSigner> upstream = *IstioCaSigner::Create(client);
  std::printf("IstioCertificateService over TLS, %d threads: %8.0f certificates/s\n", threads,
              IssueAll(upstream, threads, Identities(count, "ca-")));

  std::printf(
      "memory per identity, SDS server (key, chain, schedule): heap %6.1f KiB, "
      "resident %6.1f KiB\n",
      (after_server_heap - before_server_heap) / 1024.0 / count,
      (after_server - before_server) / 1024.0 / count);
  std::printf(
      "memory per identity, agent cache (+ its stream on the server): heap %6.1f KiB, "
      "resident %6.1f KiB\n",
      (after_cache_heap - before_cache_heap) / 1024.0 / count,
      (after_cache - before_cache) / 1024.0 / count);
  second_cache.Stop();
  cache.Stop();
  server.Shutdown();
  ca_server.Shutdown();

  if (const int streams = absl::GetFlag(FLAGS_streams); streams > 0) {
    // nodeward-sds is built next to this benchmark.
    const std::string binary =
        (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "nodeward-sds").string();
    if (!MeasureOpenStreams(binary, dir.string(), streams,
                            absl::GetFlag(FLAGS_stream_connections))) {
      std::exit(1);
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace nodeward::sds

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  nodeward::sds::Run();
  return 0;
}
