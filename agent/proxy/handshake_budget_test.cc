#include "agent/proxy/handshake_budget.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace nodeward::proxy {
namespace {

TEST(HandshakeBudgetTest, RefusesBeyondTheCapAndGivesPlacesBack) {
  HandshakeBudget budget(
      {.max_pending = 2, .max_pending_per_source = 0, .timeout = absl::Seconds(10)});
  std::optional<HandshakeBudget::Ticket> first = budget.TryAdmit();
  std::optional<HandshakeBudget::Ticket> second = budget.TryAdmit();
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_EQ(budget.pending(), 2u);
  EXPECT_FALSE(budget.TryAdmit().has_value());
  first.reset();  // that handshake finished
  EXPECT_EQ(budget.pending(), 1u);
  std::optional<HandshakeBudget::Ticket> third = budget.TryAdmit();
  EXPECT_TRUE(third.has_value());
  // Moving a ticket keeps one place taken.
  HandshakeBudget::Ticket moved = std::move(*third);
  third.reset();
  EXPECT_EQ(budget.pending(), 2u);
}

TEST(HandshakeBudgetTest, TicketsAreDueAfterTheTimeout) {
  HandshakeBudget budget(
      {.max_pending = 4, .max_pending_per_source = 0, .timeout = absl::Seconds(10)});
  const absl::Time now = absl::FromUnixSeconds(1000);
  std::optional<HandshakeBudget::Ticket> ticket = budget.TryAdmit(now);
  ASSERT_TRUE(ticket.has_value());
  EXPECT_EQ(ticket->deadline(), now + absl::Seconds(10));
  EXPECT_FALSE(ticket->Expired(now + absl::Seconds(9)));
  EXPECT_TRUE(ticket->Expired(now + absl::Seconds(10)));
}

TEST(HandshakeBudgetTest, NeverAdmitsMoreThanTheCapFromManyThreads) {
  HandshakeBudget budget(
      {.max_pending = 100, .max_pending_per_source = 0, .timeout = absl::Seconds(10)});
  std::vector<std::vector<HandshakeBudget::Ticket>> held(4);
  std::vector<std::thread> threads;
  for (auto& mine : held) {
    threads.emplace_back([&budget, &mine] {
      for (int i = 0; i < 1000; ++i) {
        if (auto ticket = budget.TryAdmit()) mine.push_back(std::move(*ticket));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::size_t total = 0;
  for (const auto& mine : held) total += mine.size();
  EXPECT_EQ(total, 100u);
  EXPECT_EQ(budget.pending(), 100u);
  held.clear();
  EXPECT_EQ(budget.pending(), 0u);
}

TEST(HandshakeBudgetTest, OneSourceCannotTakeEveryPlace) {
  HandshakeBudget budget(
      {.max_pending = 3, .max_pending_per_source = 2, .timeout = absl::Seconds(10)});
  const IpAddress greedy = *IpAddress::Parse("10.0.0.1");
  const IpAddress other = *IpAddress::Parse("fd00::2");
  const absl::Time now = absl::Now();
  std::optional<HandshakeBudget::Ticket> a = budget.TryAdmit(greedy, now);
  std::optional<HandshakeBudget::Ticket> b = budget.TryAdmit(greedy, now);
  ASSERT_TRUE(a.has_value() && b.has_value());
  HandshakeBudget::Refusal why = HandshakeBudget::Refusal::kAgentLimit;
  EXPECT_FALSE(budget.TryAdmit(greedy, now, &why).has_value());
  EXPECT_EQ(why, HandshakeBudget::Refusal::kSourceLimit);
  EXPECT_EQ(HandshakeBudget::RefusalName(why), "pending_per_source_limit");
  std::optional<HandshakeBudget::Ticket> c = budget.TryAdmit(other, now);
  ASSERT_TRUE(c.has_value());
  // The agent's limit now stops everyone, the other source too.
  EXPECT_FALSE(budget.TryAdmit(other, now, &why).has_value());
  EXPECT_EQ(why, HandshakeBudget::Refusal::kAgentLimit);
  EXPECT_EQ(budget.pending_from(greedy), 2u);
  a->Release();  // a handshake finished: its places come back at once, and only once
  a.reset();
  EXPECT_EQ(budget.pending_from(greedy), 1u);
  EXPECT_EQ(budget.pending(), 2u);
  EXPECT_TRUE(budget.TryAdmit(greedy, now).has_value());
  b.reset();
  c.reset();
  EXPECT_EQ(budget.pending(), 0u);
  EXPECT_EQ(budget.pending_from(greedy), 0u);
}

}  // namespace
}  // namespace nodeward::proxy
