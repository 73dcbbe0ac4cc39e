// The worker loops of a data plane (the agent's, the gateway's): starting them, asking every
// one of them something, and cutting what they carry.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/io/event_loop.h"
#include "agent/proxy/context.h"

namespace nodeward::proxy {

// `count` loops (0: one per core), each with its poster.
absl::StatusOr<std::vector<std::unique_ptr<Worker>>> StartWorkers(
    int count, const io::EventLoop::Options& loop);

// Runs `collect` on every worker's loop and gathers what each added; a loop that does not
// answer within `timeout` is left out.
template <typename T>
std::vector<T> GatherFromWorkers(const std::vector<std::unique_ptr<Worker>>& workers,
                                 absl::AnyInvocable<void(Worker&, std::vector<T>&)> collect,
                                 absl::Duration timeout) {
  struct Shared {
    absl::Mutex mutex;
    std::vector<T> out;
    std::size_t remaining = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->remaining = workers.size();
  auto collector =
      std::make_shared<absl::AnyInvocable<void(Worker&, std::vector<T>&)>>(std::move(collect));
  for (const auto& worker : workers) {
    Worker* w = worker.get();
    w->thread->Post([shared, collector, w] {
      std::vector<T> part;
      (*collector)(*w, part);
      absl::MutexLock lock(&shared->mutex);
      for (T& item : part) shared->out.push_back(std::move(item));
      --shared->remaining;
    });
  }
  absl::MutexLock lock(&shared->mutex);
  shared->mutex.AwaitWithTimeout(
      absl::Condition(
          +[](std::size_t* remaining) { return *remaining == 0; }, &shared->remaining),
      timeout);
  return shared->out;
}

// A live flow, for the debug CLI: its record with the bytes so far, and its age.
struct LiveConnection {
  AccessRecord record;
  absl::Duration age;
};
std::vector<LiveConnection> GatherConnections(const std::vector<std::unique_ptr<Worker>>& workers,
                                              absl::Duration timeout);

// Resets every flow and tunnel left on every worker, and waits (2 s at most) until each loop
// did.
void CutWorkers(const std::vector<std::unique_ptr<Worker>>& workers, const absl::Status& reason);

}  // namespace nodeward::proxy
