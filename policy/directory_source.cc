#include "policy/directory_source.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace nodeward::policy {
namespace {

namespace fs = std::filesystem;

bool Hidden(const fs::path& path) { return absl::StartsWith(path.filename().string(), "."); }

bool ConfigFile(const fs::path& path) {
  std::string extension = path.extension().string();
  return extension == ".yaml" || extension == ".yml" || extension == ".json";
}

// Lists config files and directories under `root`, sorted so loads are deterministic.
absl::Status Scan(const std::string& root, std::vector<fs::path>* files,
                  std::vector<fs::path>* directories) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    return absl::NotFoundError(absl::StrCat(root, " is not a directory"));
  }
  if (directories != nullptr) directories->push_back(root);
  fs::recursive_directory_iterator it(root, fs::directory_options::follow_directory_symlink, error);
  if (error) return absl::UnavailableError(absl::StrCat(root, ": ", error.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (error) return absl::UnavailableError(absl::StrCat(root, ": ", error.message()));
    const fs::directory_entry& entry = *it;
    if (Hidden(entry.path())) {
      if (entry.is_directory(error)) it.disable_recursion_pending();
      continue;
    }
    if (entry.is_directory(error)) {
      if (directories != nullptr) directories->push_back(entry.path());
    } else if (entry.is_regular_file(error) && ConfigFile(entry.path())) {
      if (files != nullptr) files->push_back(entry.path());
    }
  }
  if (error) return absl::UnavailableError(absl::StrCat(root, ": ", error.message()));
  if (files != nullptr) std::sort(files->begin(), files->end());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ResourceSet> LoadDirectory(const std::string& directory,
                                          const ConfigLimits& limits) {
  std::vector<fs::path> files;
  if (absl::Status status = Scan(directory, &files, nullptr); !status.ok()) return status;
  ResourceSet resources;
  size_t total_bytes = 0;
  for (const fs::path& file : files) {
    // Sizes are checked before reading: parsing is where a large file costs memory (a 26 MB
    // file of Services grew an agent by 170 MB).
    std::error_code error;
    const uintmax_t size = fs::file_size(file, error);
    if (error) return absl::UnavailableError(absl::StrCat(file.string(), ": ", error.message()));
    if (size > limits.max_file_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(file.string(), ": ", size, " bytes, over the limit of ",
                       limits.max_file_bytes, " bytes for one configuration file"));
    }
    total_bytes += size;
    if (total_bytes > limits.max_directory_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          directory, ": the configuration files are over the limit of ", limits.max_directory_bytes,
          " bytes together (reached at ", file.string(), ")"));
    }
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) {
      return absl::UnavailableError(absl::StrCat(file.string(), ": cannot read"));
    }
    if (absl::Status status = AppendYamlResources(text.str(), file.string(), resources);
        !status.ok()) {
      return status;
    }
    if (absl::Status status = CheckLimits(resources, limits); !status.ok()) {
      return absl::ResourceExhaustedError(
          absl::StrCat(directory, ": ", status.message(), " (reached at ", file.string(), ")"));
    }
  }
  return resources;
}

absl::StatusOr<std::unique_ptr<DirectorySource>> DirectorySource::Start(Options options) {
  std::unique_ptr<DirectorySource> source(new DirectorySource(std::move(options)));
  source->inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (source->inotify_fd_ < 0) {
    return absl::InternalError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
  }
  source->stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (source->stop_fd_ < 0) {
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  // Watch before the first load, so a change made during it is not missed.
  source->ArmWatches();
  if (absl::Status status = source->Reload(); !status.ok()) return status;
  source->watcher_ = std::thread([raw = source.get()] { raw->Watch(); });
  return source;
}

DirectorySource::DirectorySource(Options options)
    : options_(std::move(options)), publisher_(absl::StrCat("directory ", options_.directory)) {}

DirectorySource::~DirectorySource() {
  if (watcher_.joinable()) {
    uint64_t one = 1;
    // An eventfd write of 1 cannot fail short of a counter overflow; the thread also exits
    // on any poll error, so the join cannot hang.
    [[maybe_unused]] ssize_t written = write(stop_fd_, &one, sizeof(one));
    watcher_.join();
  }
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

bool DirectorySource::ArmWatches() {
  std::vector<fs::path> directories;
  if (!Scan(options_.directory, nullptr, &directories).ok()) {
    root_watched_ = false;
    return false;
  }
  constexpr uint32_t kEvents = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM |
                               IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
  // Re-adding a watched directory returns its existing descriptor, so this is idempotent.
  root_watched_ = inotify_add_watch(inotify_fd_, options_.directory.c_str(), kEvents) >= 0;
  for (const fs::path& directory : directories) {
    inotify_add_watch(inotify_fd_, directory.c_str(), kEvents);
  }
  return root_watched_;
}

absl::Status DirectorySource::Reload() {
  absl::MutexLock lock(&reload_mutex_);
  absl::StatusOr<ResourceSet> resources =
      LoadDirectory(options_.directory, options_.snapshot.limits);
  absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot =
      resources.ok() ? Snapshot::Build(*std::move(resources), options_.snapshot, generation_ + 1)
                     : absl::StatusOr<std::shared_ptr<const Snapshot>>(resources.status());
  if (!snapshot.ok()) {
    publisher_.RecordFailure(snapshot.status());
    return snapshot.status();
  }
  ++generation_;
  publisher_.Publish(*std::move(snapshot));
  return absl::OkStatus();
}

void DirectorySource::Watch() {
  alignas(inotify_event) char buffer[16 * 1024];
  // When the root disappears its watch goes with it: look for it again this often.
  const absl::Duration rearm_interval = absl::Seconds(1);
  bool pending = false;
  absl::Time deadline = absl::InfiniteFuture();
  while (true) {
    absl::Duration wait = pending ? std::max(deadline - absl::Now(), absl::ZeroDuration())
                                  : (root_watched_ ? absl::InfiniteDuration() : rearm_interval);
    int timeout_ms = wait == absl::InfiniteDuration()
                         ? -1
                         : static_cast<int>(absl::ToInt64Milliseconds(wait)) + 1;
    pollfd fds[2] = {{stop_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    int ready = poll(fds, 2, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0 || (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) return;
    if ((fds[1].revents & POLLIN) != 0) {
      while (true) {
        ssize_t length = read(inotify_fd_, buffer, sizeof(buffer));
        if (length <= 0) break;
        for (char* at = buffer; at < buffer + length;) {
          const auto* event = reinterpret_cast<const inotify_event*>(at);
          if ((event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0) {
            // Possibly the root itself: re-arming tells whether it still exists.
            root_watched_ = false;
          }
          at += sizeof(inotify_event) + event->len;
        }
      }
      pending = true;
      deadline = absl::Now() + options_.debounce;
      continue;
    }
    if (pending && absl::Now() >= deadline) {
      pending = false;
      ArmWatches();            // new subdirectories, or a root that came back
      Reload().IgnoreError();  // the failure is kept in Status() for the debug CLI
      continue;
    }
    if (!pending && !root_watched_ && ArmWatches()) {
      pending = true;
      deadline = absl::Now() + options_.debounce;
    }
  }
}

}  // namespace nodeward::policy
