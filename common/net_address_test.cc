#include "common/net_address.h"

#include <arpa/inet.h>

#include "gtest/gtest.h"

namespace nodeward {
namespace {

TEST(IpAddressTest, ParsesBothFamiliesAndPrintsThemBack) {
  absl::StatusOr<IpAddress> v4 = IpAddress::Parse("10.1.2.3");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->family, AF_INET);
  EXPECT_EQ(v4->ToString(), "10.1.2.3");
  absl::StatusOr<IpAddress> v6 = IpAddress::Parse("fd00::1");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->family, AF_INET6);
  EXPECT_EQ(v6->ToString(), "fd00::1");
  EXPECT_FALSE(IpAddress::Parse("10.1.2").ok());
  EXPECT_FALSE(IpAddress::Parse("").ok());
  EXPECT_FALSE(IpAddress::Parse("example.com").ok());
}

TEST(IpAddressTest, LoopbackAndMappedAddresses) {
  EXPECT_TRUE(IpAddress::Parse("127.0.0.1")->IsLoopback());
  EXPECT_TRUE(IpAddress::Parse("127.9.9.9")->IsLoopback());
  EXPECT_TRUE(IpAddress::Parse("::1")->IsLoopback());
  EXPECT_TRUE(IpAddress::Parse("::ffff:127.0.0.1")->IsLoopback());
  EXPECT_FALSE(IpAddress::Parse("10.0.0.1")->IsLoopback());
  EXPECT_FALSE(IpAddress::Parse("::2")->IsLoopback());

  IpAddress mapped = *IpAddress::Parse("::ffff:10.0.0.7");
  EXPECT_TRUE(mapped.IsV4Mapped());
  EXPECT_EQ(mapped.Unmapped(), *IpAddress::Parse("10.0.0.7"));
  IpAddress plain = *IpAddress::Parse("fd00::7");
  EXPECT_FALSE(plain.IsV4Mapped());
  EXPECT_EQ(plain.Unmapped(), plain);
}

TEST(SocketAddressTest, ParsesHostPort) {
  absl::StatusOr<SocketAddress> v4 = SocketAddress::Parse("10.0.0.1:8080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->port, 8080);
  EXPECT_EQ(v4->ToString(), "10.0.0.1:8080");
  absl::StatusOr<SocketAddress> v6 = SocketAddress::Parse("[fd00::1]:443");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->ip.family, AF_INET6);
  EXPECT_EQ(v6->ToString(), "[fd00::1]:443");
}

TEST(SocketAddressTest, RejectsMalformedInput) {
  for (const char* bad : {"10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", ":80",
                          "fd00::1:80", "[fd00::1]80", "[fd00::1", "10.0.0.1:http"}) {
    EXPECT_FALSE(SocketAddress::Parse(bad).ok()) << bad;
  }
}

TEST(SocketAddressTest, RoundTripsThroughSockaddr) {
  for (const char* text : {"192.168.1.2:1", "[2001:db8::5]:65535"}) {
    SocketAddress address = *SocketAddress::Parse(text);
    sockaddr_storage storage;
    socklen_t length = address.ToSockaddr(&storage);
    absl::StatusOr<SocketAddress> back =
        SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
    ASSERT_TRUE(back.ok()) << text;
    EXPECT_EQ(*back, address);
  }
}

TEST(SocketAddressTest, RejectsUnknownFamilyAndShortLength) {
  sockaddr_storage storage{};
  storage.ss_family = AF_UNIX;
  EXPECT_FALSE(
      SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), sizeof(storage)).ok());
  storage.ss_family = AF_INET6;
  EXPECT_FALSE(SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&storage), 8).ok());
}

}  // namespace
}  // namespace nodeward
