/* SPDX-License-Identifier: MIT */
/*
 * DPDK lane goodput against a raw PMD blast, same PMD (net_memif between
 * two processes), same frame size, in one run:
 *
 *   dpdk_bench [--seconds S] [--mtu N] [--args TRANSPORT_ARGS] [--live]
 *              [--no-raw] [--no-tcp] [--json FILE]
 *
 *   raw      one process tx_bursts frames of the lane's full frame size
 *            (headers written, no payload copy, no protocol), the other
 *            rx_bursts and counts; raw_Bps = frame payload bytes / s
 *            (the benchmark library's, bench/lib/raw-dpdk.c, which `tlm bench
 *            transport` runs too)
 *   raw_copy the same with page data copied into each frame at the sender
 *            and out of it at the receiver (the least a page transfer does;
 *            no protocol, no check): raw_copy_Bps, ratio_raw_copy
 *   raw_place one pass over each page per side, the least a zero-copy
 *            lane could do: the sender's frames point at the source pages
 *            (rte_pktmbuf_attach_extbuf, the PMD's copy is the only one),
 *            the receiver is a zero-copy memif client and copies out:
 *            raw_place_Bps, raw_place_over_raw, ratio_raw_place
 *   lanes    one dpdk lane in page mode: 4 KiB page records, sender to
 *            receiver; the receiver verifies every crc (as always) and
 *            checks each page's stamp; goodput_Bps = page data bytes / s
 *            at the receiver. --live: the sender registers its pages
 *            (TLM_REG_SRC) and sends TLM_PF_LIVE records, crc left to
 *            the lane; otherwise it sums each crc itself, as the engine
 *            does for its staging copies.
 *   tcp      the same lanes over transport-tcp on loopback (--no-tcp: not)
 *   cycles per page = process CPU time (all threads, poll threads
 *   included) x TSC rate / pages, for each side; pages_per_s_per_core =
 *   TSC rate / cycles per page (what one core sustains on that side;
 *   10GbE line rate is ~290k pages/s per direction).
 *
 * Each phase runs in fresh child processes (the EAL is per process), one
 * after the other. Prints one JSON object. The machine's other load shows
 * in every figure: compare figures of one run.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tlm-internal.h"
#include "transport-dpdk/bench.h"
#include "tlm-bench.h"

extern const struct tlm_lane_ops tlm__dpdk_ops;
extern const struct tlm_lane_ops tlm__tcp_ops;
static const struct tlm_lane_ops *ops = &tlm__dpdk_ops;
static const char *peer_addr;   /* NULL: the transport's default */
static bool live;

/* A full lane segment: Ethernet frame of mtu + 14 bytes, of which
 * mtu - 66 (IPv4 20, UDP 8, lane header 38) are stream payload. */
static unsigned mtu = TLM__DPDK_MEMIF_MTU;   /* as the lanes on the embedded memif */

static double seconds = 2.0;
static const char *targs = "";

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now_s(void)
{
	return (double)tlm__now_ns() / 1e9;
}

/* The library's errors (TLM_BENCH_DEBUG: everything, EAL chatter too). */
static void log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_WARN || getenv("TLM_BENCH_DEBUG"))
		fprintf(stderr, "dpdk_bench: %s\n", msg);
}

/* ---- lanes ---- */

static int count_apply(void *arg, const struct tlm_page_rec *r)
{
	uint64_t *st = arg;

	if (r->flags & TLM_PF_LAST) {
		st[1] = 1;
		return 0;
	}
	if (r->len != 4096 || ((const uint8_t *)r->data)[0] != (uint8_t)(r->index % 64))
		return -EINVAL;
	st[0]++;
	return 0;
}

static void lane_rx(int out)
{
	struct tlm_xlistener *xl;
	struct tlm_lane *l;
	uint64_t st[2] = { 0, 0 };
	struct tlm_page_sink sink = { count_apply, st };
	double t0 = 0, c0 = 0;

	if (ops->listen(peer_addr, "0", targs, &xl))
		exit(1);
	dprintf(out, "%d\n", ops->listener_port(xl));
	if (ops->accept(xl, 20000, &l))
		exit(1);
	if (ops->set_mode)
		ops->set_mode(l, TLM_MODE_PAGES);
	else
		l->mode = TLM_MODE_PAGES;
	while (!st[1]) {
		int n = ops->dp->recv_pages(l, &sink, 20000);
		if (n <= 0)
			exit(1);
		if (!t0) {
			t0 = now_s();
			c0 = cpu_s();
		}
	}
	double t = now_s() - t0, c = cpu_s() - c0;
	dprintf(out, "%llu %.6f %.6f\n", (unsigned long long)st[0], t, c);
	ops->close(l);
	ops->listener_close(xl);
	exit(0);
}

static void lane_tx(const char *port, int out)
{
	struct tlm_lane *l;
	static uint8_t pages[64][4096];
	struct tlm_page_rec recs[64];
	uint64_t sent = 0;

	if (ops->connect(peer_addr, port, targs, 1, 20000, &l))
		exit(1);
	if (ops->set_mode)
		ops->set_mode(l, TLM_MODE_PAGES);
	else
		l->mode = TLM_MODE_PAGES;
	if (live && tlm_lane_register_region(l, 0, pages, sizeof(pages), TLM_REG_SRC, 1000)) {
		fprintf(stderr, "lane tx: --live: register_region refused\n");
		exit(1);
	}
	/* page i of the 64 starts with byte i, always: a LIVE page (--live)
	 * is read when its packet goes out, maybe after send_pages returned */
	for (unsigned i = 0; i < 64; i++)
		pages[i][0] = (uint8_t)i;
	double c0 = cpu_s(), end = now_s() + seconds;
	while (now_s() < end) {
		for (unsigned i = 0; i < 64; i++) {
			recs[i] = (struct tlm_page_rec){ .index = sent + i, .len = 4096,
				.data = pages[i], .flags = live ? TLM_PF_LIVE : 0,
				.crc = live ? 0 : tlm_crc32c(0, pages[i], 4096) };
		}
		int r = ops->dp->send_pages(l, recs, 64);
		if (r != 64) {
			fprintf(stderr, "lane tx: send_pages: %s\n", tlm_strerror(r));
			exit(1);
		}
		sent += 64;
	}
	recs[0] = (struct tlm_page_rec){ .flags = TLM_PF_LAST };
	if (ops->dp->send_pages(l, recs, 1) != 1)
		exit(1);
	ops->dp->flush(l);
	if (live)
		tlm_lane_unregister_regions(l);
	ops->close(l);   /* lingers until everything is acked */
	dprintf(out, "%llu %.6f\n", (unsigned long long)sent, cpu_s() - c0);
	exit(0);
}

static int reap(pid_t p)
{
	int st;

	waitpid(p, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFSIGNALED(st))
		fprintf(stderr, "child %d: signal %d\n", (int)p, WTERMSIG(st));
	else
		fprintf(stderr, "child %d: exit %d\n", (int)p, WEXITSTATUS(st));
	return -1;
}

static int read_line(int fd, char *buf, size_t n)
{
	size_t k = 0;

	while (k + 1 < n) {
		ssize_t r = read(fd, buf + k, 1);
		if (r <= 0)
			break;
		if (buf[k++] == '\n')
			break;
	}
	buf[k] = 0;
	return k ? 0 : -1;
}

struct lane_run {
	unsigned long long pages_rx, pages_tx;
	double t, crx, ctx;
};

/* One lanes phase: receiver and sender in two fresh processes. */
static int run_lanes(struct lane_run *lr)
{
	char line[256], port[16];
	int p2[2], p3[2];
	pid_t r, t;

	if (pipe(p2))
		return -1;
	r = fork();
	if (r == 0)
		lane_rx(p2[1]);
	close(p2[1]);
	if (read_line(p2[0], port, sizeof(port))) {
		reap(r);
		return -1;
	}
	port[strcspn(port, "\n")] = 0;
	if (pipe(p3))
		return -1;
	t = fork();
	if (t == 0)
		lane_tx(port, p3[1]);
	close(p3[1]);
	if (read_line(p2[0], line, sizeof(line)) ||
	    sscanf(line, "%llu %lf %lf", &lr->pages_rx, &lr->t, &lr->crx) != 3) {
		fprintf(stderr, "lane phase failed (receiver)\n");
		kill(t, SIGKILL);
		reap(t);
		return -1;
	}
	if (read_line(p3[0], line, sizeof(line)) ||
	    sscanf(line, "%llu %lf", &lr->pages_tx, &lr->ctx) != 2 || reap(t) || reap(r)) {
		fprintf(stderr, "lane phase failed (sender)\n");
		return -1;
	}
	close(p2[0]);
	close(p3[0]);
	return lr->pages_rx == lr->pages_tx ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "args", required_argument, NULL, 'a' },
		{ "json", required_argument, NULL, 'j' },
		{ "mtu", required_argument, NULL, 'm' },
		{ "no-raw", no_argument, NULL, 'n' },
		{ "no-tcp", no_argument, NULL, 'T' },
		{ "live", no_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *json = NULL;
	int opt;
	struct tlm_bench_raws raws = { 0 };
	struct tlm_bench_raw_result *raw = &raws.frames, *rawc = &raws.copy, *rawp = &raws.place;
	struct lane_run dl = { 0 }, tl = { 0 };

	static char args_buf[512];
	bool no_raw = false, no_tcp = false;

	tlm_set_log_fn(log_cb, NULL);
	while ((opt = getopt_long(argc, argv, "s:a:j:m:nTLh", lo, NULL)) != -1) {
		if (opt == 'n')
			no_raw = true;
		else if (opt == 'T')
			no_tcp = true;
		else if (opt == 'L')
			live = true;
		else if (opt == 'm')
			mtu = (unsigned)atoi(optarg);
		else if (opt == 's')
			seconds = atof(optarg);
		else if (opt == 'a')
			targs = optarg;
		else if (opt == 'j')
			json = optarg;
		else {
			fprintf(opt == 'h' ? stdout : stderr,
				"usage: dpdk_bench [--seconds S] [--mtu N] [--args TRANSPORT_ARGS] "
				"[--live] [--no-raw] [--no-tcp] [--json FILE]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (mtu < 576 || mtu > 9000)
		return 2;
	/* the lanes run at the same frame size as the raw blast */
	snprintf(args_buf, sizeof(args_buf), "%s%smtu=%u", targs, targs[0] ? "," : "", mtu);
	targs = args_buf;
	/* raw (--no-raw: lanes only, e.g. under a profiler); first, while
	 * this process has no EAL (nor has it later: the lanes run in
	 * children too) */
	if (!no_raw && tlm_bench_raw_blasts(targs, NULL, seconds, &raws)) {
		fprintf(stderr, "raw phase failed\n");
		return 1;
	}
	raw->frame_bytes = mtu + 14;
	raw->payload = mtu - 66;
	if (run_lanes(&dl))
		return 1;
	if (!no_tcp) {
		/* transport-tcp on loopback, same records, same bench */
		const char *dargs = targs;
		bool dlive = live;
		ops = &tlm__tcp_ops;
		peer_addr = "127.0.0.1";
		targs = "";
		live = false;
		if (run_lanes(&tl))
			return 1;
		targs = dargs;
		live = dlive;
	}
	double hz = raw->tsc_hz > 0 ? raw->tsc_hz : tlm_bench_tsc_hz();
	/* --no-raw: zeros, not divisions by zero */
	double raw_fps = raw->seconds > 0 ? (double)raw->frames_rx / raw->seconds : 0;
	double raw_cpf = raw->frames_rx ? raw->cpu_rx * hz / (double)raw->frames_rx : 0;
	double good_Bps = (double)dl.pages_rx * 4096 / dl.t;
	double cpp_tx = dl.ctx * hz / (double)dl.pages_tx, cpp_rx = dl.crx * hz / (double)dl.pages_rx;
	FILE *f = json ? fopen(json, "w") : stdout;
	if (!f)
		return 1;
	fprintf(f, "{\"pmd\": \"net_memif\", \"frame_bytes\": %u, \"segment_payload\": %u, "
		"\"page_size\": 4096, \"seconds\": %.1f, \"live\": %s,\n"
		" \"raw_Bps\": %.0f, \"raw_frames_per_s\": %.0f, \"raw_rx_cycles_per_frame\": %.0f,\n"
		" \"raw_copy_Bps\": %.0f, \"ratio_raw_copy\": %.3f,\n"
		" \"raw_place_Bps\": %.0f, \"raw_place_over_raw\": %.3f, \"ratio_raw_place\": %.3f,\n"
		" \"goodput_Bps\": %.0f, \"pages\": %llu, \"ratio\": %.3f,\n"
		" \"cycles_per_page_tx\": %.0f, \"cycles_per_page_rx\": %.0f,\n"
		" \"pages_per_s_per_core_tx\": %.0f, \"pages_per_s_per_core_rx\": %.0f, "
		"\"pages_per_s_per_core\": %.0f,\n",
		raw->frame_bytes, raw->payload, seconds, live ? "true" : "false", raw->Bps,
		raw_fps, raw_cpf, rawc->Bps, rawc->Bps > 0 ? good_Bps / rawc->Bps : 0, rawp->Bps,
		raw->Bps > 0 ? rawp->Bps / raw->Bps : 0, rawp->Bps > 0 ? good_Bps / rawp->Bps : 0,
		good_Bps, dl.pages_rx,
		raw->Bps > 0 ? good_Bps / raw->Bps : 0, cpp_tx, cpp_rx, hz / cpp_tx, hz / cpp_rx,
		hz / (cpp_tx > cpp_rx ? cpp_tx : cpp_rx));
	if (!no_tcp)
		fprintf(f, " \"tcp_loopback\": {\"goodput_Bps\": %.0f, \"cycles_per_page_tx\": %.0f, "
			"\"cycles_per_page_rx\": %.0f},\n", (double)tl.pages_rx * 4096 / tl.t,
			tl.ctx * hz / (double)tl.pages_tx, tl.crx * hz / (double)tl.pages_rx);
	fprintf(f, " \"transport_args\": \"%s\"}\n", targs);
	if (json)
		fclose(f);
	return 0;
}
