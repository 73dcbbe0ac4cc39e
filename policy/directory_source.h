// Configuration from a directory of YAML/JSON files (*.yaml, *.yml, *.json, recursively;
// entries starting with "." are skipped, which also reads a mounted ConfigMap once through
// its symlinks). Reloaded on change (inotify, debounced) and swapped atomically; a change
// that does not load keeps the last good snapshot and is reported in Status().
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "policy/limits.h"
#include "policy/resources.h"
#include "policy/snapshot.h"
#include "policy/source.h"

namespace nodeward::policy {

// Parses every configuration file under `directory`, all or nothing. Errors name file:line.
// A file over limits.max_file_bytes, files over max_directory_bytes together, or a kind over
// its count is refused before (or as soon as) it would be parsed.
absl::StatusOr<ResourceSet> LoadDirectory(const std::string& directory,
                                          const ConfigLimits& limits = {});

class DirectorySource : public ConfigSource {
 public:
  struct Options {
    std::string directory;
    SnapshotOptions snapshot;
    // Editors and ConfigMap updates touch several files in a burst: wait this long after the
    // last change before reloading.
    absl::Duration debounce = absl::Milliseconds(200);
  };

  // Loads the directory once (failing if that load fails), then watches it.
  static absl::StatusOr<std::unique_ptr<DirectorySource>> Start(Options options);
  ~DirectorySource() override;

  // Reloads now, outside the watch: the outcome is also what Status() reports.
  absl::Status Reload();

  std::shared_ptr<const Snapshot> Current() const override { return publisher_.Current(); }
  uint64_t Subscribe(Callback callback) override { return publisher_.Subscribe(callback); }
  void Unsubscribe(uint64_t subscription) override { publisher_.Unsubscribe(subscription); }
  SourceStatus Status() const override { return publisher_.Status(); }

 private:
  explicit DirectorySource(Options options);
  // Adds watches for the directory and its subdirectories; false when the root is missing.
  bool ArmWatches();
  void Watch();

  Options options_;
  SnapshotPublisher publisher_;
  absl::Mutex reload_mutex_;  // one reload at a time, so generations stay in order
  uint64_t generation_ ABSL_GUARDED_BY(reload_mutex_) = 0;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd that wakes the watch thread to exit
  bool root_watched_ = false;
  std::thread watcher_;
};

}  // namespace nodeward::policy
