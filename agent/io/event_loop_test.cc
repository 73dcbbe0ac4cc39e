#include "agent/io/event_loop.h"

#include <atomic>
#include <cerrno>
#include <thread>

#include "absl/synchronization/notification.h"
#include "agent/io/io_test_util.h"
#include "agent/io/loop_thread.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::io {
namespace {

TEST(EventLoopTest, PostFromAnotherThreadRunsOnTheLoopAndStopEndsRun) {
  NODEWARD_LOOP_OR_SKIP(loop);
  std::atomic<bool> ran_on_loop{false};
  std::thread poster([&] {
    loop->Post([&] {
      ran_on_loop = loop->InLoopThread();
      loop->Stop();
    });
  });
  ASSERT_TRUE(loop->Run().ok());
  poster.join();
  EXPECT_TRUE(ran_on_loop);
}

TEST(EventLoopTest, ManyPostsFromManyThreadsAllRun) {
  NODEWARD_LOOP_OR_SKIP(loop);
  constexpr int kThreads = 4;
  constexpr int kPostsEach = 2000;
  int ran = 0;  // loop thread only
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < kPostsEach; ++i) loop->Post([&] { ++ran; });
    });
  }
  auto finished = loop->RunUntil([&] { return ran == kThreads * kPostsEach; }, absl::Seconds(20));
  for (auto& poster : posters) poster.join();
  ASSERT_TRUE(finished.ok());
  EXPECT_TRUE(*finished);
}

TEST(EventLoopTest, TimerFiresAfterItsDelay) {
  NODEWARD_LOOP_OR_SKIP(loop);
  const absl::Time start = absl::Now();
  int result = 1;
  bool fired = false;
  loop->Timer(absl::Milliseconds(30), [&](Completion& completion) {
    result = completion.result;
    fired = true;
  });
  auto finished = loop->RunUntil([&] { return fired; }, absl::Seconds(5));
  ASSERT_TRUE(finished.ok() && *finished);
  EXPECT_EQ(result, -ETIME);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(29));
}

TEST(EventLoopTest, CancelledTimerReportsCancellation) {
  NODEWARD_LOOP_OR_SKIP(loop);
  int result = 1;
  bool fired = false;
  EventLoop::OpId id = loop->Timer(absl::Seconds(30), [&](Completion& completion) {
    result = completion.result;
    fired = true;
  });
  loop->Cancel(id);
  auto finished = loop->RunUntil([&] { return fired; }, absl::Seconds(5));
  ASSERT_TRUE(finished.ok() && *finished);
  EXPECT_EQ(result, -ECANCELED);
  EXPECT_EQ(loop->pending_operations(), 1u);  // only the wakeup poll is left
}

TEST(EventLoopTest, WorksWithoutDeferredTaskRunning) {
  EventLoop::Options options;
  options.prefer_deferred_taskrun = false;
  NODEWARD_LOOP_OR_SKIP(loop, options);
  EXPECT_FALSE(loop->deferred_taskrun());
  bool fired = false;
  loop->Timer(absl::Milliseconds(1), [&](Completion&) { fired = true; });
  auto finished = loop->RunUntil([&] { return fired; }, absl::Seconds(5));
  ASSERT_TRUE(finished.ok());
  EXPECT_TRUE(*finished);
}

TEST(EventLoopTest, RejectsABufferCountThatIsNotAPowerOfTwo) {
  EventLoop::Options options;
  options.buffer_count = 100;
  auto loop = EventLoop::Create(options);
  ASSERT_FALSE(loop.ok());
  if (loop.status().code() != absl::StatusCode::kInvalidArgument) {
    GTEST_SKIP() << "io_uring unavailable: " << loop.status();
  }
  EXPECT_THAT(loop.status().message(), ::testing::HasSubstr("power of two"));
}

// A receive that ran out of buffers may be handled after the buffers already came back (its
// batch released them first); waiting for the next release would then wait forever.
TEST(EventLoopTest, WaitingForBuffersThatAreAlreadyBackResumesAtOnce) {
  NODEWARD_LOOP_OR_SKIP(loop);
  ASSERT_EQ(loop->buffers().available(), loop->buffers().count());
  bool resumed = false;
  loop->WhenBuffersAvailable([&] { resumed = true; });
  auto finished = loop->RunUntil([&] { return resumed; }, absl::Seconds(2));
  ASSERT_TRUE(finished.ok());
  EXPECT_TRUE(*finished);
}

TEST(EventLoopTest, AnIdleLoopTrimsOncePerQuietSpell) {
  EventLoop::Options options;
  options.idle_trim_interval = absl::Milliseconds(20);
  NODEWARD_LOOP_OR_SKIP(loop, options);
  auto trimmed = loop->RunUntil([&] { return loop->idle_trims() >= 1; }, absl::Seconds(5));
  ASSERT_TRUE(trimmed.ok());
  ASSERT_TRUE(*trimmed);
  // Still quiet: nothing more to give back.
  (void)loop->RunUntil([] { return false; }, absl::Milliseconds(100));
  EXPECT_EQ(loop->idle_trims(), 1u);
  // Activity, then quiet again: one more.
  bool ran = false;
  loop->Post([&] { ran = true; });
  trimmed = loop->RunUntil([&] { return ran && loop->idle_trims() >= 2; }, absl::Seconds(5));
  ASSERT_TRUE(trimmed.ok());
  EXPECT_TRUE(*trimmed);
  EXPECT_EQ(loop->buffers().available(), loop->buffers().count());
}

TEST(EventLoopTest, RunUntilGivesUpAtItsTimeout) {
  NODEWARD_LOOP_OR_SKIP(loop);
  const absl::Time start = absl::Now();
  auto finished = loop->RunUntil([] { return false; }, absl::Milliseconds(50));
  ASSERT_TRUE(finished.ok());
  EXPECT_FALSE(*finished);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(LoopThreadTest, EachWorkerRunsItsOwnLoopOnItsOwnThread) {
  auto first = LoopThread::Start();
  if (!first.ok()) GTEST_SKIP() << "io_uring unavailable: " << first.status();
  auto second = LoopThread::Start();
  ASSERT_TRUE(second.ok()) << second.status();
  std::thread::id first_id;
  std::thread::id second_id;
  absl::Notification first_ran;
  absl::Notification second_ran;
  bool first_in_loop = false;
  (*first)->Post([&] {
    first_id = std::this_thread::get_id();
    first_in_loop = (*first)->loop().InLoopThread();
    first_ran.Notify();
  });
  (*second)->Post([&] {
    second_id = std::this_thread::get_id();
    second_ran.Notify();
  });
  ASSERT_TRUE(first_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(second_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(first_in_loop);
  EXPECT_NE(first_id, second_id);
  EXPECT_NE(first_id, std::this_thread::get_id());
  EXPECT_TRUE((*first)->Stop().ok());
  EXPECT_TRUE((*first)->Stop().ok());  // idempotent
}

}  // namespace
}  // namespace nodeward::io
