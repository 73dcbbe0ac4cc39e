#include "agent/io/loop_thread.h"

#include "absl/synchronization/notification.h"

namespace nodeward::io {

absl::StatusOr<std::unique_ptr<LoopThread>> LoopThread::Start(const EventLoop::Options& options) {
  std::unique_ptr<LoopThread> worker(new LoopThread());
  absl::Notification created;
  absl::Status create_status;
  LoopThread* raw = worker.get();
  worker->thread_ = std::thread([raw, options, &created, &create_status] {
    absl::StatusOr<std::unique_ptr<EventLoop>> loop = EventLoop::Create(options);
    if (!loop.ok()) {
      create_status = loop.status();
      created.Notify();
      return;
    }
    raw->loop_ = std::move(*loop);
    created.Notify();
    raw->run_status_ = raw->loop_->Run();
    // The ring belongs to this thread: tear it down here too.
    raw->loop_.reset();
  });
  created.WaitForNotification();
  if (!create_status.ok()) {
    worker->thread_.join();
    worker->stopped_ = true;
    return create_status;
  }
  return worker;
}

absl::Status LoopThread::Stop() {
  if (stopped_) return run_status_;
  stopped_ = true;
  loop_->Stop();
  thread_.join();
  return run_status_;
}

LoopThread::~LoopThread() { (void)Stop(); }

}  // namespace nodeward::io
