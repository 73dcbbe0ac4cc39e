// Byte chunks that move through the data plane without copies: a received chunk is a slot of
// the loop's provided-buffer ring, sent onward as is, and handed back to the kernel when the
// last holder lets go.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "liburing.h"

namespace nodeward::io {

class IoBuffer;

// A provided-buffer ring (IORING_REGISTER_PBUF_RING): `count` buffers of `size` bytes that the
// kernel picks from for multishot receives. Loop-thread only.
class BufferRing {
 public:
  static absl::StatusOr<std::unique_ptr<BufferRing>> Create(io_uring* ring, std::uint16_t group_id,
                                                            std::uint32_t count,
                                                            std::uint32_t size);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  std::uint16_t group_id() const { return group_id_; }
  std::uint32_t buffer_size() const { return size_; }
  std::uint32_t count() const { return count_; }
  // Buffers currently owned by the kernel (free for receives).
  std::uint32_t available() const { return available_; }

  // Takes ownership of buffer `id` that the kernel filled with `length` bytes.
  IoBuffer Claim(std::uint16_t id, std::size_t length);
  // Hands `id` back to the kernel.
  void Recycle(std::uint16_t id);
  // When every buffer is free, drops their pages (they come back zero-filled on first use).
  // Only safe while the kernel cannot be filling one, i.e. on the loop thread outside
  // io_uring_enter with DEFER_TASKRUN. Returns whether it did.
  bool ReleaseFreePages();

  // Called after each recycle; the loop uses it to restart receives that ran out of buffers.
  void set_on_recycle(void (*callback)(void*), void* context) {
    on_recycle_ = callback;
    on_recycle_context_ = context;
  }

 private:
  BufferRing(io_uring* ring, std::uint16_t group_id, std::uint32_t count, std::uint32_t size);

  io_uring* ring_;
  std::uint16_t group_id_;
  std::uint32_t count_;
  std::uint32_t size_;
  std::uint32_t available_ = 0;
  io_uring_buf_ring* entries_ = nullptr;
  std::size_t entries_bytes_ = 0;
  std::uint8_t* storage_ = nullptr;
  std::size_t storage_bytes_ = 0;
  bool registered_ = false;
  void (*on_recycle_)(void*) = nullptr;
  void* on_recycle_context_ = nullptr;
};

// A move-only chunk: either a claimed ring slot or heap bytes. Consume() drops a prefix (after
// a partial send); the memory is released when the chunk is destroyed.
class IoBuffer {
 public:
  IoBuffer() = default;
  static IoBuffer Copy(absl::Span<const std::uint8_t> bytes);
  // Heap bytes [offset, offset + size) of `storage`, taken over as they are.
  static IoBuffer Adopt(std::unique_ptr<std::uint8_t[]> storage, std::size_t offset,
                        std::size_t size);
  // Up to `capacity` heap bytes written in place by `fill`, which returns how many it wrote:
  // for producers that can write straight into the chunk they hand on.
  static IoBuffer Filled(std::size_t capacity,
                         absl::FunctionRef<std::size_t(absl::Span<std::uint8_t>)> fill);

  IoBuffer(IoBuffer&& other) noexcept { *this = std::move(other); }
  IoBuffer& operator=(IoBuffer&& other) noexcept;
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  ~IoBuffer() { Release(); }

  absl::Span<const std::uint8_t> data() const {
    return {begin_, static_cast<size_t>(end_ - begin_)};
  }
  std::size_t size() const { return static_cast<size_t>(end_ - begin_); }
  bool empty() const { return begin_ == end_; }
  void Consume(std::size_t n) { begin_ += n; }
  bool from_ring() const { return ring_ != nullptr; }

  // Moves the bytes to the heap and returns the ring slot, for chunks that will wait long
  // enough to starve other receives.
  void DetachFromRing();

 private:
  friend class BufferRing;
  void Release();

  BufferRing* ring_ = nullptr;
  std::uint16_t ring_id_ = 0;
  std::unique_ptr<std::uint8_t[]> owned_;
  const std::uint8_t* begin_ = nullptr;
  const std::uint8_t* end_ = nullptr;
};

}  // namespace nodeward::io
