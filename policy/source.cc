#include "policy/source.h"

#include <utility>
#include <vector>

namespace nodeward::policy {

SnapshotPublisher::SnapshotPublisher(std::string description) {
  status_.description = std::move(description);
}

void SnapshotPublisher::Publish(std::shared_ptr<const Snapshot> snapshot) {
  absl::MutexLock delivery(&delivery_mutex_);
  std::vector<Callback> callbacks;
  {
    absl::MutexLock lock(&mutex_);
    current_ = snapshot;
    status_.generation = snapshot->generation();
    status_.last_success = status_.last_attempt = absl::Now();
    status_.last_error = absl::OkStatus();
    for (const auto& [id, callback] : subscribers_) callbacks.push_back(callback);
  }
  for (const Callback& callback : callbacks) callback(snapshot);
}

void SnapshotPublisher::RecordFailure(absl::Status error) {
  absl::MutexLock lock(&mutex_);
  status_.last_attempt = absl::Now();
  status_.last_error = std::move(error);
}

std::shared_ptr<const Snapshot> SnapshotPublisher::Current() const {
  absl::MutexLock lock(&mutex_);
  return current_;
}

uint64_t SnapshotPublisher::Subscribe(Callback callback) {
  absl::MutexLock delivery(&delivery_mutex_);
  std::shared_ptr<const Snapshot> current;
  uint64_t id;
  {
    absl::MutexLock lock(&mutex_);
    id = next_subscription_++;
    subscribers_[id] = callback;
    current = current_;
  }
  if (current != nullptr) callback(current);
  return id;
}

void SnapshotPublisher::Unsubscribe(uint64_t subscription) {
  absl::MutexLock delivery(&delivery_mutex_);
  absl::MutexLock lock(&mutex_);
  subscribers_.erase(subscription);
}

SourceStatus SnapshotPublisher::Status() const {
  absl::MutexLock lock(&mutex_);
  return status_;
}

}  // namespace nodeward::policy
