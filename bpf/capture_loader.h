#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "bpf/capture_dataplane.h"

struct capture_bpf;
struct bpf_link;

namespace nodeward::bpf {

struct CaptureLoaderOptions {
  // cgroup-v2 directory the connect/getpeername/sockops programs attach to. On a node the
  // cgroup-v2 root; anywhere else a cgroup holding only the pods' processes.
  std::string attach_cgroup;
  // bpffs directory for maps and links. Mounted at /sys/fs/bpf when no bpffs is there yet.
  std::string pin_path = "/sys/fs/bpf/nodeward";
};

// Loads the capture programs through the libbpf skeleton, attaches them, and pins maps and
// links so capture outlives the process: while the agent is down, enrolled pods' connects are
// still redirected to 15001 where nothing listens, so they fail instead of leaving in
// plaintext. Opening again with the same pin path adopts that state (maps are reused, links are
// updated in place to the newly loaded programs, without a window where capture is off).
//
// Layout under the pin path: maps/<map name>, links/<connect4|connect6|getpeername4|
// getpeername6|sockops> (cgroup links), netns/<netns cookie> (one sk_lookup link per pod).
class CaptureLoader final : public CaptureDataplane {
 public:
  static absl::StatusOr<std::unique_ptr<CaptureLoader>> Open(const CaptureLoaderOptions& options);
  ~CaptureLoader() override;

  CaptureLoader(const CaptureLoader&) = delete;
  CaptureLoader& operator=(const CaptureLoader&) = delete;

  absl::Status EnrollNetns(uint64_t netns_cookie, uint32_t pod_id) override;
  absl::Status UnenrollNetns(uint64_t netns_cookie) override;
  absl::Status LinkNetns(uint64_t netns_cookie, int netns_fd) override;
  absl::Status UnlinkNetns(uint64_t netns_cookie) override;
  absl::Status AddPodAddress(const IpAddress& address, uint64_t netns_cookie) override;
  absl::Status RemovePodAddress(const IpAddress& address) override;
  absl::Status SetInboundListener(const IpAddress& address, ListenerSlot slot,
                                  int listener_fd) override;
  absl::Status AnnounceDelivery(const SocketAddress& application,
                                const SocketAddress& agent_side) override;
  absl::Status ForgetDelivery(const SocketAddress& application,
                              const SocketAddress& agent_side) override;
  absl::StatusOr<SocketAddress> TakeOriginalDestination(const SocketAddress& client,
                                                        uint64_t netns_cookie) override;
  // The same, reading the peer and netns cookie off the accepted socket.
  absl::StatusOr<SocketAddress> TakeOriginalDestination(int accepted_fd);
  absl::StatusOr<DataplaneSnapshot> Snapshot() const override;

  // Detaches every program, unpins every link and map and removes the pin directory: capture
  // stops for every pod. Used on an explicit cleanup, never on a plain restart.
  absl::Status DetachAll();

  // Program file descriptors, for BPF_PROG_TEST_RUN in tests.
  int SkLookupProgramFd() const;
  int InboundListenersMapFd() const;
  int PodAddressesMapFd() const;

  const std::string& pin_path() const { return pin_path_; }

 private:
  CaptureLoader(capture_bpf* skeleton, std::string pin_path, int cgroup_fd);

  absl::Status AttachCgroupPrograms();
  std::string NetnsLinkPath(uint64_t netns_cookie) const;

  capture_bpf* skeleton_;
  const std::string pin_path_;
  const int cgroup_fd_;
  mutable absl::Mutex mutex_;
  std::vector<bpf_link*> cgroup_links_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<uint64_t, bpf_link*> netns_links_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace nodeward::bpf
