/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The socket under a tls.Conn, found inside the uprobe (no kprobes needed): Go's own
 * structures as the binary's type data describe them, then the task's file table.
 * Included by tlstap.bpf.c only. Every pointer is read with a fault-checked helper.
 */
#ifndef TLSTAP_CONN_H
#define TLSTAP_CONN_H

static __always_inline __u64 read_user_u64(__u64 addr, bool *ok)
{
	__u64 v = 0;

	if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
		*ok = false;
	return v;
}

/*
 * A field of a kernel struct copied whole into buf by one read: the field's offset in the
 * running kernel (CO-RE) must lie inside buf, which the verifier checks against that offset
 * as a constant. One read of the struct's head instead of one per field: each kernel read is
 * a helper call, and this runs on every data event.
 */
#define HEAD_FIELD(buf, type, field)                                                           \
	(*(typeof(((type *)0)->field) *)((buf) + bpf_core_field_offset(type, field)))

/* The fdtable head that holds max_fds and fd. */
#define FDT_HEAD_LEN 16

/* The sock_common head that holds the IPv4 addresses, the ports and the family. */
#define SOCK_HEAD_LEN 24

/* Fills the addresses of a TCP socket. */
static __always_inline void read_sock(struct tlstap_conn *c, struct sock *sk)
{
	__u8 head[SOCK_HEAD_LEN];
	__u16 family;

	c->sock_id = (__u64)sk;
	if (bpf_core_field_offset(struct sock_common, skc_family) + 2 > SOCK_HEAD_LEN ||
	    bpf_core_field_offset(struct sock_common, skc_num) + 2 > SOCK_HEAD_LEN ||
	    bpf_core_field_offset(struct sock_common, skc_rcv_saddr) + 4 > SOCK_HEAD_LEN ||
	    bpf_core_field_offset(struct sock_common, skc_daddr) + 4 > SOCK_HEAD_LEN ||
	    bpf_core_field_offset(struct sock_common, skc_dport) + 2 > SOCK_HEAD_LEN ||
	    bpf_probe_read_kernel(head, sizeof(head), &sk->__sk_common))
		return;
	family = HEAD_FIELD(head, struct sock_common, skc_family);
	c->family = family;
	c->local_port = HEAD_FIELD(head, struct sock_common, skc_num);
	c->remote_port = bpf_ntohs(HEAD_FIELD(head, struct sock_common, skc_dport));
	if (family == AF_INET) {
		__builtin_memcpy(c->local_addr, head + bpf_core_field_offset(struct sock_common, skc_rcv_saddr), 4);
		__builtin_memcpy(c->remote_addr, head + bpf_core_field_offset(struct sock_common, skc_daddr), 4);
	} else if (family == AF_INET6) {
		/* Explicit sizes: BPF_CORE_READ_INTO would take sizeof(*array), one byte. */
		bpf_core_read(c->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(c->remote_addr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* Why sock_of_fd found no socket. */
enum fd_lookup {
	FD_FOUND,
	FD_EMPTY,   /* a valid descriptor number with no file or no socket behind it */
	FD_INVALID, /* the table could not be read, or the number is out of its range */
};

/*
 * The struct sock behind descriptor fd of the current task: the task's file table, the file,
 * its socket. Kernel reads only (cheap next to user reads, which hardened usercopy checks one
 * by one).
 */
static __always_inline enum fd_lookup sock_of_fd(__s32 fd, struct sock **sk)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u8 fdt_head[FDT_HEAD_LEN];
	struct fdtable *fdt;
	struct file **fds, *file;
	struct socket *sock;

	*sk = 0;
	/* Each link of a CO-RE chain is one kernel read: walk to the table once. */
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || bpf_core_field_offset(struct fdtable, max_fds) + 4 > FDT_HEAD_LEN ||
	    bpf_core_field_offset(struct fdtable, fd) + 8 > FDT_HEAD_LEN ||
	    bpf_probe_read_kernel(fdt_head, sizeof(fdt_head), fdt))
		return FD_INVALID;
	if (fd < 0 || (unsigned int)fd >= HEAD_FIELD(fdt_head, struct fdtable, max_fds))
		return FD_INVALID;
	fds = HEAD_FIELD(fdt_head, struct fdtable, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), fds + fd) || !file)
		return FD_EMPTY;
	sock = BPF_CORE_READ(file, private_data);
	*sk = sock ? BPF_CORE_READ(sock, sk) : 0;
	return *sk ? FD_FOUND : FD_EMPTY;
}

static __always_inline bool same_addr(const __u8 *a, const __u8 *b)
{
	return *(const __u64 *)a == *(const __u64 *)b && *(const __u64 *)(a + 8) == *(const __u64 *)(b + 8);
}

/*
 * Whether the cached socket is still what the cached descriptor holds: the same struct sock
 * with the same family, ports and addresses. Fills c from the socket when it is.
 */
static __always_inline bool cached_sock_holds(const struct tlstap_conn *cached, struct tlstap_conn *c)
{
	struct sock *sk;

	if (sock_of_fd(cached->fd, &sk) != FD_FOUND || (__u64)sk != cached->sock_id)
		return false;
	__builtin_memset(c, 0, sizeof(*c));
	c->kind = TLSTAP_CONN_TCP;
	c->fd = cached->fd;
	read_sock(c, sk);
	return c->family == cached->family && c->local_port == cached->local_port &&
	       c->remote_port == cached->remote_port && same_addr(c->local_addr, cached->local_addr) &&
	       same_addr(c->remote_addr, cached->remote_addr);
}

/*
 * tls.Conn.conn (net.Conn) -> itab -> type check -> *net.TCPConn/UnixConn -> conn.fd (*netFD)
 * -> pfd.Sysfd -> this task's file table -> struct socket -> struct sock. Offsets and type
 * addresses come from the binary (userspace reads its runtime type data); the load bias of a
 * PIE is the instruction pointer less the probe's address in the file's view.
 *
 * `cache` (may be 0) is what the last call on this tls.Conn found. When the tls.Conn still
 * leads to the same netFD (alive, so no other connection can have its address) and the
 * netFD's descriptor still holds the same socket, the type check and the Sysfd read are
 * skipped: user reads cost a hardened-usercopy check each, and this runs on every event. A
 * new connection that took an old one's tls.Conn memory leads to another netFD; a netFD
 * closed since (a Write after Close) fails the socket check.
 */
static __always_inline void resolve_conn(struct pt_regs *ctx, __u64 cookie,
					 const struct tlstap_binary_cfg *cfg, __u64 conn_ptr,
					 struct conn_cache *cache, struct tlstap_conn *c)
{
	__u64 probe_vaddr = cookie >> TLSTAP_COOKIE_VADDR_SHIFT;
	__u64 bias, iface[2] = {}, itab, data, type, netfd = 0, sysfd = 0;
	struct sock *sk;
	bool ok = true;

	__builtin_memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (!cfg || !(cfg->flags & TLSTAP_BINARY_CONN_LAYOUT) || !probe_vaddr)
		return;
	bias = PT_REGS_IP(ctx) - probe_vaddr;
	/* A Go interface value is two words: itab, data. */
	if (bpf_probe_read_user(iface, sizeof(iface), (void *)(conn_ptr + cfg->tls_conn_conn))) {
		c->kind = TLSTAP_CONN_FAULT;
		return;
	}
	itab = iface[0];
	data = iface[1];
	if (cache && cache->conn.kind == TLSTAP_CONN_TCP && data) {
		netfd = read_user_u64(data + cfg->net_conn_fd, &ok);
		if (ok && netfd && netfd == cache->netfd && cached_sock_holds(&cache->conn, c))
			return;
		/* Resolve afresh, from a clean slate. */
		__builtin_memset(c, 0, sizeof(*c));
		c->fd = -1;
		netfd = 0;
		ok = true;
	}
	/* itab: {inter *interfacetype, _type *_type, ...} in every Go release. */
	type = itab ? read_user_u64(itab + 8, &ok) : 0;
	if (!ok) {
		c->kind = TLSTAP_CONN_FAULT;
		return;
	}
	if (cfg->tcp_conn_type && type == cfg->tcp_conn_type + bias)
		c->kind = TLSTAP_CONN_TCP;
	else if (cfg->unix_conn_type && type == cfg->unix_conn_type + bias)
		c->kind = TLSTAP_CONN_UNIX;
	else {
		c->kind = TLSTAP_CONN_OTHER;
		return;
	}
	netfd = read_user_u64(data + cfg->net_conn_fd, &ok);
	if (ok && netfd)
		bpf_probe_read_user(&sysfd, sizeof(__s32), (void *)(netfd + cfg->net_fd_sysfd));
	else
		ok = false;
	if (!ok || sock_of_fd((__s32)sysfd, &sk) == FD_INVALID) {
		c->kind = TLSTAP_CONN_FAULT;
		return;
	}
	c->fd = (__s32)sysfd;
	if (!sk)
		return;
	if (c->kind == TLSTAP_CONN_TCP) {
		read_sock(c, sk);
		/* Calls of one stream on several CPUs store the same connection: a torn copy is
		 * harmless. */
		if (cache) {
			cache->netfd = netfd;
			__builtin_memcpy(&cache->conn, c, sizeof(*c));
		}
	} else {
		c->sock_id = (__u64)sk;
		c->family = AF_UNIX;
	}
}

#endif /* TLSTAP_CONN_H */
