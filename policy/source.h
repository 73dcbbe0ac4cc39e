// What consumers (the agent, nodeward-sds, the admin API) see of a configuration source: the
// current immutable snapshot, notification of each new one, and the health of the source.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "policy/snapshot.h"

namespace nodeward::policy {

struct SourceStatus {
  std::string description;  // e.g. "directory /etc/nodeward/config"
  uint64_t generation = 0;  // of the snapshot in use; 0 before the first one
  absl::Time last_success = absl::InfinitePast();
  absl::Time last_attempt = absl::InfinitePast();
  // OK when the last attempt succeeded; otherwise why the snapshot in use is older than the
  // configuration the source sees.
  absl::Status last_error;
};

class ConfigSource {
 public:
  using Callback = std::function<void(std::shared_ptr<const Snapshot>)>;
  virtual ~ConfigSource() = default;

  // Null until the first configuration has loaded.
  virtual std::shared_ptr<const Snapshot> Current() const = 0;
  // `callback` runs with the current snapshot (if any) before this returns, then with every
  // new one, from the source's thread, one at a time and in order. Do not call Unsubscribe
  // from inside a callback.
  virtual uint64_t Subscribe(Callback callback) = 0;
  // After this returns the callback never runs again.
  virtual void Unsubscribe(uint64_t subscription) = 0;
  virtual SourceStatus Status() const = 0;
};

// The shared bookkeeping of every source: holds the snapshot in use, delivers new ones and
// records failures. Thread-safe.
class SnapshotPublisher : public ConfigSource {
 public:
  explicit SnapshotPublisher(std::string description);

  void Publish(std::shared_ptr<const Snapshot> snapshot);
  // A failed attempt: the snapshot in use stays, the error is kept for Status().
  void RecordFailure(absl::Status error);

  std::shared_ptr<const Snapshot> Current() const override;
  uint64_t Subscribe(Callback callback) override;
  void Unsubscribe(uint64_t subscription) override;
  SourceStatus Status() const override;

 private:
  // Held while callbacks run, so deliveries stay ordered and Unsubscribe can wait them out.
  mutable absl::Mutex delivery_mutex_ ABSL_ACQUIRED_BEFORE(mutex_);
  mutable absl::Mutex mutex_;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mutex_);
  SourceStatus status_ ABSL_GUARDED_BY(mutex_);
  std::map<uint64_t, Callback> subscribers_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_subscription_ ABSL_GUARDED_BY(mutex_) = 1;
};

}  // namespace nodeward::policy
