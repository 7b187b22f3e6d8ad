/* SPDX-License-Identifier: MIT */
/*
 * The raw PMD blast (tlm-bench.h): the physical limit of a DPDK lane's path,
 * same PMD (net_memif between two processes, as the embedded default
 * lanes, or the vdev each end of a device run names: net_af_packet on the
 * two ends of a veth pair), same frame size, no protocol.
 *
 *   caller --fork--> rx child: EAL on the first CPU the caller may use,
 *                    memif server; "DIR" (its EAL runtime directory) and
 *                    "ready" on its pipe; rx_bursts and counts until
 *                    0.5 s pass without a frame; "frames secs cpu tsc_hz"
 *          --fork--> tx child: EAL on the second CPU, memif client; "DIR";
 *                    waits for the link, tx_bursts for seconds; "sent cpu";
 *                    stays until the caller closes the hold pipe
 *   caller: reads both pipes, lets the tx child go once the rx child has
 *   its count, reaps both, removes both DIRs (the EAL leaves them behind,
 *   and a killed child cannot clean up).
 *   With place the roles swap (the rx child is the zero-copy memif client,
 *   which only the client can be) and the tx child starts first: a DPDK
 *   memif client tries its server once, when it starts.
 *
 * With copies the rx child checks at the end that every place in its
 * destination a frame landed on holds the source's bytes (frames say
 * where they come from), and fails the blast if not: the figure is of
 * bytes moved, not of frames counted.
 *
 * The tx child outlives the rx child's polling on purpose: when a memif
 * peer goes, the PMD's interrupt thread unmaps the shared rings while the
 * other side may be inside rx_burst on them (a SEGV, seen under ASan).
 *
 * The children take an lcore each so that two EALs do not busy-wait on one
 * core, then give their thread back every CPU, as lanes do: on a shared
 * machine a pinned blaster measures whoever else runs on its core. They
 * start in fresh processes because a process whose EAL is up cannot fork
 * one that starts another; they _exit so nothing of the caller's (stdio
 * buffers, atexit handlers) runs twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include "tlm-internal.h"
#include "transport-dpdk/bench.h"
#include "transport-dpdk/eal.h"
#include "transport-dpdk/extbuf.h"
#include "tlm-bench.h"

#define BURST        32
#define L2L4_HDR     (14 + 20 + 8 + 38)   /* Ethernet, IPv4, UDP, lane header (the dpdk transport's HDR_LEN) */
#define START_S      180                  /* an EAL start, at most (TCG, loaded) */
#define FIRST_NS     (START_S * 1000000000ull) /* rx: the first frame must come by then (the tx EAL starts meanwhile) */
#define QUIET_NS     (500ull * 1000000)   /* rx: the sender is done after this */
#define LINK_MS      10000                /* tx: memif link up */
#define DEF_EAL      "--no-huge --no-pci -m 512"
#define POOL_BYTES   (64 * 4096)          /* copies: source / destination pages */

/* What the children share. */
struct blast {
	const struct tlm_bench_raw_cfg *c;
	char sock[64];          /* the memif socket (abstract) */
	int hold[2];            /* the tx child waits for EOF on hold[0] */
	struct rte_ether_addr rx_mac; /* the receiver's port (its "ready" line) */
};

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static ssize_t log_write(void *cookie, const char *buf, size_t n)
{
	(void)cookie;
	tlm__dpdk_log_line("dpdk raw", buf, n);
	return (ssize_t)n;
}

/* The idx-th CPU this process may run on (the first one if it has fewer). */
static int nth_cpu(int idx)
{
	cpu_set_t s;
	int first = -1;

	if (sched_getaffinity(0, sizeof(s), &s))
		return 0;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &s)) {
			if (first < 0)
				first = c;
			if (idx-- == 0)
				return c;
		}
	return first < 0 ? 0 : first;
}

/* The port a vdev string ("NAME,k=v...") makes: NAME; NULL: memif's. */
static void port_name(const char *vdev, char *out, size_t cap)
{
	snprintf(out, cap, "%.*s", vdev ? (int)strcspn(vdev, ",") : (int)cap,
		 vdev ? vdev : "net_memif0");
}

/* Child side: EAL and a one-queue port on the memif end of role (rx: the
 * server, on the first CPU; tx: the client, on the second), or on the
 * role's own vdev (vdev_rx, vdev_tx); says its
 * runtime directory on fd out first, so the caller can remove it whatever
 * happens next. Returns the port's pool, or NULL after logging why. */
static struct rte_mempool *child_port(const struct blast *b, const char *role, int out,
				      uint16_t *port)
{
	const struct tlm_bench_raw_cfg *c = b->c;
	char buf[1024], *argv[72];
	struct rte_eth_conf conf = { 0 };
	struct rte_mempool *mp;
	cpu_set_t cpus;
	int argc = 0, have, cpu_idx = strcmp(role, "rx") != 0;
	bool server = c->place ? cpu_idx : !cpu_idx;   /* place: the receiver is the zc client */
	uint16_t room;
	FILE *lf;

	const char *vdev = cpu_idx ? c->vdev_tx : c->vdev_rx;
	char name[64];

	/* a zero-copy memif client shares its memsegs: one file each */
	if (vdev)
		snprintf(buf, sizeof(buf), "tlm-raw %s --file-prefix tlm-raw-%d-%s -l %d "
			 "--no-telemetry --vdev %s", c->eal_args ? c->eal_args : DEF_EAL,
			 (int)getppid(), role, nth_cpu(cpu_idx), vdev);
	else
		snprintf(buf, sizeof(buf), "tlm-raw %s%s --file-prefix tlm-raw-%d-%s -l %d "
			 "--no-telemetry --vdev net_memif0,role=%s,id=0,socket=%s,"
			 "socket-abstract=yes%s%s", c->eal_args ? c->eal_args : DEF_EAL,
			 server || !c->place ? "" : " --single-file-segments", (int)getppid(),
			 role, nth_cpu(cpu_idx), server ? "server" : "client", b->sock,
			 c->mtu > 1500 ? ",bsize=9216" : "", server || !c->place ? "" :
			 ",zero-copy=yes");
	port_name(vdev, name, sizeof(name));
	for (char *s = strtok(buf, " "); s && argc < 70; s = strtok(NULL, " "))
		argv[argc++] = s;
	argv[argc] = NULL;
	lf = fopencookie(NULL, "w", (cookie_io_functions_t){ .write = log_write });
	if (lf) {
		setvbuf(lf, NULL, _IOLBF, 0);
		rte_openlog_stream(lf);
	}
	have = pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus) == 0;
	if (tlm__dpdk_eal_init(argc, argv) < 0) {
		tlm__err("dpdk raw %s: EAL init failed: %s%s", role, rte_strerror(rte_errno),
			 rte_errno == EALREADY ? " (the caller had started an EAL already)" : "");
		return NULL;
	}
	if (have)
		pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
	dprintf(out, "%s\n", rte_eal_get_runtime_dir());
	room = (uint16_t)RTE_MAX(c->mtu + 14 + RTE_PKTMBUF_HEADROOM,
				 (unsigned)RTE_MBUF_DEFAULT_BUF_SIZE);
	mp = rte_pktmbuf_pool_create("raw", 8191, 256, 0, room, (int)rte_socket_id());
	const char *step = !mp ? "mbuf pool"
		: rte_eth_dev_get_port_by_name(name, port) ? "creation"
		: rte_eth_dev_configure(*port, 1, 1, &conf) ? "configure"
		: rte_eth_rx_queue_setup(*port, 0, 1024, 0, NULL, mp) ? "rx queue"
		: rte_eth_tx_queue_setup(*port, 0, 1024, 0, NULL) ? "tx queue"
		: rte_eth_dev_start(*port) ? "start" : NULL;
	if (step) {
		tlm__err("dpdk raw %s: port %s failed at %s%s%s", role, vdev ? vdev : name, step,
			 *tlm__dpdk_first_error() ? ": " : "", tlm__dpdk_first_error());
		return NULL;
	}
	/* as the lanes' ports are: net_tap with remote= takes in only what
	 * is for its MAC otherwise, and the blast's frames are not */
	rte_eth_promiscuous_enable(*port);
	return mp;
}

/* The bytes the sender's source holds (and with copies, both ends). */
static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 131 + (i >> 12));
}

/* With copies, each frame says in its lane-header bytes where its
 * payload comes from in the source (OFF_AT, 4 bytes): the receiver copies
 * it to the same place in its destination and marks that place seen. The
 * sender gives up on a burst the PMD will not take for long (the receiver
 * is not polling yet, or is gone), so a place may never be seen. */
#define OFF_AT (14 + 20 + 8)
#define SLOTS  (POOL_BYTES / 512 + 1)

/* Every place frames landed now holds the source's bytes. */
static bool payload_intact(const uint8_t *dst, const bool *seen, uint32_t len)
{
	for (size_t k = 0; k < SLOTS; k++) {
		if (!seen[k])
			continue;
		for (size_t i = k * len; i < (k + 1) * len; i++)
			if (dst[i] != pattern(i))
				return false;
	}
	return true;
}

static void rx_child(const struct blast *bl, int out)
{
	struct rte_mbuf *b[BURST];
	uint64_t frames = 0, start, t0 = 0, t1 = 0, tc = 0, now;
	double c0 = 0, c1 = 0;
	uint16_t port;
	uint8_t *dst = bl->c->copies ? malloc(POOL_BYTES) : NULL;
	bool seen[SLOTS] = { false };
	uint64_t misplaced = 0;
	uint32_t flen = 0;

	struct rte_ether_addr mac = { 0 };

	if ((bl->c->copies && !dst) || !child_port(bl, "rx", out, &port))
		_exit(1);
	rte_eth_macaddr_get(port, &mac);
	dprintf(out, "ready " RTE_ETHER_ADDR_PRT_FMT "\n", RTE_ETHER_ADDR_BYTES(&mac));
	start = tlm__now_ns();
	for (;;) {
		uint16_t n = rte_eth_rx_burst(port, 0, b, BURST);

		now = tlm__now_ns();
		if (n) {
			/* CPU from the first frame to (within 1 ms of) the
			 * last, not the quiet spell that follows */
			if (!frames) {
				t0 = tc = now;
				c0 = c1 = cpu_s();
			} else if (now - tc > 1000000) {
				tc = now;
				c1 = cpu_s();
			}
			frames += n;
			t1 = now;
			for (uint16_t i = 0; dst && i < n; i++) {
				const uint8_t *f = rte_pktmbuf_mtod(b[i], const uint8_t *);
				uint32_t len = rte_pktmbuf_pkt_len(b[i]) - L2L4_HDR, off;

				memcpy(&off, f + OFF_AT, sizeof(off));
				if (len && off % len == 0 && off + len <= POOL_BYTES &&
				    off / len < SLOTS && (!flen || len == flen)) {
					flen = len;
					seen[off / len] = true;
					memcpy(dst + off, f + L2L4_HDR, len);
				} else {
					misplaced++;
				}
			}
			rte_pktmbuf_free_bulk(b, n);
		} else if (frames ? now - t1 > QUIET_NS : now - start > FIRST_NS) {
			break;
		}
	}
	if (!frames) {
		tlm__err("dpdk raw rx: no frame arrived");
		_exit(1);
	}
	if (dst && (misplaced || !payload_intact(dst, seen, flen))) {
		tlm__err("dpdk raw rx: the payload did not arrive as sent");
		_exit(1);
	}
	dprintf(out, "%" PRIu64 " %.9f %.9f %.0f\n", frames, (double)(t1 - t0) / 1e9,
		c1 - c0, (double)rte_get_tsc_hz());
	_exit(0);
}

/* The place in the source of the next frame's len bytes, which the
 * frame's header bytes at OFF_AT say. */
static size_t next_off(size_t *off, uint32_t len, uint8_t *hdr)
{
	if (*off + len > POOL_BYTES)
		*off = 0;
	memcpy(hdr + OFF_AT, &(uint32_t){ (uint32_t)*off }, 4);
	*off += len;
	return *off - len;
}

/* Every frame's headers: with ip_tx and ip_rx, the lanes' (Ethernet to
 * the receiver's port, IPv4, UDP; our header's bytes 0xff), else 0xff
 * throughout. A kernel-visible port hands the kernel what it would hand it
 * of the lanes' frames (af_packet: each goes up its IPv4 input, which
 * finds no route and drops it), not an unknown ethertype it drops at once. */
static uint8_t g_hdr[L2L4_HDR];

static void hdr_init(const struct blast *bl, uint16_t port, uint32_t len)
{
	const struct tlm_bench_raw_cfg *c = bl->c;
	struct rte_ether_hdr *eh = (struct rte_ether_hdr *)g_hdr;
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
	struct rte_udp_hdr *uh = (struct rte_udp_hdr *)(ip + 1);

	memset(g_hdr, 0xff, sizeof(g_hdr));
	if (!c->ip_tx || !c->ip_rx)
		return;
	eh->dst_addr = bl->rx_mac;
	rte_eth_macaddr_get(port, &eh->src_addr);
	eh->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	memset(ip, 0, sizeof(*ip));
	ip->version_ihl = RTE_IPV4_VHL_DEF;
	ip->total_length = rte_cpu_to_be_16((uint16_t)(L2L4_HDR - 14 + len));
	ip->time_to_live = 64;
	ip->next_proto_id = IPPROTO_UDP;
	ip->src_addr = rte_cpu_to_be_32(c->ip_tx);
	ip->dst_addr = rte_cpu_to_be_32(c->ip_rx);
	ip->hdr_checksum = rte_ipv4_cksum(ip);
	uh->src_port = rte_cpu_to_be_16(49152);
	uh->dst_port = rte_cpu_to_be_16(49153);
	uh->dgram_len = rte_cpu_to_be_16((uint16_t)(L2L4_HDR - 14 - 20 + len));
	uh->dgram_cksum = 0;
}

/* BURST frames of headers and, with a source, the next len bytes of it
 * copied in. */
static int fill_burst(struct rte_mempool *mp, uint8_t *src, uint32_t len, size_t *off,
		      struct rte_mbuf **b)
{
	if (rte_pktmbuf_alloc_bulk(mp, b, BURST))
		return -1;
	for (int i = 0; i < BURST; i++) {
		uint8_t *f = (uint8_t *)rte_pktmbuf_append(b[i], (uint16_t)(L2L4_HDR + len));

		memcpy(f, g_hdr, L2L4_HDR);
		if (src)
			memcpy(f + L2L4_HDR, src + next_off(off, len, f), len);
	}
	return 0;
}

/* place: BURST frames of a header mbuf chained to the next len bytes of
 * src, attached in place (the PMD reads them there). The source stays
 * mapped for the child's life, so nothing is ever given back. */
static struct rte_mbuf_ext_shared_info g_shinfo;

static int place_burst(struct rte_mempool *mp, uint8_t *src, uint32_t len, size_t *off,
		       struct rte_mbuf **b)
{
	struct rte_mbuf *d[BURST];

	if (rte_pktmbuf_alloc_bulk(mp, b, BURST))
		return -1;
	if (rte_pktmbuf_alloc_bulk(mp, d, BURST)) {
		rte_pktmbuf_free_bulk(b, BURST);
		return -1;
	}
	for (int i = 0; i < BURST; i++) {
		uint8_t *h = (uint8_t *)rte_pktmbuf_append(b[i], L2L4_HDR);

		memcpy(h, g_hdr, L2L4_HDR);
		uint8_t *p = src + next_off(off, len, h);

		tlm__extbuf_attach(d[i], p, (uint16_t)len, &g_shinfo, true);
		rte_pktmbuf_chain(b[i], d[i]);
	}
	return 0;
}

static void tx_child(const struct blast *bl, int out)
{
	const struct tlm_bench_raw_cfg *c = bl->c;
	struct rte_mbuf *b[BURST];
	struct rte_eth_link link;
	struct rte_mempool *mp;
	uint64_t sent = 0, end;
	double c0;
	uint16_t port;
	char x;
	uint8_t *src = c->copies ? malloc(POOL_BYTES) : NULL;
	uint32_t len = c->mtu + 14 - L2L4_HDR;
	size_t off = 0;

	close(bl->hold[1]);
	mp = child_port(bl, "tx", out, &port);
	if (!mp || (c->copies && !src))
		_exit(1);
	if (src)
		for (size_t i = 0; i < POOL_BYTES; i++)
			src[i] = pattern(i);
	tlm__extbuf_shinfo_init(&g_shinfo);
	hdr_init(bl, port, len);
	for (int i = 0; ; i++) {
		if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status)
			break;
		if (i == LINK_MS) {
			tlm__err("dpdk raw tx: the link did not come up");
			_exit(1);
		}
		usleep(1000);
	}
	c0 = cpu_s();
	end = tlm__now_ns() + (uint64_t)(c->seconds * 1e9);
	while (tlm__now_ns() < end) {
		uint16_t k = 0;

		if ((c->place ? place_burst : fill_burst)(mp, src, len, &off, b))
			continue;   /* the PMD still holds them all */
		for (int spin = 0; k < BURST && spin < 100000; spin++)
			k += rte_eth_tx_burst(port, 0, b + k, (uint16_t)(BURST - k));
		if (k < BURST)
			rte_pktmbuf_free_bulk(b + k, BURST - k);   /* receiver gone */
		sent += k;
	}
	dprintf(out, "%" PRIu64 " %.9f\n", sent, cpu_s() - c0);
	while (read(bl->hold[0], &x, 1) < 0 && errno == EINTR)
		;
	_exit(0);
}

/* One line from a child by deadline (ns); 0, or -1 on EOF or timeout. */
static int read_line(int fd, char *buf, size_t cap, uint64_t deadline)
{
	size_t k = 0;

	while (k + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = tlm__now_ns();

		if (now >= deadline || poll(&p, 1, (int)((deadline - now) / 1000000 + 1)) <= 0 ||
		    read(fd, buf + k, 1) != 1)
			break;
		if (buf[k++] == '\n') {
			buf[k - 1] = 0;
			return 0;
		}
	}
	buf[k] = 0;
	return -1;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	remove(path);
	return 0;
}

/* A runtime directory a child named, if it is one of ours. */
static void remove_rundir(const char *dir)
{
	if (strstr(dir, "/tlm-raw-") && !strstr(dir, ".."))
		nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* Forks fn in a child writing to a pipe; returns its pid and the read end,
 * or a negative errno. */
static pid_t spawn(void (*fn)(const struct blast *, int), const struct blast *b, int *rd)
{
	int p[2], err;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		fn(b, p[1]);
	}
	err = errno;
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return -err;
	}
	*rd = p[0];
	return pid;
}

static int reap(pid_t pid, bool kill_it)
{
	int st;

	if (pid <= 0)
		return 0;
	if (kill_it)
		kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -ECHILD;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

int tlm_bench_raw_blast(const struct tlm_bench_raw_cfg *c, struct tlm_bench_raw_result *r)
{
	struct blast b = { .c = c, .hold = { -1, -1 } };
	char rx_dir[256] = "", tx_dir[256] = "", line[256];
	uint64_t deadline;
	pid_t rx = -1, tx = -1;
	int rx_fd = -1, tx_fd = -1, rc = -EIO;
	double hz;

	memset(r, 0, sizeof(*r));
	if (c->mtu < 576 || c->mtu > 9000 || !(c->seconds > 0) || !c->vdev_tx != !c->vdev_rx ||
	    (c->vdev_tx && c->place))
		return -EINVAL;
	port_name(c->vdev_tx, r->pmd, sizeof(r->pmd));
	for (size_t n = strlen(r->pmd); n && r->pmd[n - 1] >= '0' && r->pmd[n - 1] <= '9'; n--)
		r->pmd[n - 1] = 0;   /* the driver: the port's name less its instance number */
	r->frame_bytes = c->mtu + 14;
	r->payload = c->mtu + 14 - L2L4_HDR;
	snprintf(b.sock, sizeof(b.sock), "/run/tlm-raw-%d.sock", (int)getpid());
	/* EAL setup takes seconds on a busy machine, a minute or more under
	 * TCG (the VM harness) on one: each child's start gets its own
	 * allowance; the blast, c->seconds */
	deadline = tlm__now_ns() + (uint64_t)((c->seconds + START_S) * 1e9);
	if (pipe2(b.hold, O_CLOEXEC))
		return -errno;
	/* the memif client connects once, at start: the server goes first
	 * (the receiver, or with place the sender) */
	if (c->place) {
		tx = spawn(tx_child, &b, &tx_fd);
		if (tx < 0 || read_line(tx_fd, tx_dir, sizeof(tx_dir), deadline))
			goto out;
	}
	rx = spawn(rx_child, &b, &rx_fd);
	if (rx < 0 || read_line(rx_fd, rx_dir, sizeof(rx_dir), deadline) ||
	    read_line(rx_fd, line, sizeof(line), deadline) || strncmp(line, "ready ", 6) ||
	    rte_ether_unformat_addr(line + 6, &b.rx_mac))
		goto out;
	deadline = tlm__now_ns() + (uint64_t)((c->seconds + START_S) * 1e9);
	if (!c->place)
		tx = spawn(tx_child, &b, &tx_fd);
	if (tx < 0 || (!c->place && read_line(tx_fd, tx_dir, sizeof(tx_dir), deadline)) ||
	    read_line(tx_fd, line, sizeof(line), deadline) ||
	    sscanf(line, "%" SCNu64 " %lf", &r->frames_tx, &r->cpu_tx) != 2 ||
	    read_line(rx_fd, line, sizeof(line), deadline) ||
	    sscanf(line, "%" SCNu64 " %lf %lf %lf", &r->frames_rx, &r->seconds, &r->cpu_rx,
		   &hz) != 4 || !(r->seconds > 0))
		goto out;
	r->tsc_hz = hz;
	r->Bps = (double)r->frames_rx * r->payload / r->seconds;
	rc = 0;
out:
	if (reap(rx, rc != 0) < 0)
		rc = -EIO;
	/* only now may the tx child go (see the top of this file) */
	if (b.hold[1] >= 0)
		close(b.hold[1]);
	if (reap(tx, rc != 0) < 0)
		rc = -EIO;
	if (rc)
		tlm__err("dpdk raw: the blast over %s%s%s failed", c->vdev_tx ? c->vdev_tx : "net_memif",
			 c->vdev_tx ? " to " : "", c->vdev_tx ? c->vdev_rx : "");
	remove_rundir(rx_dir);
	remove_rundir(tx_dir);
	if (b.hold[0] >= 0)
		close(b.hold[0]);
	if (rx_fd >= 0)
		close(rx_fd);
	if (tx_fd >= 0)
		close(tx_fd);
	return rc;
}

double tlm_bench_tsc_hz(void)
{
	uint64_t hz = rte_get_tsc_hz(), t0, c0;

	if (hz)
		return (double)hz;
	t0 = tlm__now_ns();
	c0 = rte_rdtsc();
	usleep(50000);
	return (double)(rte_rdtsc() - c0) * 1e9 / (double)(tlm__now_ns() - t0);
}

/* One blast between the ends the sender's and the receiver's transport
 * args give (tlm_bench_raw_blasts), at the sender's mtu= and EAL args. */
static int blast_targs(const char *targs, const char *rx_targs, double seconds, bool copies,
		       bool place, struct tlm_bench_raw_result *r)
{
	struct tlm_bench_raw_cfg c = { .seconds = seconds, .copies = copies, .place = place };
	char eal[512], rx_eal[512], vtx[512], vrx[512];
	unsigned mtu, rx_mtu;
	int rc = tlm__dpdk_raw_end(targs, eal, sizeof(eal), vtx, sizeof(vtx), &mtu, &c.ip_tx);

	/* the receiver's vdev; the blast runs both children with the
	 * sender's EAL arguments and mtu= */
	if (!rc)
		rc = tlm__dpdk_raw_end(rx_targs ? rx_targs : targs, rx_eal, sizeof(rx_eal), vrx,
				       sizeof(vrx), &rx_mtu, &c.ip_rx);
	if (rc)
		return rc;
	/* a device both ends name alike is one device: not two ends of a path */
	if (!*vtx != !*vrx || (*vtx && !strcmp(vtx, vrx)))
		return -ENODEV;
	if (*vtx && c.place)
		return -EINVAL;
	c.mtu = mtu;
	c.eal_args = *eal ? eal : NULL;
	c.vdev_tx = *vtx ? vtx : NULL;
	c.vdev_rx = *vrx ? vrx : NULL;
	return tlm_bench_raw_blast(&c, r);
}

int tlm_bench_raw_blasts(const char *targs, const char *rx_targs, double seconds,
			 struct tlm_bench_raws *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	rc = blast_targs(targs, rx_targs, seconds, false, false, &out->frames);
	if (!rc)
		rc = blast_targs(targs, rx_targs, seconds, true, false, &out->copy);
	if (!rc) {
		rc = blast_targs(targs, rx_targs, seconds, true, true, &out->place);
		if (rc == -EINVAL)
			rc = 0;   /* a vdev pair: place is the memif client's trick */
	}
	out->ran = rc == 0;
	return rc;
}
