// What capture needs of a pod's network namespace beyond the BPF programs, through rtnetlink:
// every address the pod has (and changes to them, so an address added later is never left
// unsteered), and the policy routing that lets the agent deliver inbound connections to the
// application from the client's own address.
//
// Functions marked "in the pod netns" must run on a thread inside that namespace (the
// NetnsExecutor); the sockets they return keep working from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net_address.h"

namespace nodeward::capture {

// In the pod netns: every address but loopback ones (127/8, ::1), link-local included,
// whichever interface holds it.
std::vector<IpAddress> LocalAddresses();

// In the pod netns: a non-blocking rtnetlink socket subscribed to IPv4 and IPv6 address
// changes. Open it before listing the addresses, so no change between the two is missed.
absl::StatusOr<int> OpenAddressWatch();

struct AddressChange {
  bool added = false;  // RTM_NEWADDR; false for RTM_DELADDR
  IpAddress address;
};

// Parses a buffer of rtnetlink messages as read from an address watch. Messages of other
// types are skipped; a malformed message is an error (the caller then lists again).
absl::StatusOr<std::vector<AddressChange>> ParseAddressChanges(absl::Span<const uint8_t> data);

// Reads everything queued on an address watch. ResourceExhausted when the kernel dropped
// messages (the socket's buffer overflowed): the caller must list the addresses again.
absl::StatusOr<std::vector<AddressChange>> ReadAddressChanges(int watch_fd);

// Which families the delivery routing is in place for.
struct DeliveryRouting {
  bool ipv4 = false;
  bool ipv6 = false;
  std::string problem;  // why a family is off, for the log
};

// In the pod netns: the application's replies to the agent's delivery connections (they
// carry NW_AGENT_DELIVERY_MARK, inherited through tcp_fwmark_accept; the kernel's own
// replies, a RST from a closed port, through fwmark_reflect) are routed to the local stack, so a
// delivery socket bound to the client's address gets them. A rule "fwmark -> table
// NW_DELIVERY_ROUTE_TABLE" and a local default route in that table, per family. Idempotent; a
// family that cannot be set up is reported off, and its deliveries then come from the pod's own
// address.
DeliveryRouting InstallDeliveryRouting();

// In the pod netns: undoes InstallDeliveryRouting (what is already gone is not an error).
// The two sysctls stay set: with the rule gone they change nothing (packets from outside the
// pod arrive unmarked, the node's veth clears marks).
absl::Status RemoveDeliveryRouting();

}  // namespace nodeward::capture
