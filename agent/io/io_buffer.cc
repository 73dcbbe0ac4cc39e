#include "agent/io/io_buffer.h"

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace nodeward::io {

absl::StatusOr<std::unique_ptr<BufferRing>> BufferRing::Create(io_uring* ring,
                                                               std::uint16_t group_id,
                                                               std::uint32_t count,
                                                               std::uint32_t size) {
  // The kernel indexes the ring with a mask and buffer ids are 16 bits.
  if (count == 0 || count > 32768 || (count & (count - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer count must be a power of two in [1, 32768], got ", count));
  }
  if (size == 0 || size > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid buffer size ", size));
  }
  std::unique_ptr<BufferRing> buffers(new BufferRing(ring, group_id, count, size));
  // liburing 2.3 has no io_uring_setup_buf_ring: the ring of entries must be page aligned, so
  // map it ourselves.
  buffers->entries_bytes_ = sizeof(io_uring_buf) * count;
  void* entries = mmap(nullptr, buffers->entries_bytes_, PROT_READ | PROT_WRITE,
                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (entries == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("mmap of the buffer ring: ", std::strerror(errno)));
  }
  buffers->entries_ = static_cast<io_uring_buf_ring*>(entries);
  buffers->storage_bytes_ = static_cast<std::size_t>(count) * size;
  void* storage = mmap(nullptr, buffers->storage_bytes_, PROT_READ | PROT_WRITE,
                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (storage == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("mmap of receive buffers: ", std::strerror(errno)));
  }
  buffers->storage_ = static_cast<std::uint8_t*>(storage);

  io_uring_buf_reg registration{};
  registration.ring_addr = reinterpret_cast<std::uintptr_t>(entries);
  registration.ring_entries = count;
  registration.bgid = group_id;
  int rc = io_uring_register_buf_ring(ring, &registration, 0);
  if (rc < 0) {
    return absl::UnavailableError(absl::StrCat("io_uring_register_buf_ring: ", std::strerror(-rc)));
  }
  buffers->registered_ = true;
  io_uring_buf_ring_init(buffers->entries_);
  const int mask = io_uring_buf_ring_mask(count);
  for (std::uint32_t id = 0; id < count; ++id) {
    io_uring_buf_ring_add(buffers->entries_,
                          buffers->storage_ + static_cast<std::size_t>(id) * size, size,
                          static_cast<unsigned short>(id), mask, static_cast<int>(id));
  }
  io_uring_buf_ring_advance(buffers->entries_, static_cast<int>(count));
  buffers->available_ = count;
  return buffers;
}

BufferRing::BufferRing(io_uring* ring, std::uint16_t group_id, std::uint32_t count,
                       std::uint32_t size)
    : ring_(ring), group_id_(group_id), count_(count), size_(size) {}

BufferRing::~BufferRing() {
  if (registered_) io_uring_unregister_buf_ring(ring_, group_id_);
  if (storage_ != nullptr) munmap(storage_, storage_bytes_);
  if (entries_ != nullptr) munmap(entries_, entries_bytes_);
}

IoBuffer BufferRing::Claim(std::uint16_t id, std::size_t length) {
  --available_;
  IoBuffer buffer;
  buffer.ring_ = this;
  buffer.ring_id_ = id;
  buffer.begin_ = storage_ + static_cast<std::size_t>(id) * size_;
  buffer.end_ = buffer.begin_ + length;
  return buffer;
}

void BufferRing::Recycle(std::uint16_t id) {
  io_uring_buf_ring_add(entries_, storage_ + static_cast<std::size_t>(id) * size_, size_, id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(entries_, 1);
  ++available_;
  if (on_recycle_ != nullptr) on_recycle_(on_recycle_context_);
}

bool BufferRing::ReleaseFreePages() {
  if (available_ != count_) return false;
  return madvise(storage_, storage_bytes_, MADV_DONTNEED) == 0;
}

IoBuffer IoBuffer::Copy(absl::Span<const std::uint8_t> bytes) {
  return Filled(bytes.size(), [&](absl::Span<std::uint8_t> space) {
    if (!bytes.empty()) std::memcpy(space.data(), bytes.data(), bytes.size());
    return bytes.size();
  });
}

IoBuffer IoBuffer::Adopt(std::unique_ptr<std::uint8_t[]> storage, std::size_t offset,
                         std::size_t size) {
  IoBuffer buffer;
  buffer.owned_ = std::move(storage);
  buffer.begin_ = buffer.owned_.get() + offset;
  buffer.end_ = buffer.begin_ + size;
  return buffer;
}

IoBuffer IoBuffer::Filled(std::size_t capacity,
                          absl::FunctionRef<std::size_t(absl::Span<std::uint8_t>)> fill) {
  // Not zeroed: `fill` writes what counts.
  auto storage = std::make_unique_for_overwrite<std::uint8_t[]>(capacity);
  const std::size_t written = std::min(capacity, fill(absl::MakeSpan(storage.get(), capacity)));
  return Adopt(std::move(storage), 0, written);
}

IoBuffer& IoBuffer::operator=(IoBuffer&& other) noexcept {
  if (this == &other) return *this;
  Release();
  ring_ = other.ring_;
  ring_id_ = other.ring_id_;
  // Moving the heap block keeps its address, so the views stay valid.
  owned_ = std::move(other.owned_);
  begin_ = other.begin_;
  end_ = other.end_;
  other.ring_ = nullptr;
  other.begin_ = other.end_ = nullptr;
  return *this;
}

void IoBuffer::DetachFromRing() {
  if (ring_ == nullptr) return;
  *this = Copy(data());
}

void IoBuffer::Release() {
  if (ring_ != nullptr) {
    BufferRing* ring = ring_;
    ring_ = nullptr;
    ring->Recycle(ring_id_);
  }
  owned_.reset();
  begin_ = end_ = nullptr;
}

}  // namespace nodeward::io
