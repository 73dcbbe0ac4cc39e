// One io_uring per worker thread. Everything the loop owns (connections, timers, buffers) is
// touched only from the thread that created it; other threads reach it through Post().
#pragma once

#include <linux/time_types.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/io/io_buffer.h"
#include "liburing.h"

namespace nodeward::io {

// What one CQE reports to the handler of the operation that produced it.
struct Completion {
  std::int32_t result = 0;  // >= 0 success value, < 0 is -errno
  std::uint32_t flags = 0;
  // Filled for receives that picked a provided buffer; the handler may keep it.
  IoBuffer buffer;

  // A multishot operation stays armed while this is true.
  bool more() const { return (flags & IORING_CQE_F_MORE) != 0; }
};

class EventLoop {
 public:
  using OpId = std::uint64_t;
  using Handler = absl::AnyInvocable<void(Completion&)>;

  struct Options {
    unsigned queue_depth = 1024;
    // Provided buffers for receives: memory for receives is count * size per loop, fixed. The
    // ring hands buffers out in FIFO order, so every one of them becomes resident under load:
    // 4 MiB per loop keeps an agent that has carried bulk traffic under 20 MiB (make bench).
    // 64 KiB a receive rather than 16 KiB: a quarter of the receives, completions and TLS
    // feeds per byte (make bench: 2.2 -> 1.95 CPU s/GB); small messages still take one each.
    std::uint32_t buffer_count = 64;
    std::uint32_t buffer_size = 64 * 1024;
    // SINGLE_ISSUER|DEFER_TASKRUN when the kernel has them; cleared for tests of the fallback.
    bool prefer_deferred_taskrun = true;
    // Checked this often (0: never): a loop that saw no completion in a whole interval gives
    // back the memory a burst left resident, the pages of its free receive buffers and the
    // heap's free pages, so an agent idle after bulk traffic is as small as a fresh one.
    absl::Duration idle_trim_interval = absl::ZeroDuration();
  };

  // Creates the ring in the calling thread, which becomes the only thread allowed to run it.
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const Options& options);
  static absl::StatusOr<std::unique_ptr<EventLoop>> Create() { return Create(Options{}); }
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs until Stop() is called. Returns an error only when the ring itself fails.
  absl::Status Run();
  // Runs until `done()` holds (checked after each batch of completions) or `timeout` passes;
  // returns whether `done()` held.
  absl::StatusOr<bool> RunUntil(absl::FunctionRef<bool()> done, absl::Duration timeout);
  // Waits at most `max_wait` for completions and dispatches them.
  absl::Status RunOnce(absl::Duration max_wait);

  // Thread safe.
  void Stop();
  void Post(absl::AnyInvocable<void()> task);
  bool InLoopThread() const { return std::this_thread::get_id() == owner_; }

  // Operations. Each handler runs on the loop thread, once per CQE; the last call for an
  // operation has !more(). Cancel() asks the kernel to stop an operation; its handler still sees
  // the final CQE (usually -ECANCELED), so resources a handler holds live until then.
  // `flags` for the accepted sockets (SOCK_CLOEXEC, SOCK_NONBLOCK).
  OpId AcceptMultishot(int listen_fd, Handler handler, int flags = SOCK_CLOEXEC);
  // A multishot receive. A non-zero `limit` ends it (final CQE) once that many bytes arrived,
  // so a paused consumer is never flooded; kernels without that feature fail it with -EINVAL,
  // after which the caller should call DisableReceiveLimit() and re-arm.
  OpId RecvMultishot(int fd, std::uint32_t limit, Handler handler);
  // `message` (and what it points to) must stay valid until the completion.
  OpId SendMessage(int fd, const msghdr* message, int flags, Handler handler);
  // A connect bounded by `timeout` (a linked timeout): past it the result is -ECANCELED.
  OpId Connect(int fd, const sockaddr* address, socklen_t length, absl::Duration timeout,
               Handler handler);
  // One poll for `events` (POLLOUT...) bounded by `timeout`; past it the result is -ECANCELED.
  OpId Poll(int fd, unsigned events, absl::Duration timeout, Handler handler);
  // shutdown(2) now; the handler runs after the current batch with its result (not cancellable).
  OpId Shutdown(int fd, int how, Handler handler);
  OpId Timer(absl::Duration delay, Handler handler);
  void Cancel(OpId id);

  // Runs `task` after the current batch of completions, on the loop thread.
  void Defer(absl::AnyInvocable<void()> task) { deferred_.push_back(std::move(task)); }
  // Runs `task` once a provided buffer is free again (after a receive ended with -ENOBUFS).
  void WhenBuffersAvailable(absl::AnyInvocable<void()> task);

  BufferRing& buffers() { return *buffers_; }
  // How many times an idle interval released memory (see Options::idle_trim_interval).
  std::uint64_t idle_trims() const { return idle_trims_; }
  bool deferred_taskrun() const { return deferred_taskrun_; }
  bool receive_limit_supported() const { return receive_limit_supported_; }
  void DisableReceiveLimit() { receive_limit_supported_ = false; }
  std::size_t pending_operations() const { return operations_.size(); }

 private:
  struct Operation {
    Handler handler;
    __kernel_timespec timeout{};  // read by the kernel at submission
  };

  EventLoop() = default;
  io_uring_sqe* GetSqe();
  OpId Register(Handler handler, io_uring_sqe* sqe);
  // An operation bounded by a linked timeout: past it, its result is -ECANCELED.
  OpId SubmitWithTimeout(absl::FunctionRef<void(io_uring_sqe*)> prepare, absl::Duration timeout,
                         Handler handler);
  void Dispatch(const io_uring_cqe& cqe);
  void ArmWakeup();
  void ArmIdleTrim(absl::Duration interval);
  void TrimIdleMemory();
  void RunPosted();
  void RunDeferred();
  static void OnBufferRecycled(void* context);

  io_uring ring_{};
  bool ring_ready_ = false;
  bool deferred_taskrun_ = false;
  bool receive_limit_supported_ = true;
  std::thread::id owner_;
  std::unique_ptr<BufferRing> buffers_;
  absl::flat_hash_map<OpId, std::unique_ptr<Operation>> operations_;
  OpId next_id_ = 1;
  std::vector<absl::AnyInvocable<void()>> deferred_;
  std::vector<absl::AnyInvocable<void()>> buffer_waiters_;

  // Completions dispatched, and the count when the idle-trim timer last looked.
  std::uint64_t completions_ = 0;
  std::uint64_t completions_at_last_check_ = 0;
  bool trimmed_since_activity_ = false;
  std::uint64_t idle_trims_ = 0;

  int wakeup_fd_ = -1;
  std::atomic<bool> stop_requested_{false};
  absl::Mutex posted_mutex_;
  std::vector<absl::AnyInvocable<void()>> posted_ ABSL_GUARDED_BY(posted_mutex_);
  bool wakeup_signalled_ ABSL_GUARDED_BY(posted_mutex_) = false;
};

}  // namespace nodeward::io
