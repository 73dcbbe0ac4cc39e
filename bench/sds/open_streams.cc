#include "bench/sds/open_streams.h"

#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "envoy/service/secret/v3/sds.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "sds/secret_resources.h"
#include "sds/testing/processes.h"

namespace nodeward::sds {
namespace {

using envoy::service::discovery::v3::DiscoveryRequest;
using envoy::service::discovery::v3::DiscoveryResponse;
using envoy::service::secret::v3::SecretDiscoveryService;

constexpr char kIdentity[] = "spiffe://cluster.local/ns/bench/sa/streams";

// One stream as an Envoy holds it: asks for ROOTCA and a certificate, ACKs what comes, stays.
class HeldStream : public grpc::ClientBidiReactor<DiscoveryRequest, DiscoveryResponse> {
 public:
  HeldStream(SecretDiscoveryService::Stub* stub, std::atomic<int>* complete) : complete_(complete) {
    request_.set_type_url(std::string(kSecretTypeUrl));
    request_.add_resource_names(std::string(kRootCaResourceName));
    request_.add_resource_names(kIdentity);
    stub->async()->StreamSecrets(&context_, this);
    {
      absl::MutexLock lock(&mu_);
      writing_ = true;
    }
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (++received_ == 2) complete_->fetch_add(1);
    bool write_now = false;
    {
      absl::MutexLock lock(&mu_);
      // One write at a time: a response that comes while the last ACK is still being written
      // is ACKed when that write is done (the latest nonce stands for both).
      next_ack_ = request_;
      next_ack_.set_response_nonce(response_.nonce());
      next_ack_.set_version_info(response_.version_info());
      ack_pending_ = true;
      if (!writing_) {
        writing_ = true;
        ack_pending_ = false;
        ack_ = next_ack_;
        write_now = true;
      }
    }
    if (write_now) StartWrite(&ack_);
    StartRead(&response_);
  }
  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      if (!ok || !ack_pending_) {
        writing_ = false;
        return;
      }
      ack_pending_ = false;
      ack_ = next_ack_;
    }
    StartWrite(&ack_);
  }
  void OnDone(const grpc::Status&) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  void Close() {
    context_.TryCancel();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

 private:
  std::atomic<int>* const complete_;
  grpc::ClientContext context_;
  DiscoveryRequest request_;
  DiscoveryRequest ack_;
  DiscoveryResponse response_;
  int received_ = 0;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ack_pending_ ABSL_GUARDED_BY(mu_) = false;
  DiscoveryRequest next_ack_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

struct Sample {
  long threads = 0;
  long rss_kb = 0;
};

Sample SampleOf(pid_t pid) {
  return {testing::ProcStatus(pid, "Threads"), testing::ProcStatus(pid, "VmRSS")};
}

}  // namespace

bool MeasureOpenStreams(const std::string& binary, const std::string& dir, int streams,
                        int connections) {
  // Each connection is a descriptor on both sides.
  rlimit files{static_cast<rlim_t>(connections + 1024), static_cast<rlim_t>(connections + 1024)};
  ::setrlimit(RLIMIT_NOFILE, &files);
  const std::string socket = dir + "/streams.sock";
  testing::Process server({binary, "--sds-socket=" + socket, "--ca-dir=" + dir + "/streams-ca",
                           std::string("--allowed-identity=") + kIdentity,
                           absl::StrCat("--sds-max-calls-per-caller=", streams + 1)});
  if (!testing::Eventually([&] { return std::filesystem::exists(socket); }, absl::Seconds(15))) {
    std::fprintf(stderr, "nodeward-sds did not come up\n");
    return false;
  }
  std::vector<std::unique_ptr<SecretDiscoveryService::Stub>> stubs;
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("nodeward.bench.connection", i);  // one connection each, not one shared
    stubs.push_back(SecretDiscoveryService::NewStub(grpc::CreateCustomChannel(
        "unix:" + socket, grpc::InsecureChannelCredentials(), arguments)));
  }
  std::atomic<int> complete{0};
  auto open = [&](int count, std::vector<std::unique_ptr<HeldStream>>& held) {
    const int before = complete.load();
    for (int i = 0; i < count; ++i) {
      held.push_back(
          std::make_unique<HeldStream>(stubs[held.size() % stubs.size()].get(), &complete));
    }
    return testing::Eventually([&] { return complete.load() - before == count; }, absl::Minutes(2));
  };
  std::vector<std::unique_ptr<HeldStream>> held;
  if (!open(1, held)) return false;
  absl::SleepFor(absl::Seconds(1));
  const Sample one = SampleOf(server.pid());
  const absl::Time start = absl::Now();
  if (!open(streams - 1, held)) {
    std::fprintf(stderr, "only %d of %d streams were served\n", complete.load(), streams);
    return false;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::SleepFor(absl::Seconds(1));
  const Sample many = SampleOf(server.pid());
  for (auto& stream : held) stream->Close();
  held.clear();
  stubs.clear();  // and the connections with them
  // The server gives freed memory back at its next housekeeping round (every 5 s).
  absl::SleepFor(absl::Seconds(7));
  const Sample closed = SampleOf(server.pid());
  std::printf(
      "open SDS streams (ROOTCA + a certificate each, %d connections), nodeward-sds process:\n"
      "  1 stream:        %3ld threads, RSS %6.1f MiB\n"
      "  %d streams:   %3ld threads, RSS %6.1f MiB (%.1f KiB per stream; all served in %.2f s)\n"
      "  all closed:      %3ld threads, RSS %6.1f MiB\n",
      connections, one.threads, one.rss_kb / 1024.0, streams, many.threads, many.rss_kb / 1024.0,
      static_cast<double>(many.rss_kb - one.rss_kb) / (streams - 1), seconds, closed.threads,
      closed.rss_kb / 1024.0);
  return server.Stop() == 0;
}

}  // namespace nodeward::sds
