#include "bpf/capture_loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bpf/capture_bpf.skel.h"
#include "bpf/nodeward_maps.h"
#include "common/errno_status.h"
#include "common/files.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace nodeward::bpf {
namespace {

constexpr char kDefaultBpffsMount[] = "/sys/fs/bpf";

bool IsFilesystem(const std::string& path, long magic) {
  struct statfs info {};
  return statfs(path.c_str(), &info) == 0 && static_cast<long>(info.f_type) == magic;
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// Pins need a bpffs. A node may not have one mounted yet; mount the conventional one then.
absl::Status EnsureBpffs(const std::string& pin_path) {
  if (absl::StartsWith(pin_path, absl::StrCat(kDefaultBpffsMount, "/")) &&
      !IsFilesystem(kDefaultBpffsMount, BPF_FS_MAGIC)) {
    if (mount("bpf", kDefaultBpffsMount, "bpf", 0, "mode=0700") != 0) {
      return ErrnoStatus(errno, absl::StrCat("mount bpffs at ", kDefaultBpffsMount));
    }
  }
  for (const char* sub : {"", "/maps", "/links", "/netns"}) {
    if (absl::Status status = MakePrivateDirectories(absl::StrCat(pin_path, sub)); !status.ok()) {
      return status;
    }
  }
  if (!IsFilesystem(pin_path, BPF_FS_MAGIC)) {
    return absl::FailedPreconditionError(absl::StrCat("pin path ", pin_path, " is not on a bpffs"));
  }
  return absl::OkStatus();
}

absl::Status LibbpfStatus(int error, absl::string_view what) {
  return ErrnoStatus(error < 0 ? -error : error, what);
}

absl::StatusOr<bpf_link_info> LinkInfo(const bpf_link* link) {
  bpf_link_info info{};
  uint32_t length = sizeof(info);
  if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &length) != 0) {
    return ErrnoStatus(errno, "BPF link info");
  }
  return info;
}

// Opens the link pinned at `path` when it is still attached where `matches` says it should be;
// anything else pinned there is unpinned (and so detached) so the caller attaches afresh.
template <typename Matches>
bpf_link* AdoptPinnedLink(const std::string& path, bpf_program* program, Matches matches) {
  if (!Exists(path)) return nullptr;
  bpf_link* link = bpf_link__open(path.c_str());
  if (link == nullptr) {
    unlink(path.c_str());
    return nullptr;
  }
  absl::StatusOr<bpf_link_info> info = LinkInfo(link);
  if (info.ok() && matches(*info) && bpf_link__update_program(link, program) == 0) {
    return link;
  }
  bpf_link__unpin(link);
  bpf_link__destroy(link);
  return nullptr;
}

void FillAddress(const IpAddress& address, uint8_t* family, uint32_t addr[4]) {
  IpAddress plain = address.Unmapped();
  *family = plain.family == AF_INET ? NW_AF_INET : NW_AF_INET6;
  std::memset(addr, 0, 16);
  std::memcpy(addr, plain.bytes.data(), plain.family == AF_INET ? 4 : 16);
}

IpAddress AddressFrom(uint8_t family, const uint32_t addr[4]) {
  IpAddress address;
  address.family = family == NW_AF_INET ? AF_INET : AF_INET6;
  std::memcpy(address.bytes.data(), addr, family == NW_AF_INET ? 4 : 16);
  return address;
}

uint8_t SlotValue(ListenerSlot slot) {
  return slot == ListenerSlot::kTunnel ? NW_SLOT_TUNNEL : NW_SLOT_INBOUND_PLAINTEXT;
}

absl::Status DeleteIgnoringMissing(int map_fd, const void* key, absl::string_view what) {
  if (bpf_map_delete_elem(map_fd, key) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, what);
  }
  return absl::OkStatus();
}

const char* CounterName(int index) {
  switch (index) {
    case NW_COUNTER_OUTBOUND_REDIRECTED:
      return "outbound_redirected";
    case NW_COUNTER_OUTBOUND_SKIPPED_MARK:
      return "outbound_skipped_agent_mark";
    case NW_COUNTER_OUTBOUND_SKIPPED_LOOPBACK:
      return "outbound_skipped_loopback";
    case NW_COUNTER_OUTBOUND_NO_STORAGE:
      return "outbound_refused_no_storage";
    case NW_COUNTER_OUTBOUND_SKIPPED_AGENT_PORT:
      return "outbound_skipped_agent_port";
    case NW_COUNTER_INBOUND_STEERED:
      return "inbound_steered";
    case NW_COUNTER_INBOUND_DROPPED_NO_LISTENER:
      return "inbound_refused_no_listener";
    case NW_COUNTER_INBOUND_DELIVERY_PASSED:
      return "inbound_agent_delivery_passed";
    case NW_COUNTER_INBOUND_DROPPED_UNKNOWN_ADDRESS:
      return "inbound_refused_unknown_address";
  }
  return "unknown";
}

}  // namespace

std::string ListenerSlotName(ListenerSlot slot) {
  return slot == ListenerSlot::kTunnel ? "tunnel" : "inbound-plaintext";
}

absl::StatusOr<std::unique_ptr<CaptureLoader>> CaptureLoader::Open(
    const CaptureLoaderOptions& options) {
  if (options.attach_cgroup.empty()) {
    return absl::InvalidArgumentError("an attach cgroup is required");
  }
  if (!IsFilesystem(options.attach_cgroup, CGROUP2_SUPER_MAGIC)) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.attach_cgroup, " is not a cgroup-v2 directory"));
  }
  if (options.pin_path.empty() || options.pin_path.front() != '/') {
    return absl::InvalidArgumentError("the pin path must be absolute");
  }
  std::string pin_path = options.pin_path;
  while (pin_path.size() > 1 && pin_path.back() == '/') pin_path.pop_back();
  if (absl::Status status = EnsureBpffs(pin_path); !status.ok()) return status;

  int cgroup_fd = open(options.attach_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup_fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", options.attach_cgroup));

  capture_bpf* skeleton = capture_bpf__open();
  if (skeleton == nullptr) {
    int error = errno;
    close(cgroup_fd);
    return ErrnoStatus(error, "open BPF object");
  }
  bpf_map* maps[] = {skeleton->maps.enrolled,       skeleton->maps.orig_dst_sk,
                     skeleton->maps.orig_dst_tuple, skeleton->maps.pod_addrs,
                     skeleton->maps.inbound_socks,  skeleton->maps.deliveries,
                     skeleton->maps.counters};
  for (bpf_map* map : maps) {
    std::string path = absl::StrCat(pin_path, "/maps/", bpf_map__name(map));
    if (int error = bpf_map__set_pin_path(map, path.c_str()); error != 0) {
      capture_bpf__destroy(skeleton);
      close(cgroup_fd);
      return LibbpfStatus(error, "set map pin path");
    }
  }
  // Maps already pinned there (a previous agent's) are reused, which is how enrollment
  // survives a restart; an incompatible layout fails here rather than half-working.
  if (int error = capture_bpf__load(skeleton); error != 0) {
    capture_bpf__destroy(skeleton);
    close(cgroup_fd);
    return LibbpfStatus(error, absl::StrCat("load BPF programs (maps pinned under ", pin_path,
                                            " may be from an incompatible version)"));
  }
  std::unique_ptr<CaptureLoader> loader(new CaptureLoader(skeleton, pin_path, cgroup_fd));
  if (absl::Status status = loader->AttachCgroupPrograms(); !status.ok()) return status;
  return loader;
}

CaptureLoader::CaptureLoader(capture_bpf* skeleton, std::string pin_path, int cgroup_fd)
    : skeleton_(skeleton), pin_path_(std::move(pin_path)), cgroup_fd_(cgroup_fd) {}

CaptureLoader::~CaptureLoader() {
  absl::MutexLock lock(&mutex_);
  // Closing our descriptors leaves pinned links attached: that is the point of pinning.
  for (bpf_link* link : cgroup_links_) bpf_link__destroy(link);
  for (auto& [cookie, link] : netns_links_) bpf_link__destroy(link);
  capture_bpf__destroy(skeleton_);
  close(cgroup_fd_);
}

absl::Status CaptureLoader::AttachCgroupPrograms() {
  struct stat cgroup_stat {};
  if (fstat(cgroup_fd_, &cgroup_stat) != 0) return ErrnoStatus(errno, "stat attach cgroup");
  // On cgroup v2 the cgroup id is the directory's inode number.
  const uint64_t cgroup_id = cgroup_stat.st_ino;
  std::pair<bpf_program*, const char*> programs[] = {
      {skeleton_->progs.nw_connect4, "connect4"},
      {skeleton_->progs.nw_connect6, "connect6"},
      {skeleton_->progs.nw_getpeername4, "getpeername4"},
      {skeleton_->progs.nw_getpeername6, "getpeername6"},
      {skeleton_->progs.nw_sockops, "sockops"},
  };
  absl::MutexLock lock(&mutex_);
  for (auto [program, name] : programs) {
    std::string path = absl::StrCat(pin_path_, "/links/", name);
    bpf_link* link = AdoptPinnedLink(path, program, [&](const bpf_link_info& info) {
      return info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgroup_id;
    });
    if (link == nullptr) {
      link = bpf_program__attach_cgroup(program, cgroup_fd_);
      if (link == nullptr) return ErrnoStatus(errno, absl::StrCat("attach ", name));
      if (int error = bpf_link__pin(link, path.c_str()); error != 0) {
        bpf_link__destroy(link);
        return LibbpfStatus(error, absl::StrCat("pin link ", path));
      }
    }
    cgroup_links_.push_back(link);
  }
  return absl::OkStatus();
}

std::string CaptureLoader::NetnsLinkPath(uint64_t netns_cookie) const {
  return absl::StrCat(pin_path_, "/netns/", netns_cookie);
}

absl::Status CaptureLoader::EnrollNetns(uint64_t netns_cookie, uint32_t pod_id) {
  nw_pod pod{};
  pod.pod_id = pod_id;
  if (bpf_map_update_elem(bpf_map__fd(skeleton_->maps.enrolled), &netns_cookie, &pod, BPF_ANY) !=
      0) {
    return ErrnoStatus(errno, "update enrolled map");
  }
  return absl::OkStatus();
}

absl::Status CaptureLoader::UnenrollNetns(uint64_t netns_cookie) {
  return DeleteIgnoringMissing(bpf_map__fd(skeleton_->maps.enrolled), &netns_cookie,
                               "delete from enrolled map");
}

absl::Status CaptureLoader::LinkNetns(uint64_t netns_cookie, int netns_fd) {
  absl::MutexLock lock(&mutex_);
  if (netns_links_.contains(netns_cookie)) return absl::OkStatus();
  struct stat netns_stat {};
  if (fstat(netns_fd, &netns_stat) != 0) return ErrnoStatus(errno, "stat netns");
  const std::string path = NetnsLinkPath(netns_cookie);
  bpf_program* program = skeleton_->progs.nw_sk_lookup;
  bpf_link* link = AdoptPinnedLink(path, program, [&](const bpf_link_info& info) {
    return info.type == BPF_LINK_TYPE_NETNS && info.netns.netns_ino == netns_stat.st_ino;
  });
  if (link == nullptr) {
    link = bpf_program__attach_netns(program, netns_fd);
    if (link == nullptr) return ErrnoStatus(errno, "attach sk_lookup to netns");
    if (int error = bpf_link__pin(link, path.c_str()); error != 0) {
      bpf_link__destroy(link);
      return LibbpfStatus(error, absl::StrCat("pin link ", path));
    }
  }
  netns_links_[netns_cookie] = link;
  return absl::OkStatus();
}

absl::Status CaptureLoader::UnlinkNetns(uint64_t netns_cookie) {
  absl::MutexLock lock(&mutex_);
  const std::string path = NetnsLinkPath(netns_cookie);
  auto it = netns_links_.find(netns_cookie);
  if (it != netns_links_.end()) {
    bpf_link__unpin(it->second);
    bpf_link__destroy(it->second);
    netns_links_.erase(it);
  }
  // Pinned by an earlier run and never adopted: dropping the pin detaches it.
  if (Exists(path) && unlink(path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("unpin ", path));
  }
  return absl::OkStatus();
}

absl::Status CaptureLoader::AddPodAddress(const IpAddress& address, uint64_t netns_cookie) {
  nw_address key{};
  FillAddress(address, &key.family, key.addr);
  const int fd = bpf_map__fd(skeleton_->maps.pod_addrs);
  uint64_t owner = 0;
  if (bpf_map_lookup_elem(fd, &key, &owner) == 0 && owner != netns_cookie) {
    return absl::AlreadyExistsError(
        absl::StrCat("address ", address.ToString(), " already belongs to netns cookie ", owner));
  }
  if (bpf_map_update_elem(fd, &key, &netns_cookie, BPF_ANY) != 0) {
    return ErrnoStatus(errno, "update pod address map");
  }
  return absl::OkStatus();
}

absl::Status CaptureLoader::RemovePodAddress(const IpAddress& address) {
  nw_address key{};
  FillAddress(address, &key.family, key.addr);
  for (ListenerSlot slot : {ListenerSlot::kInboundPlaintext, ListenerSlot::kTunnel}) {
    nw_listener_key listener{};
    FillAddress(address, &listener.family, listener.addr);
    listener.slot = SlotValue(slot);
    if (absl::Status status = DeleteIgnoringMissing(bpf_map__fd(skeleton_->maps.inbound_socks),
                                                    &listener, "delete inbound listener");
        !status.ok()) {
      return status;
    }
  }
  return DeleteIgnoringMissing(bpf_map__fd(skeleton_->maps.pod_addrs), &key, "delete pod address");
}

absl::Status CaptureLoader::SetInboundListener(const IpAddress& address, ListenerSlot slot,
                                               int listener_fd) {
  nw_listener_key key{};
  FillAddress(address, &key.family, key.addr);
  key.slot = SlotValue(slot);
  uint64_t value = static_cast<uint64_t>(listener_fd);
  if (bpf_map_update_elem(bpf_map__fd(skeleton_->maps.inbound_socks), &key, &value, BPF_ANY) != 0) {
    return ErrnoStatus(
        errno, absl::StrCat("add ", ListenerSlotName(slot), " listener for ", address.ToString()));
  }
  return absl::OkStatus();
}

namespace {

// Both ends in one family: the kernel sees a v4-mapped peer of an IPv6 socket as IPv4.
absl::StatusOr<nw_delivery_key> DeliveryKey(const SocketAddress& application,
                                            const SocketAddress& agent_side) {
  nw_delivery_key key{};
  uint8_t agent_family = 0;
  FillAddress(application.ip, &key.family, key.local);
  FillAddress(agent_side.ip, &agent_family, key.remote);
  if (agent_family != key.family) {
    return absl::InvalidArgumentError(absl::StrCat("delivery from ", agent_side.ToString(), " to ",
                                                   application.ToString(),
                                                   " mixes address families"));
  }
  key.local_port = application.port;
  key.remote_port = agent_side.port;
  return key;
}

}  // namespace

absl::Status CaptureLoader::AnnounceDelivery(const SocketAddress& application,
                                             const SocketAddress& agent_side) {
  absl::StatusOr<nw_delivery_key> key = DeliveryKey(application, agent_side);
  if (!key.ok()) return key.status();
  const uint8_t present = 1;
  if (bpf_map_update_elem(bpf_map__fd(skeleton_->maps.deliveries), &*key, &present, BPF_ANY) != 0) {
    return ErrnoStatus(errno, absl::StrCat("announce delivery to ", application.ToString()));
  }
  return absl::OkStatus();
}

absl::Status CaptureLoader::ForgetDelivery(const SocketAddress& application,
                                           const SocketAddress& agent_side) {
  absl::StatusOr<nw_delivery_key> key = DeliveryKey(application, agent_side);
  if (!key.ok()) return key.status();
  return DeleteIgnoringMissing(bpf_map__fd(skeleton_->maps.deliveries), &*key, "forget delivery");
}

absl::StatusOr<SocketAddress> CaptureLoader::TakeOriginalDestination(int accepted_fd) {
  absl::StatusOr<SocketAddress> peer = SocketAddress::PeerOf(accepted_fd);
  if (!peer.ok()) return peer.status();
  uint64_t netns_cookie = 0;
  socklen_t length = sizeof(netns_cookie);
  if (getsockopt(accepted_fd, SOL_SOCKET, SO_NETNS_COOKIE, &netns_cookie, &length) != 0) {
    return ErrnoStatus(errno, "SO_NETNS_COOKIE");
  }
  return TakeOriginalDestination(*peer, netns_cookie);
}

absl::StatusOr<SocketAddress> CaptureLoader::TakeOriginalDestination(const SocketAddress& client,
                                                                     uint64_t netns_cookie) {
  nw_tuple_key key{};
  key.netns_cookie = netns_cookie;
  key.port = client.port;
  FillAddress(client.ip, &key.family, key.addr);
  nw_orig_dst value{};
  const int fd = bpf_map__fd(skeleton_->maps.orig_dst_tuple);
  if (bpf_map_lookup_and_delete_elem(fd, &key, &value) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("no original destination recorded for client ", client.ToString()));
    }
    return ErrnoStatus(errno, "take original destination");
  }
  return SocketAddress{AddressFrom(value.family, value.addr), ntohs(value.port)};
}

absl::StatusOr<DataplaneSnapshot> CaptureLoader::Snapshot() const {
  DataplaneSnapshot snapshot;
  {
    const int fd = bpf_map__fd(skeleton_->maps.enrolled);
    uint64_t key = 0;
    uint64_t* previous = nullptr;
    while (bpf_map_get_next_key(fd, previous, &key) == 0) {
      previous = &key;
      nw_pod pod{};
      if (bpf_map_lookup_elem(fd, &key, &pod) == 0) snapshot.enrolled.push_back({key, pod.pod_id});
    }
  }
  {
    const int fd = bpf_map__fd(skeleton_->maps.pod_addrs);
    nw_address key{};
    nw_address* previous = nullptr;
    while (bpf_map_get_next_key(fd, previous, &key) == 0) {
      previous = &key;
      uint64_t cookie = 0;
      if (bpf_map_lookup_elem(fd, &key, &cookie) == 0) {
        snapshot.pod_addresses.push_back({AddressFrom(key.family, key.addr), cookie});
      }
    }
  }
  {
    const int fd = bpf_map__fd(skeleton_->maps.inbound_socks);
    nw_listener_key key{};
    nw_listener_key* previous = nullptr;
    while (bpf_map_get_next_key(fd, previous, &key) == 0) {
      previous = &key;
      uint64_t socket_cookie = 0;
      if (bpf_map_lookup_elem(fd, &key, &socket_cookie) == 0) {
        snapshot.inbound_listeners.push_back(
            {AddressFrom(key.family, key.addr),
             key.slot == NW_SLOT_TUNNEL ? ListenerSlot::kTunnel : ListenerSlot::kInboundPlaintext,
             socket_cookie});
      }
    }
  }
  {
    const int fd = bpf_map__fd(skeleton_->maps.orig_dst_tuple);
    nw_tuple_key key{};
    nw_tuple_key* previous = nullptr;
    while (bpf_map_get_next_key(fd, previous, &key) == 0) {
      previous = &key;
      ++snapshot.pending_original_destinations;
    }
  }
  {
    const int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return LibbpfStatus(cpus, "count possible CPUs");
    std::vector<uint64_t> values(cpus);
    const int fd = bpf_map__fd(skeleton_->maps.counters);
    for (uint32_t index = 0; index < NW_COUNTER_MAX; ++index) {
      if (bpf_map_lookup_elem(fd, &index, values.data()) != 0) {
        return ErrnoStatus(errno, "read counters");
      }
      uint64_t total = 0;
      for (uint64_t value : values) total += value;
      snapshot.counters[CounterName(index)] = total;
    }
  }
  if (DIR* dir = opendir(absl::StrCat(pin_path_, "/netns").c_str()); dir != nullptr) {
    while (dirent* entry = readdir(dir)) {
      uint64_t cookie = 0;
      if (absl::SimpleAtoi(entry->d_name, &cookie)) snapshot.linked_netns_cookies.push_back(cookie);
    }
    closedir(dir);
  }
  return snapshot;
}

absl::Status CaptureLoader::DetachAll() {
  absl::Status result;
  {
    absl::MutexLock lock(&mutex_);
    for (bpf_link* link : cgroup_links_) {
      bpf_link__unpin(link);
      bpf_link__destroy(link);
    }
    cgroup_links_.clear();
    for (auto& [cookie, link] : netns_links_) {
      bpf_link__unpin(link);
      bpf_link__destroy(link);
    }
    netns_links_.clear();
  }
  // Whatever else is pinned under our directories (links of pods never adopted) goes too.
  for (const char* sub : {"/links", "/netns", "/maps"}) {
    const std::string dir_path = absl::StrCat(pin_path_, sub);
    if (DIR* dir = opendir(dir_path.c_str()); dir != nullptr) {
      while (dirent* entry = readdir(dir)) {
        if (entry->d_name[0] == '.') continue;
        const std::string path = absl::StrCat(dir_path, "/", entry->d_name);
        if (unlink(path.c_str()) != 0 && result.ok()) {
          result = ErrnoStatus(errno, absl::StrCat("unpin ", path));
        }
      }
      closedir(dir);
    }
    if (rmdir(dir_path.c_str()) != 0 && errno != ENOENT && result.ok()) {
      result = ErrnoStatus(errno, absl::StrCat("rmdir ", dir_path));
    }
  }
  if (rmdir(pin_path_.c_str()) != 0 && errno != ENOENT && result.ok()) {
    result = ErrnoStatus(errno, absl::StrCat("rmdir ", pin_path_));
  }
  return result;
}

int CaptureLoader::SkLookupProgramFd() const {
  return bpf_program__fd(skeleton_->progs.nw_sk_lookup);
}
int CaptureLoader::InboundListenersMapFd() const {
  return bpf_map__fd(skeleton_->maps.inbound_socks);
}
int CaptureLoader::PodAddressesMapFd() const { return bpf_map__fd(skeleton_->maps.pod_addrs); }

}  // namespace nodeward::bpf
