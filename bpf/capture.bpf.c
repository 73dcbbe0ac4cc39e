// SPDX-License-Identifier: GPL-2.0
/* Capture of enrolled pods' TCP: outbound connects are rewritten to the agent's in-pod
 * listener, inbound connections to a pod's addresses are steered to the agent's in-pod
 * listeners. Which pods are enrolled, and where the listeners are, is decided in user space;
 * nothing here knows about policy. */
// clang-format off
/* vmlinux.h defines the kernel types the libbpf headers build on, so it must come first. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "nodeward_maps.h"
// clang-format on

#define NW_SK_PASS 1
#define NW_SK_DROP 0
#define NW_IPPROTO_TCP 6
#define NW_SOCK_STREAM 1

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NW_MAX_ENROLLED_PODS);
  __type(key, __u64);
  __type(value, struct nw_pod);
} enrolled SEC(".maps");

/* Lives and dies with the application's socket: no cleanup, no race with reuse. */
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct nw_orig_dst);
} orig_dst_sk SEC(".maps");

/* Filled when the client's source port is known, consumed by the agent on accept. LRU so that
 * connections the agent never accepts (client gave up, agent down) cannot fill it. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, NW_MAX_PENDING_CONNECTIONS);
  __type(key, struct nw_tuple_key);
  __type(value, struct nw_orig_dst);
} orig_dst_tuple SEC(".maps");

/* Addresses of enrolled pods, valued by the pod's netns cookie. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NW_MAX_POD_ADDRESSES);
  __type(key, struct nw_address);
  __type(value, __u64);
} pod_addrs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, NW_MAX_POD_ADDRESSES * 2);
  __type(key, struct nw_listener_key);
  __type(value, __u64);
} inbound_socks SEC(".maps");

/* The agent's delivery connections being established, written by the agent before it
 * connects and removed once connected. LRU so an agent that dies in between cannot fill it. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, NW_MAX_PENDING_DELIVERIES);
  __type(key, struct nw_delivery_key);
  __type(value, __u8);
} deliveries SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NW_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index) {
  __u64* value = bpf_map_lookup_elem(&counters, &index);
  if (value) *value += 1;
}

static __always_inline int is_loopback4(__u32 addr_be) {
  __u32 addr = bpf_ntohl(addr_be);
  return (addr >> 24) == 127 || addr == 0;
}

static __always_inline int is_v4_mapped(__u32 a0, __u32 a1, __u32 a2) {
  return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

static __always_inline int is_loopback6(__u32 a0, __u32 a1, __u32 a2, __u32 a3) {
  return a0 == 0 && a1 == 0 && a2 == 0 && (a3 == 0 || a3 == bpf_htonl(1));
}

/* Common checks of connect4/connect6: TCP from an enrolled pod's netns, not the agent's own. */
static __always_inline int should_capture(struct bpf_sock_addr* ctx) {
  if (ctx->type != NW_SOCK_STREAM) return 0;
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 0;
  if (sk->mark == NW_AGENT_SOCKET_MARK || sk->mark == NW_AGENT_DELIVERY_MARK) {
    count(NW_COUNTER_OUTBOUND_SKIPPED_MARK);
    return 0;
  }
  __u64 cookie = bpf_get_netns_cookie(ctx);
  if (!bpf_map_lookup_elem(&enrolled, &cookie)) return 0;
  /* The agent's own ports (in this pod or a peer's) are dialled as they are: redirecting
   * them would loop back into the agent or wrap a tunnel in a tunnel. */
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  if (port == NW_PORT_OUTBOUND || port == NW_PORT_INBOUND_PLAINTEXT || port == NW_PORT_TUNNEL) {
    count(NW_COUNTER_OUTBOUND_SKIPPED_AGENT_PORT);
    return 0;
  }
  return 1;
}

SEC("cgroup/connect4")
int nw_connect4(struct bpf_sock_addr* ctx) {
  if (!should_capture(ctx)) return 1;
  __u32 dst = ctx->user_ip4;
  if (is_loopback4(dst)) {
    count(NW_COUNTER_OUTBOUND_SKIPPED_LOOPBACK);
    return 1;
  }
  struct nw_orig_dst* orig =
      bpf_sk_storage_get(&orig_dst_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!orig) {
    /* Without a record the agent could not forward it: refuse rather than leak plaintext. */
    count(NW_COUNTER_OUTBOUND_NO_STORAGE);
    return 0;
  }
  orig->family = NW_AF_INET;
  orig->port = (__u16)ctx->user_port;
  orig->addr[0] = dst;
  orig->addr[1] = 0;
  orig->addr[2] = 0;
  orig->addr[3] = 0;
  ctx->user_ip4 = bpf_htonl(0x7f000001);
  ctx->user_port = bpf_htons(NW_PORT_OUTBOUND);
  count(NW_COUNTER_OUTBOUND_REDIRECTED);
  return 1;
}

SEC("cgroup/connect6")
int nw_connect6(struct bpf_sock_addr* ctx) {
  if (!should_capture(ctx)) return 1;
  __u32 a0 = ctx->user_ip6[0];
  __u32 a1 = ctx->user_ip6[1];
  __u32 a2 = ctx->user_ip6[2];
  __u32 a3 = ctx->user_ip6[3];
  int mapped = is_v4_mapped(a0, a1, a2);
  if ((mapped && is_loopback4(a3)) || (!mapped && is_loopback6(a0, a1, a2, a3))) {
    count(NW_COUNTER_OUTBOUND_SKIPPED_LOOPBACK);
    return 1;
  }
  struct nw_orig_dst* orig =
      bpf_sk_storage_get(&orig_dst_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!orig) {
    count(NW_COUNTER_OUTBOUND_NO_STORAGE);
    return 0;
  }
  orig->port = (__u16)ctx->user_port;
  if (mapped) {
    /* A dual-stack socket dialling an IPv4 peer: the connection is IPv4 on the wire and is
     * accepted by the IPv4 listener, so record it as IPv4. */
    orig->family = NW_AF_INET;
    orig->addr[0] = a3;
    orig->addr[1] = 0;
    orig->addr[2] = 0;
    orig->addr[3] = 0;
    ctx->user_ip6[3] = bpf_htonl(0x7f000001);
  } else {
    orig->family = NW_AF_INET6;
    orig->addr[0] = a0;
    orig->addr[1] = a1;
    orig->addr[2] = a2;
    orig->addr[3] = a3;
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = 0;
    ctx->user_ip6[3] = bpf_htonl(1);
  }
  ctx->user_port = bpf_htons(NW_PORT_OUTBOUND);
  count(NW_COUNTER_OUTBOUND_REDIRECTED);
  return 1;
}

/* Once the client's source port is chosen, index the original destination by the client
 * address the agent will see with getpeername() on the accepted socket. The lookup is keyed
 * by that address rather than copied onto the accepted socket at PASSIVE_ESTABLISHED: the
 * accepted socket belongs to the agent's cgroup, which need not be (and in tests is not) the
 * cgroup this program is attached to, so it would never be seen here. */
SEC("sockops")
int nw_sockops(struct bpf_sock_ops* skops) {
  if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB) return 1;
  struct bpf_sock* sk = skops->sk;
  if (!sk) return 1;
  struct nw_orig_dst* orig = bpf_sk_storage_get(&orig_dst_sk, sk, 0, 0);
  if (!orig) return 1;
  struct nw_tuple_key key = {};
  key.netns_cookie = bpf_get_netns_cookie(skops);
  key.port = (__u16)skops->local_port;
  if (skops->family == NW_AF_INET) {
    key.family = NW_AF_INET;
    key.addr[0] = skops->local_ip4;
  } else if (skops->family == NW_AF_INET6) {
    __u32 a0 = skops->local_ip6[0];
    __u32 a1 = skops->local_ip6[1];
    __u32 a2 = skops->local_ip6[2];
    __u32 a3 = skops->local_ip6[3];
    if (is_v4_mapped(a0, a1, a2)) {
      key.family = NW_AF_INET;
      key.addr[0] = a3;
    } else {
      key.family = NW_AF_INET6;
      key.addr[0] = a0;
      key.addr[1] = a1;
      key.addr[2] = a2;
      key.addr[3] = a3;
    }
  } else {
    return 1;
  }
  struct nw_orig_dst value = *orig;
  bpf_map_update_elem(&orig_dst_tuple, &key, &value, BPF_ANY);
  return 1;
}

/* The application keeps seeing the peer it dialled, not the agent's listener. */
SEC("cgroup/getpeername4")
int nw_getpeername4(struct bpf_sock_addr* ctx) {
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  struct nw_orig_dst* orig = bpf_sk_storage_get(&orig_dst_sk, sk, 0, 0);
  if (!orig || orig->family != NW_AF_INET) return 1;
  ctx->user_ip4 = orig->addr[0];
  ctx->user_port = orig->port;
  return 1;
}

SEC("cgroup/getpeername6")
int nw_getpeername6(struct bpf_sock_addr* ctx) {
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 1;
  struct nw_orig_dst* orig = bpf_sk_storage_get(&orig_dst_sk, sk, 0, 0);
  if (!orig) return 1;
  if (orig->family == NW_AF_INET) {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
    ctx->user_ip6[3] = orig->addr[0];
  } else {
    ctx->user_ip6[0] = orig->addr[0];
    ctx->user_ip6[1] = orig->addr[1];
    ctx->user_ip6[2] = orig->addr[2];
    ctx->user_ip6[3] = orig->addr[3];
  }
  ctx->user_port = orig->port;
  return 1;
}

/* Linked into each enrolled pod's netns, where every TCP connection to a non-loopback address
 * is inbound to the pod: those to an address the agent registered go to the agent's in-pod
 * listeners (15008 to the tunnel listener, every other port to the plaintext one); those to an
 * address it does not know (yet) are refused, so no address of the pod (link-local, added
 * later) reaches the application unchecked. The only connections let through to the
 * application are the agent's own deliveries, announced in `deliveries`. Loopback stays
 * untouched: it never leaves the pod. */
SEC("sk_lookup")
int nw_sk_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->protocol != NW_IPPROTO_TCP) return NW_SK_PASS;
  struct nw_address pod = {};
  struct nw_delivery_key delivery = {};
  if (ctx->family == NW_AF_INET) {
    __u32 local = ctx->local_ip4;
    if (is_loopback4(local)) return NW_SK_PASS;
    pod.family = NW_AF_INET;
    pod.addr[0] = local;
    delivery.remote[0] = ctx->remote_ip4;
  } else if (ctx->family == NW_AF_INET6) {
    __u32 a0 = ctx->local_ip6[0];
    __u32 a1 = ctx->local_ip6[1];
    __u32 a2 = ctx->local_ip6[2];
    __u32 a3 = ctx->local_ip6[3];
    if (is_loopback6(a0, a1, a2, a3)) return NW_SK_PASS;
    pod.family = NW_AF_INET6;
    pod.addr[0] = a0;
    pod.addr[1] = a1;
    pod.addr[2] = a2;
    pod.addr[3] = a3;
    delivery.remote[0] = ctx->remote_ip6[0];
    delivery.remote[1] = ctx->remote_ip6[1];
    delivery.remote[2] = ctx->remote_ip6[2];
    delivery.remote[3] = ctx->remote_ip6[3];
  } else {
    return NW_SK_PASS;
  }
  delivery.family = pod.family;
  delivery.local_port = (__u16)ctx->local_port;
  /* remote_port is in network byte order in the low 16 bits. */
  delivery.remote_port = bpf_ntohs((__u16)ctx->remote_port);
  delivery.local[0] = pod.addr[0];
  delivery.local[1] = pod.addr[1];
  delivery.local[2] = pod.addr[2];
  delivery.local[3] = pod.addr[3];
  if (bpf_map_lookup_elem(&deliveries, &delivery)) {
    count(NW_COUNTER_INBOUND_DELIVERY_PASSED);
    return NW_SK_PASS;
  }
  if (!bpf_map_lookup_elem(&pod_addrs, &pod)) {
    count(NW_COUNTER_INBOUND_DROPPED_UNKNOWN_ADDRESS);
    return NW_SK_DROP;
  }

  struct nw_listener_key key = {};
  key.family = pod.family;
  key.slot = ctx->local_port == NW_PORT_TUNNEL ? NW_SLOT_TUNNEL : NW_SLOT_INBOUND_PLAINTEXT;
  key.addr[0] = pod.addr[0];
  key.addr[1] = pod.addr[1];
  key.addr[2] = pod.addr[2];
  key.addr[3] = pod.addr[3];
  struct bpf_sock* sk = bpf_map_lookup_elem(&inbound_socks, &key);
  if (!sk) {
    /* Enrolled but no agent listener (agent down or restarting): refuse, so nothing reaches
     * the application unauthenticated. */
    count(NW_COUNTER_INBOUND_DROPPED_NO_LISTENER);
    return NW_SK_DROP;
  }
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  if (err) {
    /* Also an address another pod on this node registered first (two pods sharing a
     * link-local address): refused rather than delivered anywhere else. */
    count(NW_COUNTER_INBOUND_DROPPED_NO_LISTENER);
    return NW_SK_DROP;
  }
  count(NW_COUNTER_INBOUND_STEERED);
  return NW_SK_PASS;
}
