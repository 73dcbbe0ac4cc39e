/* Map keys, values and constants shared by the BPF programs (C, compiled with clang -target bpf)
 * and the user-space loader (C++). Every struct has explicit padding so both sides agree on the
 * layout byte for byte. */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* In-pod listener ports, the same numbers as Istio ambient. */
#define NW_PORT_OUTBOUND 15001
#define NW_PORT_INBOUND_PLAINTEXT 15006
#define NW_PORT_TUNNEL 15008

/* SO_MARK carried by every socket the agent creates: capture leaves them alone. */
#define NW_AGENT_SOCKET_MARK 0x539
/* SO_MARK of the agent's connections that deliver inbound traffic to a pod's application.
 * Capture leaves them alone too; inside the pod, a policy route sends packets carrying it
 * (the application's replies, which inherit it through tcp_fwmark_accept) back to the local
 * agent socket, which is what lets that socket keep the client's address as its source. */
#define NW_AGENT_DELIVERY_MARK 0x53a
/* Routing table in each enrolled pod's netns holding the local default route for those
 * replies. */
#define NW_DELIVERY_ROUTE_TABLE 0x53a

/* Address families as the kernel numbers them (vmlinux.h has no AF_* macros). */
#define NW_AF_INET 2
#define NW_AF_INET6 10

/* Slots of the inbound listener SOCKHASH. */
#define NW_SLOT_INBOUND_PLAINTEXT 0
#define NW_SLOT_TUNNEL 1

#define NW_MAX_ENROLLED_PODS 4096
#define NW_MAX_POD_ADDRESSES 8192
#define NW_MAX_PENDING_CONNECTIONS 65536
#define NW_MAX_PENDING_DELIVERIES 65536

/* Indexes of the per-CPU counter array. */
enum nw_counter {
  NW_COUNTER_OUTBOUND_REDIRECTED = 0,
  NW_COUNTER_OUTBOUND_SKIPPED_MARK,
  NW_COUNTER_OUTBOUND_SKIPPED_LOOPBACK,
  NW_COUNTER_OUTBOUND_NO_STORAGE,
  NW_COUNTER_OUTBOUND_SKIPPED_AGENT_PORT,
  NW_COUNTER_INBOUND_STEERED,
  NW_COUNTER_INBOUND_DROPPED_NO_LISTENER,
  NW_COUNTER_INBOUND_DELIVERY_PASSED,
  NW_COUNTER_INBOUND_DROPPED_UNKNOWN_ADDRESS,
  NW_COUNTER_MAX,
};

/* An IPv4 address is stored in addr[0] (network byte order), the rest zero. */
struct nw_address {
  __u8 family;
  __u8 pad[3];
  __u32 addr[4];
};

/* Value of `enrolled`, keyed by the pod's netns cookie (bpf_get_netns_cookie /
 * SO_NETNS_COOKIE). */
struct nw_pod {
  __u32 pod_id;
  __u32 flags;
};

/* Destination the application asked for before connect4/6 rewrote it. */
struct nw_orig_dst {
  __u8 family;
  __u8 pad;
  __u16 port; /* network byte order */
  __u32 addr[4];
};

/* Client side of a redirected connection, as the agent sees it with getpeername() on the
 * accepted socket: the netns cookie of the pod and the client's loopback address and port. */
struct nw_tuple_key {
  __u64 netns_cookie;
  __u8 family;
  __u8 pad;
  __u16 port; /* host byte order */
  __u32 addr[4];
  __u32 pad2; /* what the __u64 alignment adds anyway, named so it is zeroed */
};

/* Key of `inbound_listeners`: a pod address and the listener slot serving it. */
struct nw_listener_key {
  __u8 family;
  __u8 slot;
  __u8 pad[2];
  __u32 addr[4];
};

/* Key of `deliveries`: the agent's own connection to a pod's application, between the moment
 * it is bound and the moment it is established, as sk_lookup sees its SYN: the application's
 * side is local, the agent's side remote. Ports in host byte order. */
struct nw_delivery_key {
  __u8 family;
  __u8 pad;
  __u16 local_port;
  __u16 remote_port;
  __u16 pad2;
  __u32 local[4];
  __u32 remote[4];
};

/* The layout is part of the pinned maps a restarted agent adopts: a change must be a new map. */
#ifdef __cplusplus
#define NW_LAYOUT_ASSERT static_assert
#else
#define NW_LAYOUT_ASSERT _Static_assert
#endif
NW_LAYOUT_ASSERT(sizeof(struct nw_address) == 20, "nw_address layout");
NW_LAYOUT_ASSERT(sizeof(struct nw_pod) == 8, "nw_pod layout");
NW_LAYOUT_ASSERT(sizeof(struct nw_orig_dst) == 20, "nw_orig_dst layout");
NW_LAYOUT_ASSERT(sizeof(struct nw_tuple_key) == 32, "nw_tuple_key layout");
NW_LAYOUT_ASSERT(sizeof(struct nw_listener_key) == 20, "nw_listener_key layout");
NW_LAYOUT_ASSERT(sizeof(struct nw_delivery_key) == 40, "nw_delivery_key layout");
