#include "agent/capture/pod_network.h"

#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace nodeward::capture {
namespace {

// One RTM_NEWADDR/RTM_DELADDR message as the kernel sends it, with the given attributes.
class Message {
 public:
  Message(uint16_t type, uint8_t family) {
    nlmsghdr header{};
    header.nlmsg_type = type;
    Append(&header, sizeof(header));
    ifaddrmsg info{};
    info.ifa_family = family;
    Append(&info, sizeof(info));
  }
  Message& Attribute(uint16_t type, const char* text_address) {
    uint8_t bytes[16];
    const int family = std::strchr(text_address, ':') != nullptr ? AF_INET6 : AF_INET;
    const IpAddress ip = *IpAddress::Parse(text_address);
    std::memcpy(bytes, ip.bytes.data(), 16);
    return Raw(type, bytes, family == AF_INET ? 4 : 16);
  }
  Message& Raw(uint16_t type, const void* data, std::size_t length) {
    Pad();
    rtattr attribute{};
    attribute.rta_type = type;
    attribute.rta_len = static_cast<uint16_t>(RTA_LENGTH(length));
    Append(&attribute, sizeof(attribute));
    Append(data, length);
    return *this;
  }
  std::vector<uint8_t> Bytes() {
    Pad();
    nlmsghdr header;
    std::memcpy(&header, bytes_.data(), sizeof(header));
    header.nlmsg_len = static_cast<uint32_t>(bytes_.size());
    std::memcpy(bytes_.data(), &header, sizeof(header));
    return bytes_;
  }

 private:
  void Append(const void* data, std::size_t length) {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + length);
  }
  void Pad() { bytes_.resize(NLMSG_ALIGN(bytes_.size()), 0); }
  std::vector<uint8_t> bytes_;
};

std::vector<uint8_t> Join(std::vector<std::vector<uint8_t>> messages) {
  std::vector<uint8_t> all;
  for (const auto& message : messages) all.insert(all.end(), message.begin(), message.end());
  return all;
}

TEST(ParseAddressChangesTest, ReadsAddedAndRemovedAddressesOfBothFamilies) {
  std::vector<uint8_t> data =
      Join({Message(RTM_NEWADDR, AF_INET).Attribute(IFA_ADDRESS, "10.2.0.7").Bytes(),
            Message(RTM_NEWADDR, AF_INET6).Attribute(IFA_ADDRESS, "fe80::1").Bytes(),
            Message(RTM_DELADDR, AF_INET).Attribute(IFA_ADDRESS, "10.2.0.8").Bytes()});
  absl::StatusOr<std::vector<AddressChange>> changes = ParseAddressChanges(data);
  ASSERT_TRUE(changes.ok()) << changes.status();
  ASSERT_EQ(changes->size(), 3u);
  EXPECT_TRUE((*changes)[0].added);
  EXPECT_EQ((*changes)[0].address.ToString(), "10.2.0.7");
  EXPECT_TRUE((*changes)[1].added);
  EXPECT_EQ((*changes)[1].address.ToString(), "fe80::1");
  EXPECT_FALSE((*changes)[2].added);
  EXPECT_EQ((*changes)[2].address.ToString(), "10.2.0.8");
}

// On a point-to-point link IFA_ADDRESS is the peer's: the local one is IFA_LOCAL.
TEST(ParseAddressChangesTest, PrefersTheLocalAddressOfAPointToPointLink) {
  std::vector<uint8_t> data = Message(RTM_NEWADDR, AF_INET)
                                  .Attribute(IFA_ADDRESS, "10.9.9.9")
                                  .Attribute(IFA_LOCAL, "10.2.0.7")
                                  .Bytes();
  absl::StatusOr<std::vector<AddressChange>> changes = ParseAddressChanges(data);
  ASSERT_TRUE(changes.ok()) << changes.status();
  ASSERT_EQ(changes->size(), 1u);
  EXPECT_EQ((*changes)[0].address.ToString(), "10.2.0.7");
}

TEST(ParseAddressChangesTest, SkipsLoopbackOtherMessagesAndOtherAttributes) {
  const uint32_t flags = IFA_F_PERMANENT;
  std::vector<uint8_t> data =
      Join({Message(RTM_NEWADDR, AF_INET).Attribute(IFA_ADDRESS, "127.0.0.1").Bytes(),
            Message(RTM_NEWLINK, AF_INET).Bytes(),
            Message(RTM_NEWADDR, AF_INET6).Raw(IFA_FLAGS, &flags, sizeof(flags)).Bytes(),
            Message(RTM_NEWADDR, AF_INET6)
                .Raw(IFA_FLAGS, &flags, sizeof(flags))
                .Attribute(IFA_ADDRESS, "fd00::7")
                .Bytes()});
  absl::StatusOr<std::vector<AddressChange>> changes = ParseAddressChanges(data);
  ASSERT_TRUE(changes.ok()) << changes.status();
  ASSERT_EQ(changes->size(), 1u);
  EXPECT_EQ((*changes)[0].address.ToString(), "fd00::7");
}

TEST(ParseAddressChangesTest, MalformedMessagesAreErrors) {
  std::vector<uint8_t> good =
      Message(RTM_NEWADDR, AF_INET).Attribute(IFA_ADDRESS, "10.2.0.7").Bytes();
  std::vector<uint8_t> truncated(good.begin(), good.end() - 6);
  EXPECT_FALSE(ParseAddressChanges(truncated).ok());
  std::vector<uint8_t> short_header(good.begin(), good.begin() + 8);
  EXPECT_FALSE(ParseAddressChanges(short_header).ok());
  std::vector<uint8_t> bad_attribute = good;
  // The attribute claims more bytes than the message holds.
  bad_attribute[sizeof(nlmsghdr) + NLMSG_ALIGN(sizeof(ifaddrmsg))] = 200;
  EXPECT_FALSE(ParseAddressChanges(bad_attribute).ok());
  EXPECT_TRUE(ParseAddressChanges({}).ok());
}

}  // namespace
}  // namespace nodeward::capture
