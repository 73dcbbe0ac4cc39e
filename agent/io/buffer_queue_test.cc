#include "agent/io/buffer_queue.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace nodeward::io {
namespace {

IoBuffer Chunk(std::uint8_t tag) {
  const std::uint8_t bytes[] = {tag};
  return IoBuffer::Copy(bytes);
}

std::vector<std::uint8_t> Tags(BufferQueue& queue) {
  std::vector<std::uint8_t> tags;
  queue.ForEach([&](IoBuffer& chunk) {
    tags.push_back(chunk.data()[0]);
    return true;
  });
  return tags;
}

// Order holds across the in-object slots and the overflow, whichever way pushes and pops
// interleave.
TEST(BufferQueueTest, KeepsOrderThroughSlotsAndOverflow) {
  BufferQueue queue;
  EXPECT_TRUE(queue.empty());
  std::uint8_t next = 0, expected = 0;
  for (int round = 0; round < 50; ++round) {
    const int pushes = 1 + round % 5, pops = round % 4;
    for (int i = 0; i < pushes; ++i) queue.push_back(Chunk(next++));
    for (int i = 0; i < pops && !queue.empty(); ++i) {
      ASSERT_EQ(queue.front().data()[0], expected++);
      queue.pop_front();
    }
    std::vector<std::uint8_t> tags = Tags(queue);
    ASSERT_EQ(tags.size(), queue.size());
    for (std::size_t i = 0; i < tags.size(); ++i) {
      ASSERT_EQ(tags[i], static_cast<std::uint8_t>(expected + i));
    }
  }
  while (!queue.empty()) {
    ASSERT_EQ(queue.front().data()[0], expected++);
    queue.pop_front();
  }
  EXPECT_EQ(expected, next);
}

// A reference to the front survives pushes behind it, as callers rely on while a callback
// they trigger queues more.
TEST(BufferQueueTest, FrontStaysPutWhileMoreIsQueued) {
  BufferQueue queue;
  queue.push_back(Chunk(1));
  IoBuffer& front = queue.front();
  const std::uint8_t* bytes = front.data().data();
  for (std::uint8_t i = 2; i < 40; ++i) queue.push_back(Chunk(i));
  EXPECT_EQ(&queue.front(), &front);
  EXPECT_EQ(queue.front().data().data(), bytes);
  front.Consume(1);
  EXPECT_TRUE(queue.front().empty());
  queue.pop_front();
  EXPECT_EQ(queue.front().data()[0], 2);
}

TEST(BufferQueueTest, ForEachStopsWhenAsked) {
  BufferQueue queue;
  for (std::uint8_t i = 0; i < 6; ++i) queue.push_back(Chunk(i));
  int visited = 0;
  queue.ForEach([&](IoBuffer&) { return ++visited < 4; });
  EXPECT_EQ(visited, 4);
  queue.clear();
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.size(), 0u);
  queue.push_back(Chunk(9));
  EXPECT_EQ(queue.front().data()[0], 9);
}

}  // namespace
}  // namespace nodeward::io
