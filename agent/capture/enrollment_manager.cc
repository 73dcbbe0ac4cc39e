// Over 600 lines on purpose: enroll, unenroll, restore after a restart and the address watch
// all change the same enrollment table and its BPF maps under one lock, in an order that must
// stay consistent (steer before persist, forget before close).
#include "agent/capture/enrollment_manager.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bpf/nodeward_maps.h"
#include "common/errno_status.h"
#include "common/files.h"
#include "common/log.h"

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

namespace nodeward::capture {
namespace {

using ::nodeward::bpf::ListenerSlot;

constexpr char kStateSuffix[] = ".binpb";

void Keep(absl::Status& first, absl::Status next) {
  if (first.ok() && !next.ok()) first = std::move(next);
}

absl::StatusOr<int> OpenNetns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open netns ", path));
  struct statfs info {};
  if (fstatfs(fd, &info) != 0 || static_cast<long>(info.f_type) != NSFS_MAGIC ||
      ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a network namespace"));
  }
  return fd;
}

bool SameFile(int fd_a, int fd_b) {
  struct stat a {};
  struct stat b {};
  return fstat(fd_a, &a) == 0 && fstat(fd_b, &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// Runs inside the pod netns. The listeners bind loopback: outbound connects are rewritten to
// it, and sk_lookup hands inbound connections to them whatever address they are bound to.
absl::StatusOr<int> CreateListener(int family, uint16_t port) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "listener socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // Accepted connections inherit it: the relay forwards at once, with no call per connection.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  SocketAddress address;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    address.ip = *IpAddress::Parse("::1");
  } else {
    address.ip = IpAddress::V4(htonl(INADDR_LOOPBACK));
  }
  address.port = port;
  sockaddr_storage storage;
  socklen_t length = address.ToSockaddr(&storage);
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, 4096) != 0) {
    int error = errno;
    close(fd);
    return ErrnoStatus(error, absl::StrCat("listen on ", address.ToString(), " in pod netns"));
  }
  return fd;
}

bool IsSafeFileName(absl::string_view name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

}  // namespace

struct EnrollmentManager::Enrollment {
  std::shared_ptr<const CapturedPod> pod;
  v1::EnrolledPod record;
  std::vector<IpAddress> addresses;  // steered: the listed ones and every other the pod has
  std::vector<uint64_t> listener_ids;
  // Inbound listener fds per family (-1: none), owned by their InPodListener.
  int plaintext_v4 = -1, tunnel_v4 = -1, plaintext_v6 = -1, tunnel_v6 = -1;
  int watch_fd = -1;  // address changes of the pod's netns
  uint64_t watch_id = 0;
};

namespace {

// Epoll ids of address watches have this bit set; listener ids never do.
constexpr uint64_t kWatchIdBit = uint64_t{1} << 63;

}  // namespace

absl::StatusOr<PodMetadata> ValidateEnrollRequest(const v1::EnrollRequest& request) {
  if (!IsSafeFileName(request.uid())) {
    return absl::InvalidArgumentError(
        absl::StrCat("uid \"", request.uid(), "\" must be 1-200 of [A-Za-z0-9._-]"));
  }
  if (request.netns_path().empty() || request.netns_path().front() != '/') {
    return absl::InvalidArgumentError("netns_path must be an absolute path");
  }
  PodMetadata metadata;
  metadata.netns_path = request.netns_path();
  metadata.namespace_name = request.namespace_();
  metadata.name = request.name().empty() ? request.uid() : request.name();
  metadata.uid = request.uid();
  metadata.service_account = request.service_account();
  for (const std::string& ip : request.ips()) {
    absl::StatusOr<IpAddress> address = IpAddress::Parse(ip);
    if (!address.ok()) return address.status();
    if (address->IsLoopback() || address->IsV4Mapped()) {
      return absl::InvalidArgumentError(absl::StrCat("pod address ", ip, " is not a pod address"));
    }
    metadata.ips.push_back(*address);
  }
  metadata.labels.insert(request.labels().begin(), request.labels().end());
  return metadata;
}

absl::StatusOr<std::unique_ptr<EnrollmentManager>> EnrollmentManager::Create(
    bpf::CaptureDataplane* dataplane, ConnectionHandler* handler, NetnsExecutor* executor,
    const EnrollmentOptions& options) {
  if (absl::Status status = MakePrivateDirectories(options.state_dir); !status.ok()) return status;
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return ErrnoStatus(errno, "epoll_create1");
  int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = 0;
  if (wake_fd < 0 || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) != 0) {
    int error = errno;
    if (wake_fd >= 0) close(wake_fd);
    close(epoll_fd);
    return ErrnoStatus(error, "address watch wake-up");
  }
  return std::unique_ptr<EnrollmentManager>(
      new EnrollmentManager(dataplane, handler, executor, options, epoll_fd, wake_fd));
}

EnrollmentManager::EnrollmentManager(bpf::CaptureDataplane* dataplane, ConnectionHandler* handler,
                                     NetnsExecutor* executor, EnrollmentOptions options,
                                     int epoll_fd, int wake_fd)
    : dataplane_(dataplane),
      handler_(handler),
      executor_(executor),
      options_(std::move(options)),
      epoll_fd_(epoll_fd),
      wake_fd_(wake_fd) {
  watch_thread_ = std::thread([this] { WatchLoop(); });
}

EnrollmentManager::~EnrollmentManager() {
  Stop();
  close(wake_fd_);
  close(epoll_fd_);
}

void EnrollmentManager::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  watch_thread_.join();
  absl::MutexLock lock(&mutex_);
  for (auto& [id, listener] : listeners_) RemoveListener(*listener);
  listeners_.clear();
}

void EnrollmentManager::RemoveListener(InPodListener& listener) { listener.Close(); }

std::string EnrollmentManager::StatePath(const std::string& uid) const {
  return absl::StrCat(options_.state_dir, "/", uid, kStateSuffix);
}

absl::Status EnrollmentManager::Persist(const v1::EnrolledPod& record) const {
  const std::string path = StatePath(record.pod().uid());
  const std::string temporary = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out || !record.SerializeToOstream(&out) || !out.flush()) {
      return absl::InternalError(absl::StrCat("cannot write ", temporary));
    }
  }
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", temporary));
  }
  return absl::OkStatus();
}

absl::Status EnrollmentManager::ForgetNetns(uint64_t netns_cookie,
                                            const std::vector<IpAddress>& addresses) {
  // Outbound first: from here on new connects leave directly instead of being refused.
  absl::Status result = dataplane_->UnenrollNetns(netns_cookie);
  for (const IpAddress& address : addresses) Keep(result, dataplane_->RemovePodAddress(address));
  Keep(result, dataplane_->UnlinkNetns(netns_cookie));
  return result;
}

absl::Status EnrollmentManager::SteerAddress(Enrollment& enrollment, const IpAddress& address) {
  if (absl::Status added = dataplane_->AddPodAddress(address, enrollment.pod->netns_cookie());
      !added.ok()) {
    return added;
  }
  enrollment.addresses.push_back(address);
  const bool v6 = address.family == AF_INET6;
  const int plaintext = v6 ? enrollment.plaintext_v6 : enrollment.plaintext_v4;
  const int tunnel = v6 ? enrollment.tunnel_v6 : enrollment.tunnel_v4;
  // Without listeners of its family the address stays refused: fail closed.
  if (plaintext < 0 || tunnel < 0) return absl::OkStatus();
  if (absl::Status status =
          dataplane_->SetInboundListener(address, ListenerSlot::kInboundPlaintext, plaintext);
      !status.ok()) {
    return status;
  }
  return dataplane_->SetInboundListener(address, ListenerSlot::kTunnel, tunnel);
}

void EnrollmentManager::FollowAddresses(const std::string& uid) {
  auto it = pods_.find(uid);
  if (it == pods_.end()) return;
  Enrollment& enrollment = it->second;
  const CapturedPod& pod = *enrollment.pod;
  absl::StatusOr<std::vector<AddressChange>> changes = ReadAddressChanges(enrollment.watch_fd);
  std::vector<IpAddress> now;
  bool relist = !changes.ok();
  if (relist) {
    Log(LogLevel::kWarning, "pod=", pod.display_name(),
        " address watch: ", changes.status().ToString(), "; listing the addresses again");
    if (absl::Status listed = executor_->Run(pod.netns_fd(), [&] { now = LocalAddresses(); });
        !listed.ok()) {
      Log(LogLevel::kWarning, "pod=", pod.display_name(),
          " cannot list addresses: ", listed.ToString());
      return;
    }
  } else {
    now = enrollment.addresses;
    for (const AddressChange& change : *changes) {
      auto at = std::find(now.begin(), now.end(), change.address);
      if (change.added && at == now.end()) now.push_back(change.address);
      if (!change.added && at != now.end()) now.erase(at);
    }
  }
  bool changed = false;
  for (const IpAddress& address : now) {
    if (std::find(enrollment.addresses.begin(), enrollment.addresses.end(), address) !=
        enrollment.addresses.end()) {
      continue;
    }
    absl::Status steered = SteerAddress(enrollment, address);
    changed = true;
    Log(steered.ok() ? LogLevel::kInfo : LogLevel::kWarning, "pod=", pod.display_name(),
        " new address ", address.ToString(),
        steered.ok() ? " steered" : absl::StrCat(" refused: ", steered.ToString()));
  }
  // The listed addresses stay steered even when they leave an interface: they name the pod.
  const std::vector<IpAddress>& listed = pod.metadata().ips;
  for (auto at = enrollment.addresses.begin(); at != enrollment.addresses.end();) {
    const bool keep = std::find(now.begin(), now.end(), *at) != now.end() ||
                      std::find(listed.begin(), listed.end(), *at) != listed.end();
    if (keep) {
      ++at;
      continue;
    }
    if (absl::Status removed = dataplane_->RemovePodAddress(*at); !removed.ok()) {
      Log(LogLevel::kWarning, "pod=", pod.display_name(), " address ", at->ToString(),
          " gone, but its steering stays: ", removed.ToString());
      ++at;
      continue;
    }
    Log(LogLevel::kInfo, "pod=", pod.display_name(), " address ", at->ToString(), " gone");
    at = enrollment.addresses.erase(at);
    changed = true;
  }
  if (!changed) return;
  enrollment.record.clear_addresses();
  for (const IpAddress& address : enrollment.addresses) {
    enrollment.record.add_addresses(address.ToString());
  }
  if (absl::Status saved = Persist(enrollment.record); !saved.ok()) {
    Log(LogLevel::kWarning, "pod=", pod.display_name(), " ", saved.ToString());
  }
}

absl::StatusOr<v1::EnrolledPod> EnrollmentManager::Enroll(const v1::EnrollRequest& request) {
  absl::StatusOr<PodMetadata> metadata = ValidateEnrollRequest(request);
  if (!metadata.ok()) return metadata.status();
  absl::StatusOr<int> netns_fd = OpenNetns(metadata->netns_path);
  if (!netns_fd.ok()) return netns_fd.status();

  absl::MutexLock operation_lock(&operation_);
  if (auto existing = pods_.find(metadata->uid); existing != pods_.end()) {
    if (SameFile(existing->second.pod->netns_fd(), *netns_fd)) {
      close(*netns_fd);
      return existing->second.record;
    }
    Log(LogLevel::kInfo, "pod=", existing->second.pod->display_name(),
        " moved to a new netns, re-enrolling");
    if (absl::Status status = UnenrollLocked(metadata->uid); !status.ok()) {
      close(*netns_fd);
      return status;
    }
  }

  for (const auto& [uid, enrollment] : pods_) {
    if (SameFile(enrollment.pod->netns_fd(), *netns_fd)) {
      close(*netns_fd);
      return absl::AlreadyExistsError(
          absl::StrCat("netns ", metadata->netns_path, " is already enrolled as pod ",
                       enrollment.pod->display_name(), " (uid ", uid, ")"));
    }
  }

  // Everything that must happen inside the pod netns, in one visit.
  struct InPod {
    absl::Status status;
    uint64_t cookie = 0;
    std::vector<IpAddress> discovered;
    std::vector<std::pair<ListenerKind, int>> v4;  // fds
    std::vector<std::pair<ListenerKind, int>> v6;
    std::string v6_skipped;
    int watch_fd = -1;
    DeliveryRouting routing;
  } in_pod;
  const std::pair<ListenerKind, uint16_t> ports[] = {
      {ListenerKind::kOutbound, NW_PORT_OUTBOUND},
      {ListenerKind::kInboundPlaintext, NW_PORT_INBOUND_PLAINTEXT},
      {ListenerKind::kTunnel, NW_PORT_TUNNEL}};
  absl::Status entered = executor_->Run(*netns_fd, [&] {
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      in_pod.status = ErrnoStatus(errno, "socket in pod netns");
      return;
    }
    absl::StatusOr<uint64_t> cookie = NetnsCookieOfSocket(probe);
    close(probe);
    if (!cookie.ok()) {
      in_pod.status = cookie.status();
      return;
    }
    in_pod.cookie = *cookie;
    for (auto [kind, port] : ports) {
      absl::StatusOr<int> fd = CreateListener(AF_INET, port);
      if (!fd.ok()) {
        in_pod.status = fd.status();
        return;
      }
      in_pod.v4.emplace_back(kind, *fd);
    }
    for (auto [kind, port] : ports) {
      absl::StatusOr<int> fd = CreateListener(AF_INET6, port);
      if (!fd.ok()) {
        // A pod without IPv6 loopback: IPv4 only.
        in_pod.v6_skipped = fd.status().ToString();
        for (auto& [unused, v6_fd] : in_pod.v6) close(v6_fd);
        in_pod.v6.clear();
        break;
      }
      in_pod.v6.emplace_back(kind, *fd);
    }
    // Watching before listing: an address added in between is then seen by the watch.
    absl::StatusOr<int> watch = OpenAddressWatch();
    if (!watch.ok()) {
      in_pod.status = watch.status();
      return;
    }
    in_pod.watch_fd = *watch;
    in_pod.discovered = LocalAddresses();
    in_pod.routing = InstallDeliveryRouting();
  });
  auto close_listeners = [&] {
    for (auto& [kind, fd] : in_pod.v4) close(fd);
    for (auto& [kind, fd] : in_pod.v6) close(fd);
    if (in_pod.watch_fd >= 0) close(in_pod.watch_fd);
  };
  if (!entered.ok() || !in_pod.status.ok()) {
    close_listeners();
    close(*netns_fd);
    return entered.ok() ? in_pod.status : entered;
  }
  for (const auto& [uid, enrollment] : pods_) {
    if (enrollment.pod->netns_cookie() == in_pod.cookie) {
      close_listeners();
      close(*netns_fd);
      return absl::AlreadyExistsError(
          absl::StrCat("netns ", metadata->netns_path, " is already enrolled as pod ",
                       enrollment.pod->display_name(), " (uid ", uid, ")"));
    }
  }

  // The listed addresses are the pod's identity in policy; every other address it has is
  // steered too (link-local ones, a second interface's), so none reaches the application
  // without the pod's policy. Without listed ones the global addresses stand for the pod.
  std::vector<IpAddress> listed = metadata->ips;
  if (listed.empty()) {
    for (const IpAddress& ip : in_pod.discovered) {
      if (!ip.IsLinkLocal()) {
        listed.push_back(ip);
        metadata->ips.push_back(ip);
      }
    }
  }
  std::vector<IpAddress> extra;
  for (const IpAddress& ip : in_pod.discovered) {
    if (std::find(listed.begin(), listed.end(), ip) == listed.end()) extra.push_back(ip);
  }
  auto listener_fd = [&](int family, ListenerKind kind) {
    for (auto& [listener_kind, fd] : family == AF_INET6 ? in_pod.v6 : in_pod.v4) {
      if (listener_kind == kind) return fd;
    }
    return -1;
  };

  const uint64_t cookie = in_pod.cookie;
  const DeliveryRouting routing = in_pod.routing;
  auto pod = std::make_shared<const CapturedPod>(*std::move(metadata), *netns_fd, cookie, executor_,
                                                 dataplane_, routing);
  Enrollment enrollment;
  enrollment.pod = pod;
  enrollment.plaintext_v4 = listener_fd(AF_INET, ListenerKind::kInboundPlaintext);
  enrollment.tunnel_v4 = listener_fd(AF_INET, ListenerKind::kTunnel);
  enrollment.plaintext_v6 = listener_fd(AF_INET6, ListenerKind::kInboundPlaintext);
  enrollment.tunnel_v6 = listener_fd(AF_INET6, ListenerKind::kTunnel);
  // The listeners are served before anything steers connections to them. From here on the
  // Listener objects own the fds and `pod` owns the netns fd.
  absl::Status status;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto* group : {&in_pod.v4, &in_pod.v6}) {
      for (const auto& [kind, fd] : *group) {
        absl::StatusOr<SocketAddress> local = SocketAddress::LocalOf(fd);
        auto listener = std::make_shared<InPodListener>(
            fd, kind, pod, local.ok() ? local->ToString() : "?", dataplane_);
        enrollment.record.add_listeners(listener->address());
        const uint64_t id = next_listener_id_++;
        listeners_[id] = listener;
        enrollment.listener_ids.push_back(id);
        handler_->ServeListener(std::move(listener));
      }
    }
  }
  auto drop_listeners = [&] {
    absl::MutexLock lock(&mutex_);
    for (uint64_t id : enrollment.listener_ids) {
      auto it = listeners_.find(id);
      if (it == listeners_.end()) continue;
      RemoveListener(*it->second);
      listeners_.erase(it);
    }
  };

  const uint32_t pod_id = next_pod_id_++;
  for (const IpAddress& address : listed) {
    if (!status.ok()) break;
    if (address.family == AF_INET6 && in_pod.v6.empty()) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "pod address ", address.ToString(), " needs IPv6 listeners: ", in_pod.v6_skipped));
      break;
    }
    // The listeners go in before the netns is linked, so no inbound connection is refused
    // while enrollment is in progress.
    status = SteerAddress(enrollment, address);
  }
  for (const IpAddress& address : extra) {
    if (!status.ok()) break;
    if (absl::Status steered = SteerAddress(enrollment, address); !steered.ok()) {
      // Unsteered, the address is still refused (sk_lookup drops what it does not know).
      Log(LogLevel::kWarning, "pod=", pod->display_name(), " address ", address.ToString(),
          " not steered, connections to it are refused: ", steered.ToString());
    }
  }
  if (status.ok()) status = dataplane_->LinkNetns(cookie, pod->netns_fd());
  if (status.ok()) status = dataplane_->EnrollNetns(cookie, pod_id);

  *enrollment.record.mutable_pod() = request;
  enrollment.record.set_netns_cookie(cookie);
  for (const IpAddress& ip : pod->metadata().ips) enrollment.record.add_pod_ips(ip.ToString());
  for (const IpAddress& address : enrollment.addresses) {
    enrollment.record.add_addresses(address.ToString());
  }
  if (status.ok()) status = Persist(enrollment.record);
  enrollment.watch_fd = std::exchange(in_pod.watch_fd, -1);
  if (status.ok()) {
    enrollment.watch_id = kWatchIdBit | next_watch_id_++;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = enrollment.watch_id;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, enrollment.watch_fd, &event) != 0) {
      status = ErrnoStatus(errno, "watch pod addresses");
    }
  }
  if (!status.ok()) {
    close(enrollment.watch_fd);
    executor_->Run(pod->netns_fd(), [] { RemoveDeliveryRouting().IgnoreError(); }).IgnoreError();
    if (absl::Status rollback = ForgetNetns(cookie, enrollment.addresses); !rollback.ok()) {
      Log(LogLevel::kError, "pod=", pod->display_name(),
          " rollback of failed enrollment incomplete: ", rollback.ToString());
    }
    drop_listeners();
    return status;
  }
  Log(LogLevel::kInfo, "pod=", pod->display_name(), " enrolled netns_cookie=", cookie,
      " addresses=", absl::StrJoin(enrollment.record.addresses(), ","),
      in_pod.v6.empty() ? absl::StrCat(" ipv6=off (", in_pod.v6_skipped, ")") : "",
      routing.problem.empty()
          ? ""
          : absl::StrCat(" client addresses not kept on delivery: ", routing.problem));
  v1::EnrolledPod record = enrollment.record;
  watches_[enrollment.watch_id] = pod->metadata().uid;
  pods_[pod->metadata().uid] = std::move(enrollment);
  handler_->OnPodEnrolled(pod);
  return record;
}

absl::Status EnrollmentManager::Unenroll(const std::string& uid) {
  absl::MutexLock operation_lock(&operation_);
  return UnenrollLocked(uid);
}

absl::Status EnrollmentManager::UnenrollLocked(const std::string& uid) {
  auto it = pods_.find(uid);
  if (it == pods_.end()) return absl::NotFoundError(absl::StrCat("no enrolled pod with uid ", uid));
  Enrollment& enrollment = it->second;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, enrollment.watch_fd, nullptr);
  close(enrollment.watch_fd);
  watches_.erase(enrollment.watch_id);
  absl::Status result = ForgetNetns(enrollment.pod->netns_cookie(), enrollment.addresses);
  absl::Status routing;
  // A pod whose netns is already gone has nothing left to undo there.
  if (executor_->Run(enrollment.pod->netns_fd(), [&] { routing = RemoveDeliveryRouting(); }).ok()) {
    Keep(result, routing);
  }
  {
    absl::MutexLock lock(&mutex_);
    for (uint64_t id : enrollment.listener_ids) {
      auto listener = listeners_.find(id);
      if (listener == listeners_.end()) continue;
      RemoveListener(*listener->second);
      listeners_.erase(listener);
    }
  }
  if (unlink(StatePath(uid).c_str()) != 0 && errno != ENOENT) {
    Keep(result, ErrnoStatus(errno, absl::StrCat("remove ", StatePath(uid))));
  }
  Log(LogLevel::kInfo, "pod=", enrollment.pod->display_name(), " unenrolled",
      result.ok() ? "" : absl::StrCat(" with errors: ", result.ToString()));
  handler_->OnPodUnenrolled(enrollment.pod);
  pods_.erase(it);
  return result;
}

absl::Status EnrollmentManager::UnenrollAll() {
  absl::MutexLock operation_lock(&operation_);
  std::vector<std::string> uids;
  for (const auto& [uid, enrollment] : pods_) uids.push_back(uid);
  absl::Status result;
  for (const std::string& uid : uids) Keep(result, UnenrollLocked(uid));
  return result;
}

std::vector<v1::EnrolledPod> EnrollmentManager::List() const {
  absl::MutexLock operation_lock(&operation_);
  std::vector<v1::EnrolledPod> records;
  for (const auto& [uid, enrollment] : pods_) records.push_back(enrollment.record);
  std::sort(records.begin(), records.end(),
            [](const auto& a, const auto& b) { return a.pod().uid() < b.pod().uid(); });
  return records;
}

absl::Status EnrollmentManager::Restore() {
  std::vector<v1::EnrolledPod> saved;
  if (DIR* dir = opendir(options_.state_dir.c_str()); dir != nullptr) {
    while (dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (!absl::EndsWith(name, kStateSuffix)) continue;
      const std::string path = absl::StrCat(options_.state_dir, "/", name);
      std::ifstream in(path, std::ios::binary);
      v1::EnrolledPod record;
      if (!in || !record.ParseFromIstream(&in)) {
        Log(LogLevel::kWarning, "dropping unreadable pod state ", path);
        unlink(path.c_str());
        continue;
      }
      saved.push_back(std::move(record));
    }
    closedir(dir);
  } else {
    return ErrnoStatus(errno, absl::StrCat("read state dir ", options_.state_dir));
  }

  for (const v1::EnrolledPod& record : saved) {
    absl::StatusOr<v1::EnrolledPod> restored = Enroll(record.pod());
    if (restored.ok()) continue;
    Log(LogLevel::kWarning, "pod=", record.pod().namespace_(), "/", record.pod().name(),
        " not restored reason=", restored.status().ToString());
    unlink(StatePath(record.pod().uid()).c_str());
  }

  // Whatever the kernel still holds for a netns no pod owns any more goes now.
  absl::StatusOr<bpf::DataplaneSnapshot> snapshot = dataplane_->Snapshot();
  if (!snapshot.ok()) return snapshot.status();
  absl::flat_hash_map<uint64_t, bool> owned;
  {
    absl::MutexLock operation_lock(&operation_);
    for (const auto& [uid, enrollment] : pods_) owned[enrollment.pod->netns_cookie()] = true;
  }
  absl::Status result;
  for (const auto& entry : snapshot->enrolled) {
    if (!owned.contains(entry.netns_cookie)) {
      Log(LogLevel::kInfo, "removing stale enrollment netns_cookie=", entry.netns_cookie);
      Keep(result, dataplane_->UnenrollNetns(entry.netns_cookie));
    }
  }
  for (const auto& entry : snapshot->pod_addresses) {
    if (!owned.contains(entry.netns_cookie)) {
      Log(LogLevel::kInfo, "removing stale pod address ", entry.address.ToString());
      Keep(result, dataplane_->RemovePodAddress(entry.address));
    }
  }
  for (uint64_t cookie : snapshot->linked_netns_cookies) {
    if (!owned.contains(cookie)) {
      Log(LogLevel::kInfo, "removing stale sk_lookup link netns_cookie=", cookie);
      Keep(result, dataplane_->UnlinkNetns(cookie));
    }
  }
  return result;
}

void EnrollmentManager::WatchLoop() {
  epoll_event events[32];
  while (true) {
    int count = epoll_wait(epoll_fd_, events, 32, -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      Log(LogLevel::kError, "address watch stopped: ", ErrnoStatus(errno, "epoll_wait").ToString());
      return;
    }
    for (int i = 0; i < count; ++i) {
      // epoll_event is packed: copy the id out rather than bind a reference to it.
      const uint64_t id = events[i].data.u64;
      {
        absl::MutexLock lock(&mutex_);
        if (stopping_) return;
      }
      if (id == 0) continue;  // the wake-up
      absl::MutexLock operation_lock(&operation_);
      if (auto watch = watches_.find(id); watch != watches_.end()) FollowAddresses(watch->second);
    }
  }
}

}  // namespace nodeward::capture
