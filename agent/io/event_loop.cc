#include "agent/io/event_loop.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/io/heap_trim.h"

namespace nodeward::io {
namespace {

// Completions that belong to no handler: linked timeouts, cancel requests.
constexpr EventLoop::OpId kUntracked = 0;
constexpr unsigned kCompletionBatch = 256;

__kernel_timespec KernelTimespec(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  const std::int64_t nanos = absl::ToInt64Nanoseconds(duration);
  __kernel_timespec spec{};
  spec.tv_sec = nanos / 1'000'000'000;
  spec.tv_nsec = nanos % 1'000'000'000;
  return spec;
}

absl::Status ErrnoStatus(absl::string_view what, int error) {
  return absl::Status(absl::ErrnoToStatusCode(error), absl::StrCat(what, ": ", strerror(error)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const Options& options) {
  std::unique_ptr<EventLoop> loop(new EventLoop());
  loop->owner_ = std::this_thread::get_id();

  // Deferred task running keeps completion work inside our own io_uring_enter calls (no IPIs,
  // no EINTR in unrelated syscalls); it needs SINGLE_ISSUER. Older kernels reject the flags with
  // EINVAL, so fall back step by step.
  std::vector<unsigned> attempts;
  if (options.prefer_deferred_taskrun) {
    attempts.push_back(IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
                       IORING_SETUP_DEFER_TASKRUN);
  }
  attempts.push_back(IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN);
  attempts.push_back(0);
  int rc = -EINVAL;
  for (unsigned flags : attempts) {
    io_uring_params params{};
    params.flags = flags;
    rc = io_uring_queue_init_params(options.queue_depth, &loop->ring_, &params);
    if (rc == 0) {
      loop->deferred_taskrun_ = (flags & IORING_SETUP_DEFER_TASKRUN) != 0;
      break;
    }
    if (rc != -EINVAL) break;
  }
  if (rc < 0) return ErrnoStatus("io_uring_queue_init", -rc);
  loop->ring_ready_ = true;

  auto buffers =
      BufferRing::Create(&loop->ring_, /*group_id=*/0, options.buffer_count, options.buffer_size);
  if (!buffers.ok()) return buffers.status();
  loop->buffers_ = std::move(*buffers);
  loop->buffers_->set_on_recycle(&EventLoop::OnBufferRecycled, loop.get());

  loop->wakeup_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (loop->wakeup_fd_ < 0) return ErrnoStatus("eventfd", errno);
  loop->ArmWakeup();
  if (options.idle_trim_interval > absl::ZeroDuration()) {
    loop->ArmIdleTrim(options.idle_trim_interval);
  }
  return loop;
}

void EventLoop::ArmIdleTrim(absl::Duration interval) {
  Timer(interval, [this, interval](Completion& completion) {
    if (completion.result == -ECANCELED) return;
    // The timer's own completion is the only one since the last look: nothing moved.
    const bool idle = completions_ - completions_at_last_check_ <= 1;
    completions_at_last_check_ = completions_;
    if (!idle) {
      trimmed_since_activity_ = false;
    } else if (!trimmed_since_activity_) {
      trimmed_since_activity_ = true;
      TrimIdleMemory();
    }
    ArmIdleTrim(interval);
  });
}

void EventLoop::TrimIdleMemory() {
  // With DEFER_TASKRUN the kernel fills provided buffers only inside io_uring_enter on this
  // thread, so no receive can be writing into one while its pages are dropped. Without it,
  // task work may run at any return to user space: leave the buffers alone then.
  if (deferred_taskrun_) buffers_->ReleaseFreePages();
  ReleaseFreeHeapMemory();
  ++idle_trims_;
}

EventLoop::~EventLoop() {
  // Handlers own connections, which own ring buffers: drop them while the ring still exists.
  // Move the table out first because destructors may still cancel operations.
  auto operations = std::move(operations_);
  operations.clear();
  deferred_.clear();
  buffer_waiters_.clear();
  {
    absl::MutexLock lock(&posted_mutex_);
    posted_.clear();
  }
  buffers_.reset();
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (wakeup_fd_ >= 0) close(wakeup_fd_);
}

io_uring_sqe* EventLoop::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    // The submission queue is full: hand it to the kernel now rather than fail the operation.
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

EventLoop::OpId EventLoop::Register(Handler handler, io_uring_sqe* sqe) {
  const OpId id = next_id_++;
  auto operation = std::make_unique<Operation>();
  operation->handler = std::move(handler);
  operations_.emplace(id, std::move(operation));
  io_uring_sqe_set_data64(sqe, id);
  return id;
}

EventLoop::OpId EventLoop::AcceptMultishot(int listen_fd, Handler handler, int flags) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, flags);
  return Register(std::move(handler), sqe);
}

EventLoop::OpId EventLoop::RecvMultishot(int fd, std::uint32_t limit, Handler handler) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
  // The total byte cap of a multishot receive lives in sqe->optlen (kernel 6.17+), which
  // liburing 2.3 only knows under its older name in the same union.
  if (limit > 0 && receive_limit_supported_) sqe->file_index = limit;
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = buffers_->group_id();
  return Register(std::move(handler), sqe);
}

EventLoop::OpId EventLoop::SendMessage(int fd, const msghdr* message, int flags, Handler handler) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_sendmsg(sqe, fd, message, static_cast<unsigned>(flags) | MSG_NOSIGNAL);
  return Register(std::move(handler), sqe);
}

EventLoop::OpId EventLoop::Connect(int fd, const sockaddr* address, socklen_t length,
                                   absl::Duration timeout, Handler handler) {
  return SubmitWithTimeout(
      [&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, address, length); }, timeout,
      std::move(handler));
}

EventLoop::OpId EventLoop::Poll(int fd, unsigned events, absl::Duration timeout, Handler handler) {
  return SubmitWithTimeout([&](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, events); },
                           timeout, std::move(handler));
}

EventLoop::OpId EventLoop::SubmitWithTimeout(absl::FunctionRef<void(io_uring_sqe*)> prepare,
                                             absl::Duration timeout, Handler handler) {
  // The operation and its linked timeout must reach the kernel in the same submission.
  if (io_uring_sq_space_left(&ring_) < 2) io_uring_submit(&ring_);
  io_uring_sqe* sqe = GetSqe();
  prepare(sqe);
  sqe->flags |= IOSQE_IO_LINK;
  const OpId id = Register(std::move(handler), sqe);
  Operation& operation = *operations_.at(id);
  operation.timeout = KernelTimespec(timeout);
  io_uring_sqe* timeout_sqe = GetSqe();
  io_uring_prep_link_timeout(timeout_sqe, &operation.timeout, 0);
  io_uring_sqe_set_data64(timeout_sqe, kUntracked);
  return id;
}

EventLoop::OpId EventLoop::Shutdown(int fd, int how, Handler handler) {
  // The kernel never runs IORING_OP_SHUTDOWN inline: every one goes to an io-wq worker, a
  // thread wakeup and two context switches per closed connection (make bench's new-connection
  // rate). shutdown(2) on a socket does not block, so it is issued here and only its handler
  // waits for the end of the batch, as a completion would.
  const int result = ::shutdown(fd, how) == 0 ? 0 : -errno;
  const OpId id = next_id_++;
  Defer([handler = std::move(handler), result]() mutable {
    Completion completion;
    completion.result = result;
    handler(completion);
  });
  return id;
}

EventLoop::OpId EventLoop::Timer(absl::Duration delay, Handler handler) {
  io_uring_sqe* sqe = GetSqe();
  const OpId id = Register(std::move(handler), sqe);
  Operation& operation = *operations_.at(id);
  operation.timeout = KernelTimespec(delay);
  io_uring_prep_timeout(sqe, &operation.timeout, 0, 0);
  io_uring_sqe_set_data64(sqe, id);
  return id;
}

void EventLoop::Cancel(OpId id) {
  if (!operations_.contains(id)) return;
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, id, 0);
  io_uring_sqe_set_data64(sqe, kUntracked);
}

void EventLoop::WhenBuffersAvailable(absl::AnyInvocable<void()> task) {
  // A receive's -ENOBUFS can be dispatched after the same batch already gave buffers back
  // (its data completions came first): waiting for the next recycle then waits forever.
  if (buffers_->available() > 0) {
    deferred_.push_back(std::move(task));
    return;
  }
  buffer_waiters_.push_back(std::move(task));
}

void EventLoop::OnBufferRecycled(void* context) {
  auto* loop = static_cast<EventLoop*>(context);
  if (loop->buffer_waiters_.empty()) return;
  // Restarting receives from inside a release would re-enter connection code; defer it.
  for (auto& waiter : loop->buffer_waiters_) loop->deferred_.push_back(std::move(waiter));
  loop->buffer_waiters_.clear();
}

void EventLoop::ArmWakeup() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_multishot(sqe, wakeup_fd_, POLLIN);
  Register(
      [this](Completion& completion) {
        std::uint64_t ignored;
        // Resets the counter; the multishot poll fires again on the next write.
        while (read(wakeup_fd_, &ignored, sizeof(ignored)) > 0) {
        }
        RunPosted();
        if (!completion.more()) ArmWakeup();
      },
      sqe);
}

void EventLoop::Post(absl::AnyInvocable<void()> task) {
  bool signal = false;
  {
    absl::MutexLock lock(&posted_mutex_);
    posted_.push_back(std::move(task));
    signal = !wakeup_signalled_;
    wakeup_signalled_ = true;
  }
  if (signal) eventfd_write(wakeup_fd_, 1);
}

void EventLoop::Stop() {
  stop_requested_.store(true, std::memory_order_release);
  eventfd_write(wakeup_fd_, 1);
}

void EventLoop::RunPosted() {
  std::vector<absl::AnyInvocable<void()>> tasks;
  {
    absl::MutexLock lock(&posted_mutex_);
    tasks.swap(posted_);
    wakeup_signalled_ = false;
  }
  for (auto& task : tasks) task();
}

void EventLoop::RunDeferred() {
  // Tasks may defer more tasks; run until quiet.
  while (!deferred_.empty()) {
    auto tasks = std::move(deferred_);
    deferred_.clear();
    for (auto& task : tasks) task();
  }
}

void EventLoop::Dispatch(const io_uring_cqe& cqe) {
  const OpId id = cqe.user_data;
  ++completions_;
  Completion completion;
  completion.result = cqe.res;
  completion.flags = cqe.flags;
  if ((cqe.flags & IORING_CQE_F_BUFFER) != 0) {
    const auto buffer_id = static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    // A buffer reported without data goes straight back (it is recycled on destruction).
    completion.buffer = buffers_->Claim(buffer_id, cqe.res > 0 ? cqe.res : 0);
  }
  if (id == kUntracked || id == LIBURING_UDATA_TIMEOUT) return;
  auto it = operations_.find(id);
  if (it == operations_.end()) return;
  if ((cqe.flags & IORING_CQE_F_MORE) != 0) {
    // The handler may register operations (rehashing the table) but the Operation itself is
    // stable on the heap.
    Operation* operation = it->second.get();
    operation->handler(completion);
  } else {
    std::unique_ptr<Operation> operation = std::move(it->second);
    operations_.erase(it);
    operation->handler(completion);
  }
}

absl::Status EventLoop::RunOnce(absl::Duration max_wait) {
  RunDeferred();
  __kernel_timespec wait = KernelTimespec(max_wait);
  io_uring_cqe* first = nullptr;
  int rc = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &wait, nullptr);
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
    return ErrnoStatus("io_uring_submit_and_wait_timeout", -rc);
  }
  io_uring_cqe* cqes[kCompletionBatch];
  io_uring_cqe batch[kCompletionBatch];
  for (;;) {
    const unsigned count = io_uring_peek_batch_cqe(&ring_, cqes, kCompletionBatch);
    if (count == 0) break;
    // Copy first so handlers can submit (and the kernel can post) while we dispatch.
    for (unsigned i = 0; i < count; ++i) batch[i] = *cqes[i];
    io_uring_cq_advance(&ring_, count);
    for (unsigned i = 0; i < count; ++i) Dispatch(batch[i]);
    if (count < kCompletionBatch) break;
  }
  RunDeferred();
  return absl::OkStatus();
}

absl::Status EventLoop::Run() {
  while (!stop_requested_.load(std::memory_order_acquire)) {
    absl::Status status = RunOnce(absl::Seconds(1));
    if (!status.ok()) return status;
  }
  stop_requested_.store(false, std::memory_order_release);
  io_uring_submit(&ring_);
  return absl::OkStatus();
}

absl::StatusOr<bool> EventLoop::RunUntil(absl::FunctionRef<bool()> done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    const absl::Duration remaining = deadline - absl::Now();
    if (remaining <= absl::ZeroDuration()) return false;
    absl::Status status = RunOnce(std::min(remaining, absl::Milliseconds(50)));
    if (!status.ok()) return status;
  }
  return true;
}

}  // namespace nodeward::io
