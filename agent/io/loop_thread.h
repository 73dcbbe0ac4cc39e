// An EventLoop on a thread of its own: the ring is created on that thread (SINGLE_ISSUER binds
// it there) and runs until Stop(). A node agent starts one per worker core.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/io/event_loop.h"

namespace nodeward::io {

class LoopThread {
 public:
  static absl::StatusOr<std::unique_ptr<LoopThread>> Start(
      const EventLoop::Options& options = EventLoop::Options{});
  // Stops and joins.
  ~LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  // Thread safe; the task runs on the loop thread.
  void Post(absl::AnyInvocable<void()> task) { loop_->Post(std::move(task)); }
  // Only touch the loop from its own thread (e.g. inside a posted task).
  EventLoop& loop() { return *loop_; }
  // Ends the loop and joins; returns how Run() ended. Idempotent.
  absl::Status Stop();

 private:
  LoopThread() = default;

  std::thread thread_;
  std::unique_ptr<EventLoop> loop_;
  absl::Status run_status_;
  bool stopped_ = false;
};

}  // namespace nodeward::io
