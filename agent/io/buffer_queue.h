// A FIFO of chunks that costs no heap while it holds two or fewer. Every connection, stream
// and relay keeps such queues, and an idle one is empty nearly all its life: std::deque makes
// a 512-byte block as soon as it exists, which for thousands of idle connections was most of
// what each held. Pushing never moves a chunk already queued (as with std::deque), so a
// reference to the front stays good while a callback queues more behind it.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>

#include "agent/io/io_buffer.h"

namespace nodeward::io {

class BufferQueue {
 public:
  BufferQueue() = default;
  BufferQueue(const BufferQueue&) = delete;
  BufferQueue& operator=(const BufferQueue&) = delete;

  bool empty() const { return size() == 0; }
  std::size_t size() const { return count_ + (overflow_ != nullptr ? overflow_->size() : 0); }

  IoBuffer& front() { return count_ > 0 ? slots_[head_] : overflow_->front(); }

  void push_back(IoBuffer chunk) {
    // Once chunks wait in the overflow, newer ones go behind them to keep the order.
    if (overflow_ == nullptr && count_ < kSlots) {
      slots_[(head_ + count_) % kSlots] = std::move(chunk);
      ++count_;
      return;
    }
    if (overflow_ == nullptr) overflow_ = std::make_unique<std::deque<IoBuffer>>();
    overflow_->push_back(std::move(chunk));
  }

  void pop_front() {
    if (count_ > 0) {
      slots_[head_] = IoBuffer();  // gives a ring slot back now, as a destroyed chunk would
      head_ = static_cast<std::uint8_t>((head_ + 1) % kSlots);
      --count_;
      return;
    }
    overflow_->pop_front();
    if (overflow_->empty()) overflow_.reset();
  }

  void clear() {
    while (count_ > 0) pop_front();
    head_ = 0;
    overflow_.reset();
  }

  // Calls `visit(chunk)` oldest first while it returns true.
  template <typename Visit>
  void ForEach(Visit visit) {
    for (std::uint8_t i = 0; i < count_; ++i) {
      if (!visit(slots_[(head_ + i) % kSlots])) return;
    }
    if (overflow_ == nullptr) return;
    for (IoBuffer& chunk : *overflow_) {
      if (!visit(chunk)) return;
    }
  }

 private:
  static constexpr std::uint8_t kSlots = 2;
  std::array<IoBuffer, kSlots> slots_;
  std::uint8_t head_ = 0;
  std::uint8_t count_ = 0;
  std::unique_ptr<std::deque<IoBuffer>> overflow_;
};

}  // namespace nodeward::io
