/* SPDX-License-Identifier: MIT */
/*
 * tlm bench transport: move page records over N data lanes and measure
 * goodput (page data bytes per second), with every page verified by the
 * receiver. The run itself is the benchmark library's (bench/lib: the page
 * pattern, both ends, the report, the raw PMD blasts, --rounds; docs/bench.md
 * says what each figure means); this file reads the options and prints.
 *
 *   loopback (default)                 --listen / --connect (two hosts)
 *   the receiver a forked child,       receiver: tlm_bench_receive
 *   the sender this process            sender:   tlm_bench_send
 *   (tlm_bench_loopback)
 *
 * dpdk on loopback, in this order: the raw PMD blasts (while this process
 * has no EAL yet), --compare tcp, the lanes; --rounds N repeats raw and
 * lanes N times and reports the median round. For dpdk, cycles per page =
 * process CPU x TSC rate / pages; line_rate_10GbE_one_core says whether
 * both sides reach 1.19 GB/s of page data on one core each.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tlm-bench.h"

#define VM_ADDR     "198.18.0.1"         /* rxe0 in tests/vm/run-in-vm.sh */

struct opts {
	const char *transport;
	const char *transport_args;
	unsigned lanes;
	uint64_t bytes;
	uint32_t page_size;
	bool page_size_set;
	bool verify_crc;           /* --verify crc (else full) */
	bool json;
	const char *listen;
	const char *connect;
	const char *psk_path;
	int protect;               /* --protect */
	int timeout_ms;
	bool copy;                 /* --copy: no zero copy */
	const char *local_addr;    /* --local-addr (loopback mode) */
	bool in_vm;
	const char *peer;          /* --peer ib_write_bw */
	bool no_raw;               /* dpdk: no raw PMD blast */
	double raw_seconds;        /* dpdk: how long the raw blast lasts */
	bool compare_tcp;          /* --compare tcp */
	unsigned rounds;           /* --rounds N: raw blasts and lanes, N times */
	struct tlm_cli_targs ta;   /* --transport-args, --rdma-dev, ..., --fault */
	char targs[512];
	char rx_targs[512];        /* loopback receiver's: no --fault */
	const char *rx_args;       /* --rx-transport-args: the receiver's own */
};

/* What goes around the run: dpdk's raw blast, the tcp comparison. */
struct extra {
	double tsc_hz;             /* > 0: cycle figures */
	const char *raw_skipped;   /* why there is no raw blast, or NULL */
	struct tlm_bench_raws raw;
	const struct tlm_bench_outcome *tcp; /* --compare tcp */
	const struct tlm_bench_round *rounds; /* --rounds N > 1: each; the figures are rounds[median] */
	unsigned nrounds, median;
};

static void raw_cost(struct tlm_json *j, const char *pfx, const struct tlm_bench_raw_result *r,
		     uint32_t page_size)
{
	double pages = (double)r->frames_rx * r->payload / page_size;
	char k[64];

	if (!(pages > 0) || !(r->tsc_hz > 0))
		return;
	snprintf(k, sizeof(k), "%scycles_per_page_tx", pfx);
	tlm_json_dbl(j, k, r->cpu_tx * r->tsc_hz / pages);
	snprintf(k, sizeof(k), "%scycles_per_page_rx", pfx);
	tlm_json_dbl(j, k, r->cpu_rx * r->tsc_hz / pages);
}

static void json_cost(struct tlm_json *j, const char *prefix, const struct tlm_bench_cost *c,
		      double hz)
{
	char k[64];

	if (hz > 0) {
		snprintf(k, sizeof(k), "%scycles_per_page_tx", prefix);
		tlm_json_dbl(j, k, c->cycles_tx);
		snprintf(k, sizeof(k), "%scycles_per_page_rx", prefix);
		tlm_json_dbl(j, k, c->cycles_rx);
	}
	snprintf(k, sizeof(k), "%spages_per_s_per_core_tx", prefix);
	tlm_json_u64(j, k, (uint64_t)c->pps_tx);
	snprintf(k, sizeof(k), "%spages_per_s_per_core_rx", prefix);
	tlm_json_u64(j, k, (uint64_t)c->pps_rx);
}

static void print_json(const struct opts *o, const struct tlm_bench_outcome *r, const struct extra *x)
{
	const struct tlm_bench_report *rep = &r->rep;
	struct tlm_bench_cost c = tlm_bench_cost_of(r, x->tsc_hz);
	double gp = tlm_bench_goodput(r);
	struct tlm_json j;

	tlm_json_begin(&j, stdout);
	tlm_json_str(&j, "transport", o->transport);
	tlm_json_str(&j, "protect", tlm_protect_name(o->protect));
	tlm_json_u64(&j, "lanes", o->lanes);
	tlm_json_u64(&j, "page_size", o->page_size);
	tlm_json_u64(&j, "bytes", r->bytes);
	tlm_json_u64(&j, "pages", rep->pages);
	tlm_json_dbl(&j, "seconds", r->secs);
	tlm_json_u64(&j, "goodput_Bps", (uint64_t)gp);
	tlm_json_bool(&j, "verified", r->verified);
	tlm_json_str(&j, "verify", rep->placed ? "full, in place after the run"
					       : rep->full ? "full" : "crc");
	tlm_json_u64(&j, "bad_pages", rep->bad);
	tlm_json_bool(&j, "zero_copy", tlm_bench_placed_mode(r));
	tlm_json_bool(&j, "live_send", r->live_send);
	tlm_json_u64(&j, "pages_placed", rep->placed);
	tlm_json_u64(&j, "pages_placed_encrypted", rep->staged);
	tlm_json_u64(&j, "pages_verified_in_place", rep->vpages);
	tlm_json_dbl(&j, "verify_seconds", r->verify_s);
	tlm_json_dbl(&j, "register_s_per_GiB", tlm_bench_reg_s_per_gib(rep));
	tlm_json_u64(&j, "registered_bytes", rep->reg_bytes);
	if (r->peer_Bps >= 0) {
		tlm_json_str(&j, "peer", o->peer);
		tlm_json_str(&j, "peer_device", r->peer_dev);
		tlm_json_u64(&j, "peer_Bps", (uint64_t)r->peer_Bps);
		tlm_json_dbl(&j, "ratio", r->peer_Bps > 0 ? gp / r->peer_Bps : 0);
	}
	if (x->raw.ran) {
		tlm_json_str(&j, "raw_pmd", x->raw.frames.pmd);
		tlm_json_u64(&j, "raw_frame_bytes", x->raw.frames.frame_bytes);
		tlm_json_u64(&j, "raw_payload_per_frame", x->raw.frames.payload);
		tlm_json_dbl(&j, "raw_seconds", x->raw.frames.seconds);
		tlm_json_u64(&j, "raw_frames_per_s", (uint64_t)((double)x->raw.frames.frames_rx /
								 x->raw.frames.seconds));
		tlm_json_u64(&j, "raw_Bps", (uint64_t)x->raw.frames.Bps);
		tlm_json_dbl(&j, "ratio", x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0);
		tlm_json_u64(&j, "raw_copy_Bps", (uint64_t)x->raw.copy.Bps);
		tlm_json_dbl(&j, "ratio_raw_copy", x->raw.copy.Bps > 0 ? gp / x->raw.copy.Bps : 0);
		/* the blast's own cost per page of payload delivered, each
		 * side (its process CPU while blasting): the PMD's floor, next
		 * to the lanes' cycles_per_page_tx/_rx */
		raw_cost(&j, "raw_", &x->raw.frames, o->page_size);
		raw_cost(&j, "raw_copy_", &x->raw.copy, o->page_size);
		/* the headline: against raw_place where there is one (memif:
		 * the one-pass transfer a verified page transfer can approach;
		 * the plain blast copies hot buffers and touches no page), else
		 * against the plain blast */
		bool place = x->raw.place.Bps > 0;
		tlm_json_str(&j, "headline", place ? "ratio_raw_place" : "ratio");
		tlm_json_dbl(&j, "headline_ratio", place ? gp / x->raw.place.Bps :
			     x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0);
		if (place) {   /* memif only */
			tlm_json_u64(&j, "raw_place_Bps", (uint64_t)x->raw.place.Bps);
			tlm_json_dbl(&j, "raw_place_over_raw", x->raw.frames.Bps > 0 ?
				     x->raw.place.Bps / x->raw.frames.Bps : 0);
			tlm_json_dbl(&j, "ratio_raw_place", gp / x->raw.place.Bps);
		}
	} else if (x->raw_skipped) {
		tlm_json_str(&j, "raw_skipped", x->raw_skipped);
	}
	if (x->tsc_hz > 0) {
		tlm_json_u64(&j, "tsc_hz", (uint64_t)x->tsc_hz);
		json_cost(&j, "", &c, x->tsc_hz);
		tlm_json_u64(&j, "line_rate_10GbE_pages_per_s",
			     (uint64_t)tlm_bench_line_rate_pps(o->page_size));
		tlm_json_bool(&j, "line_rate_10GbE_one_core",
			      (c.pps_tx < c.pps_rx ? c.pps_tx : c.pps_rx) >=
			      tlm_bench_line_rate_pps(o->page_size));
	}
	if (x->tcp) {
		struct tlm_bench_cost tc = tlm_bench_cost_of(x->tcp, x->tsc_hz);

		tlm_json_u64(&j, "tcp_goodput_Bps", (uint64_t)tlm_bench_goodput(x->tcp));
		tlm_json_bool(&j, "tcp_verified", x->tcp->verified);
		tlm_json_obj(&j, "tcp_cpu_seconds");
		tlm_json_dbl(&j, "sender", (double)x->tcp->cpu / 1e9);
		tlm_json_dbl(&j, "receiver", (double)x->tcp->rep.cpu / 1e9);
		tlm_json_end_obj(&j);
		json_cost(&j, "tcp_", &tc, x->tsc_hz);
	}
	if (x->nrounds) {
		tlm_json_u64(&j, "rounds", x->nrounds);
		tlm_json_u64(&j, "median_round", x->median + 1);
		tlm_json_arr(&j, "per_round");
		for (unsigned i = 0; i < x->nrounds; i++) {
			const struct tlm_bench_round *d = &x->rounds[i];
			double g = tlm_bench_goodput(&d->out);

			tlm_json_obj(&j, NULL);
			tlm_json_u64(&j, "goodput_Bps", (uint64_t)g);
			tlm_json_bool(&j, "verified", d->out.verified);
			if (d->raw.ran) {
				tlm_json_u64(&j, "raw_Bps", (uint64_t)d->raw.frames.Bps);
				tlm_json_u64(&j, "raw_copy_Bps", (uint64_t)d->raw.copy.Bps);
				if (d->raw.place.Bps > 0)
					tlm_json_u64(&j, "raw_place_Bps", (uint64_t)d->raw.place.Bps);
				tlm_json_dbl(&j, "ratio", d->raw.frames.Bps > 0 ? g / d->raw.frames.Bps : 0);
				if (d->raw.place.Bps > 0)
					tlm_json_dbl(&j, "ratio_raw_place", g / d->raw.place.Bps);
			}
			tlm_json_end_obj(&j);
		}
		tlm_json_end_arr(&j);
		if (x->raw.ran) {
			struct tlm_bench_best b = tlm_bench_best_of(x->rounds, x->nrounds);

			tlm_json_obj(&j, "best");
			tlm_json_dbl(&j, "headline_ratio", b.place > 0 ? b.goodput / b.place :
				     b.raw > 0 ? b.goodput / b.raw : 0);
			tlm_json_u64(&j, "goodput_Bps", (uint64_t)b.goodput);
			tlm_json_u64(&j, "raw_Bps", (uint64_t)b.raw);
			if (b.place > 0)
				tlm_json_u64(&j, "raw_place_Bps", (uint64_t)b.place);
			tlm_json_dbl(&j, "ratio", b.raw > 0 ? b.goodput / b.raw : 0);
			if (b.place > 0) {
				tlm_json_dbl(&j, "ratio_raw_place", b.goodput / b.place);
				tlm_json_dbl(&j, "raw_place_over_raw", b.raw > 0 ? b.place / b.raw : 0);
			}
			tlm_json_end_obj(&j);
		}
	}
	tlm_json_obj(&j, "peak_rss_bytes");
	tlm_json_u64(&j, "sender", x->nrounds ? x->rounds[x->median].sender_rss :
						tlm_bench_peak_rss());
	tlm_json_u64(&j, "receiver", rep->rss);
	tlm_json_end_obj(&j);
	tlm_json_obj(&j, "cpu_seconds");
	tlm_json_dbl(&j, "sender", (double)r->cpu / 1e9);
	tlm_json_dbl(&j, "receiver", (double)rep->cpu / 1e9);
	tlm_json_end_obj(&j);
	tlm_json_arr(&j, "per_lane");
	for (unsigned i = 0; i < o->lanes; i++) {
		const struct tlm_bench_lane *l = &rep->lane[i];
		double ls = (double)l->ns / 1e9;

		tlm_json_obj(&j, NULL);
		tlm_json_u64(&j, "lane", i + 1);
		tlm_json_u64(&j, "bytes", l->bytes);
		tlm_json_u64(&j, "pages", l->pages);
		tlm_json_dbl(&j, "seconds", ls);
		tlm_json_u64(&j, "goodput_Bps", ls > 0 ? (uint64_t)((double)l->bytes / ls) : 0);
		tlm_json_end_obj(&j);
	}
	tlm_json_end_arr(&j);
	tlm_json_finish(&j);
}

static void print_result(const struct opts *o, const struct tlm_bench_outcome *r, const struct extra *x)
{
	const struct tlm_bench_report *rep = &r->rep;
	double gp = tlm_bench_goodput(r), secs = r->secs;

	if (o->json) {
		print_json(o, r, x);
		return;
	}
	printf("tlm bench transport: %s, %u data lane%s, %u-byte pages\n", o->transport,
	       o->lanes, o->lanes == 1 ? "" : "s", o->page_size);
	for (unsigned i = 0; i < o->lanes; i++) {
		const struct tlm_bench_lane *l = &rep->lane[i];
		double ls = (double)l->ns / 1e9;

		printf("  lane %2u: %10.1f MiB in %7.3f s  %9.1f MB/s\n", i + 1,
		       (double)l->bytes / 1048576.0, ls,
		       ls > 0 ? (double)l->bytes / ls / 1e6 : 0.0);
	}
	printf("  total:   %10.1f MiB in %7.3f s  %9.1f MB/s (%.2f Gbit/s)\n",
	       (double)r->bytes / 1048576.0, secs, gp / 1e6, gp * 8 / 1e9);
	printf("  %s: %" PRIu64 " pages checked by the receiver, %" PRIu64 " bad\n",
	       r->verified ? "verified" : "NOT VERIFIED", rep->pages, rep->bad);
	if (tlm_bench_placed_mode(r))
		printf("  zero copy: %" PRIu64 " pages placed by the transport (%" PRIu64
		       " sealed through staging buffers), %" PRIu64
		       " checked in place afterwards (%.2f s, not timed); registration"
		       " %.3f s per GiB\n", rep->placed, rep->staged, rep->vpages, r->verify_s,
		       tlm_bench_reg_s_per_gib(rep));
	else if (r->live_send)
		printf("  sent from registered memory (TLM_PF_LIVE, no staging copy); no window"
		       " registered at the receiver (dpdk takes none), so %" PRIu64 " pages"
		       " placed: each was copied out of the transport's ring and checked as it"
		       " came\n", rep->placed);
	if (r->peer_Bps >= 0)
		printf("  %s on %s: %.1f MB/s; tlm / %s = %.2f\n", o->peer, r->peer_dev,
		       r->peer_Bps / 1e6, o->peer, r->peer_Bps > 0 ? gp / r->peer_Bps : 0.0);
	if (x->raw.ran) {
		if (x->raw.place.Bps > 0)
			printf("  headline: lanes / raw_place = %.2f (the one-pass raw transfer"
			       " below; lanes / raw = %.2f for reference)\n", gp / x->raw.place.Bps,
			       x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0.0);
		else
			printf("  headline: lanes / raw = %.2f\n",
			       x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0.0);
		printf("  raw PMD blast (%s, %u-byte frames, no protocol, %.1f s):"
		       " %.1f MB/s; lanes / raw = %.2f\n", x->raw.frames.pmd,
		       x->raw.frames.frame_bytes, x->raw.frames.seconds,
		       x->raw.frames.Bps / 1e6, x->raw.frames.Bps > 0 ? gp / x->raw.frames.Bps : 0.0);
		printf("  raw PMD blast with the page copies (source -> frame, frame ->"
		       " destination): %.1f MB/s; lanes / that = %.2f\n", x->raw.copy.Bps / 1e6,
		       x->raw.copy.Bps > 0 ? gp / x->raw.copy.Bps : 0.0);
		if (x->raw.place.Bps > 0)
			printf("  raw PMD blast with one pass per side (source attached to the"
			       " frame, zero-copy memif receiver): %.1f MB/s = %.2f x raw; lanes /"
			       " that = %.2f\n", x->raw.place.Bps / 1e6, x->raw.frames.Bps > 0 ?
			       x->raw.place.Bps / x->raw.frames.Bps : 0.0, gp / x->raw.place.Bps);
	} else if (x->raw_skipped) {
		printf("  raw PMD blast: skipped (%s)\n", x->raw_skipped);
	}
	if (x->tsc_hz > 0) {
		struct tlm_bench_cost c = tlm_bench_cost_of(r, x->tsc_hz);
		double line = tlm_bench_line_rate_pps(o->page_size);

		printf("  per page: sender %.0f cycles (%.0f k pages/s on one core), receiver"
		       " %.0f cycles (%.0f k/s); 10GbE line rate (%.0f k pages/s) on one core:"
		       " %s\n", c.cycles_tx, c.pps_tx / 1e3, c.cycles_rx, c.pps_rx / 1e3,
		       line / 1e3, (c.pps_tx < c.pps_rx ? c.pps_tx : c.pps_rx) >= line ? "yes"
											  : "no");
	}
	if (x->tcp) {
		struct tlm_bench_cost c = tlm_bench_cost_of(x->tcp, x->tsc_hz);

		printf("  tcp lanes on loopback, same run: %.1f MB/s, %s; per page: sender"
		       " %.0f k pages/s on one core, receiver %.0f k/s", tlm_bench_goodput(x->tcp) / 1e6,
		       x->tcp->verified ? "verified" : "NOT VERIFIED", c.pps_tx / 1e3,
		       c.pps_rx / 1e3);
		if (x->tsc_hz > 0)
			printf(" (%.0f and %.0f cycles)", c.cycles_tx, c.cycles_rx);
		printf("\n");
	}
	if (x->nrounds) {
		double lo = 1e300, hi = 0;

		for (unsigned i = 0; i < x->nrounds; i++) {
			double k = tlm_bench_round_key(&x->rounds[i]);
			lo = k < lo ? k : lo;
			hi = k > hi ? k : hi;
		}
		printf("  rounds: %u, these figures from round %u, the median by %s; "
		       "across rounds %.2f .. %.2f%s\n", x->nrounds, x->median + 1,
		       !x->raw.ran ? "goodput" : x->raw.place.Bps > 0 ? "lanes / raw_place" :
		       "lanes / raw", x->raw.ran ? lo : lo / 1e6,
		       x->raw.ran ? hi : hi / 1e6, x->raw.ran ? "" : " MB/s");
		if (x->raw.ran) {
			struct tlm_bench_best b = tlm_bench_best_of(x->rounds, x->nrounds);

			printf("  best of the rounds: lanes %.1f MB/s, raw %.1f MB/s; lanes / raw"
			       " %.2f", b.goodput / 1e6, b.raw / 1e6,
			       b.raw > 0 ? b.goodput / b.raw : 0);
			if (b.place > 0)
				printf("; raw_place %.1f MB/s, lanes / raw_place %.2f, raw_place /"
				       " raw %.2f", b.place / 1e6, b.goodput / b.place,
				       b.raw > 0 ? b.place / b.raw : 0);
			printf("\n");
		}
	}
	printf("  peak RSS: sender %.1f MiB, receiver %.1f MiB\n",
	       (double)(x->nrounds ? x->rounds[x->median].sender_rss : tlm_bench_peak_rss()) /
	       1048576.0, (double)rep->rss / 1048576.0);
	printf("  CPU: sender %.3f s, receiver %.3f s\n", (double)r->cpu / 1e9,
	       (double)rep->cpu / 1e9);
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm bench transport [--transport NAME] [--lanes N] [--bytes SIZE]\n"
"                           [--page-size N] [--json] [--psk FILE]\n"
"                           [--protect encrypt|integrity|none]\n"
"                           [--listen ADDR:PORT | --connect ADDR:PORT]\n"
"                           [--transport-args ARGS] [--rx-transport-args ARGS]\n"
"                           [--timeout MS]\n"
"                           [--verify full|crc] [--copy] [--local-addr ADDR]\n"
"                           [--peer ib_write_bw] [--in-vm]\n"
"                           [--dpdk-args \"ARGS\"] [--fault SPEC]\n"
"                           [--compare tcp] [--no-raw] [--raw-seconds S]\n"
"                           [--rounds N]\n"
"\n"
"Moves SIZE bytes of page records over N data lanes and reports goodput\n"
"(page data per second) per lane and in total; the receiver checks every\n"
"byte of every page. By default both ends run on this machine (loopback,\n"
"random key). --listen runs the receiving end only, --connect the sending\n"
"end only (both need --psk FILE, the same key on both hosts).\n"
"\n"
"  --transport NAME   tcp (default), or another built-in transport\n"
"  --lanes N          data lanes, 1..%d (default 4)\n"
"  --bytes SIZE       total page data, K/M/G suffixes (default 1G)\n"
"  --page-size N      512..65536, a power of two (default 4096)\n"
"  --json             one JSON object instead of the summary\n"
"  --protect MODE     encrypt (default): every frame sealed with an AEAD;\n"
"                     integrity: sealed in clear text; none: crc32c only, for\n"
"                     a path you trust (docs/security.md); rdma places pages\n"
"                     zero-copy in each: encrypt seals them into registered\n"
"                     staging buffers opened into place, integrity sends a\n"
"                     MAC per page\n"
"  --verify full|crc  receiver compares every byte of every page (full,\n"
"                     default), or its stamp and crc32c against the crc of\n"
"                     the expected content (crc: costs the harness less)\n"
"  --transport-args   transport options (tcp: sndbuf=SIZE,rcvbuf=SIZE,nodelay=0|1,\n"
"                     send_timeout=MS)\n"
"  --rx-transport-args ARGS\n"
"                     loopback: the receiving end's own transport args\n"
"                     (default: the sender's); dpdk: e.g. the other end of a\n"
"                     veth pair, vdev=net_af_packet0,iface=B,ip=ADDR (the\n"
"                     sender connects to its ip= unless --local-addr)\n"
"  --rdma-dev NAME    rdma: the device the address must resolve to\n"
"  --rdma-gid N       rdma: the GID index it must use (RoCE v2)\n"
"  --dpdk-args \"ARGS\" dpdk: EAL arguments (default --no-huge --no-pci -m 512)\n"
"  --fault SPEC       dpdk: drop=P,reorder=P,dup=P: lose, reorder, duplicate\n"
"                     that share of the sender's packets (P in 0..1)\n"
"  --timeout MS       per blocking step (default 10000)\n"
"  --copy             copy pages even where the transport could place them\n"
"                     zero-copy (rdma: RDMA WRITE, the default there)\n"
"  --local-addr ADDR  address both ends use without --listen/--connect\n"
"                     (default 127.0.0.1; an RDMA device's address for rdma)\n"
"  --peer ib_write_bw also run perftest's ib_write_bw on the same device, QPs\n"
"                     and message size, and report peer_Bps and the ratio\n"
"  --in-vm            run all of it inside the Soft-RoCE VM of\n"
"                     tests/vm/run-in-vm.sh (no RDMA device needed here)\n"
"  --compare tcp      also run the same bench over tcp lanes on 127.0.0.1\n"
"                     first (loopback only) and report tcp_goodput_Bps and\n"
"                     its per-page CPU figures\n"
"\n"
"dpdk on loopback with the embedded memif (no device in the transport args)\n"
"first blasts raw frames between two fresh processes over the same PMD\n"
"(net_memif) at the lanes' mtu= (default 9000 there), no protocol, and reports\n"
"raw_Bps and ratio = goodput / raw_Bps; the same blast copying page data in\n"
"at the sender and out at the receiver gives raw_copy_Bps and ratio_raw_copy;\n"
"with one pass over each page per side (the sender attaches source pages to\n"
"its frames, the receiver is a zero-copy memif client and copies out): the\n"
"most any page transfer on this path can do, raw_place_Bps, raw_place_over_raw\n"
"and ratio_raw_place, the headline there (headline, headline_ratio; --rounds\n"
"takes the median round by it).\n"
"dpdk on loopback from one vdev to another (--transport-args vdev=... and\n"
"--rx-transport-args vdev=..., e.g. net_af_packet on the two ends of a veth\n"
"pair) blasts raw frames from the one to the other in the same way, mtu=\n"
"default 1500: raw_Bps, raw_copy_Bps and their ratios (raw_place is the\n"
"zero-copy memif client's, so not there; the headline is ratio).\n"
"For dpdk also: cycles per page on each side (process CPU x TSC rate /\n"
"pages), pages per second one core sustains, and whether both reach 10GbE\n"
"line rate (290 k pages/s of 4 KiB) on one core.\n"
"  --no-raw           skip the raw blast\n"
"  --raw-seconds S    how long it blasts, 0.1..60 (default 2)\n"
"  --rounds N         loopback: raw blasts then lanes, N times over (1..50,\n"
"                     default 1); the figures are those of the median round\n"
"                     (by lanes / raw, else goodput) and per_round lists all:\n"
"                     on a shared or virtual host whose speed changes from\n"
"                     run to run, a ratio taken within one round holds;\n"
"                     with raw blasts also best: the fastest round of lanes,\n"
"                     raw and raw_place each, and their ratios\n",
		TLM_MAX_LANES - 1);
}

static bool takes_value(const char *a)
{
	static const char *const with_value[] = {
		"--transport", "--transport-args", "--rx-transport-args", "--lanes", "--bytes", "--page-size",
		"--listen", "--connect", "--psk", "--timeout", "--verify", "--local-addr",
		"--peer", "--rdma-dev", "--rdma-gid", "--dpdk-args", "--fault", "--compare",
		"--raw-seconds", "--rounds", "--protect",
	};

	for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++)
		if (!strcmp(a, with_value[i]))
			return true;
	return false;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .transport = "tcp", .lanes = 4, .bytes = 1ull << 30,
			    .page_size = 4096, .timeout_ms = 10000, .raw_seconds = 2 };
	bool raw_seconds_set = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (!strcmp(a, "--copy")) {
			o->copy = true;
			continue;
		}
		if (!strcmp(a, "--in-vm")) {
			o->in_vm = true;
			continue;
		}
		if (!strcmp(a, "--no-raw")) {
			o->no_raw = true;
			continue;
		}
		if (!takes_value(a)) {
			tlm_cli_err("unknown argument '%s' (see --help)", a);
			return -1;
		}
		if (!v) {
			tlm_cli_err("%s needs a value", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--transport")) {
			o->transport = v;
		} else if (!strcmp(a, "--transport-args")) {
			o->ta.args = v;
		} else if (!strcmp(a, "--rx-transport-args")) {
			o->rx_args = v;
		} else if (!strcmp(a, "--rdma-dev")) {
			o->ta.rdma_dev = v;
		} else if (!strcmp(a, "--rdma-gid")) {
			o->ta.rdma_gid = v;
		} else if (!strcmp(a, "--dpdk-args")) {
			o->ta.dpdk_args = v;
		} else if (!strcmp(a, "--fault")) {
			o->ta.fault = v;
		} else if (!strcmp(a, "--compare")) {
			if (strcmp(v, "tcp")) {
				tlm_cli_err("--compare %s: only tcp is known", v);
				return -1;
			}
			o->compare_tcp = true;
		} else if (!strcmp(a, "--rounds")) {
			if (tlm_cli_parse_size(v, &n) || n < 1 || n > 50) {
				tlm_cli_err("--rounds %s: want 1..50", v);
				return -1;
			}
			o->rounds = (unsigned)n;
		} else if (!strcmp(a, "--raw-seconds")) {
			char *end;

			o->raw_seconds = strtod(v, &end);
			if (end == v || *end || !(o->raw_seconds >= 0.1 && o->raw_seconds <= 60)) {
				tlm_cli_err("--raw-seconds %s: want 0.1..60", v);
				return -1;
			}
			raw_seconds_set = true;
		} else if (!strcmp(a, "--lanes")) {
			if (tlm_cli_parse_size(v, &n) || n < 1 || n >= TLM_MAX_LANES) {
				tlm_cli_err("--lanes %s: want 1..%d", v, TLM_MAX_LANES - 1);
				return -1;
			}
			o->lanes = (unsigned)n;
		} else if (!strcmp(a, "--bytes")) {
			if (tlm_cli_parse_size(v, &n) || n == 0) {
				tlm_cli_err("--bytes %s: want a size such as 4G, 512M, 1048576", v);
				return -1;
			}
			o->bytes = n;
		} else if (!strcmp(a, "--page-size")) {
			if (tlm_cli_parse_size(v, &n) || n < 512 || n > 65536 || (n & (n - 1))) {
				tlm_cli_err("--page-size %s: want a power of two, 512..65536", v);
				return -1;
			}
			o->page_size = (uint32_t)n;
			o->page_size_set = true;
		} else if (!strcmp(a, "--listen")) {
			o->listen = v;
		} else if (!strcmp(a, "--connect")) {
			o->connect = v;
		} else if (!strcmp(a, "--psk")) {
			o->psk_path = v;
		} else if (!strcmp(a, "--protect")) {
			if (tlm_cli_parse_protect(v, &o->protect))
				return -1;
		} else if (!strcmp(a, "--local-addr")) {
			o->local_addr = v;
		} else if (!strcmp(a, "--peer")) {
			if (strcmp(v, "ib_write_bw")) {
				tlm_cli_err("--peer %s: only ib_write_bw is known", v);
				return -1;
			}
			o->peer = v;
		} else if (!strcmp(a, "--verify")) {
			if (strcmp(v, "full") && strcmp(v, "crc")) {
				tlm_cli_err("--verify %s: want full or crc", v);
				return -1;
			}
			o->verify_crc = !strcmp(v, "crc");
		} else if (!strcmp(a, "--timeout")) {
			if (tlm_cli_parse_size(v, &n) || n == 0 || n > 3600000) {
				tlm_cli_err("--timeout %s: want milliseconds, 1..3600000", v);
				return -1;
			}
			o->timeout_ms = (int)n;
		} else {
			tlm_cli_err("unknown argument '%s' (see --help)", a);
			return -1;
		}
	}
	if (o->listen && o->connect) {
		tlm_cli_err("--listen and --connect exclude each other (one side each)");
		return -1;
	}
	if (o->peer && (o->listen || o->connect || strcmp(o->transport, "rdma"))) {
		tlm_cli_err("--peer ib_write_bw needs --transport rdma and runs both of its ends "
			    "here: no --listen/--connect");
		return -1;
	}
	if (o->in_vm && (o->listen || o->connect)) {
		tlm_cli_err("--in-vm runs both ends in the VM: no --listen/--connect");
		return -1;
	}
	if (o->compare_tcp && (o->listen || o->connect || !strcmp(o->transport, "tcp"))) {
		tlm_cli_err("--compare tcp runs both ends here, next to another transport: "
			    "no --listen/--connect, no --transport tcp");
		return -1;
	}
	if (o->rounds > 1 && (o->listen || o->connect || o->in_vm || o->peer)) {
		tlm_cli_err("--rounds runs both ends here: no --listen/--connect/--in-vm/--peer");
		return -1;
	}
	if (o->rx_args && (o->listen || o->connect || o->in_vm)) {
		tlm_cli_err("--rx-transport-args is the loopback receiver's: no "
			    "--listen/--connect/--in-vm (each end takes --transport-args)");
		return -1;
	}
	if ((o->no_raw || raw_seconds_set) && strcmp(o->transport, "dpdk")) {
		tlm_cli_err("--no-raw and --raw-seconds need --transport dpdk");
		return -1;
	}
	if (o->in_vm)
		return 0;   /* the copy inside the VM checks the rest */
	if (!tlm_transport_available(o->transport)) {
		char list[256] = "";

		for (unsigned i = 0; tlm_transport_name(i); i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", tlm_transport_name(i));
		tlm_cli_err("transport '%s' is not built in (available: %s)", o->transport, list);
		return -1;
	}
	if (tlm_cli_targs_build(&o->ta, o->transport, o->targs, sizeof(o->targs)))
		return -1;
	o->transport_args = o->targs;
	{
		struct tlm_cli_targs rx = o->ta;

		rx.fault = NULL;
		if (o->rx_args)
			rx.args = o->rx_args;
		if (tlm_cli_targs_build(&rx, o->transport, o->rx_targs, sizeof(o->rx_targs)))
			return -1;
	}
	return 0;
}

/* The benchmark library's view of the options. */
static struct tlm_bench_xfer xfer_of(const struct opts *o)
{
	return (struct tlm_bench_xfer){
		.transport = o->transport, .transport_args = o->transport_args,
		.rx_targs = o->rx_targs, .lanes = o->lanes, .bytes = o->bytes,
		.page_size = o->page_size, .verify_crc = o->verify_crc,
		.timeout_ms = o->timeout_ms, .no_raw = o->no_raw,
		.raw_seconds = o->raw_seconds, .rounds = o->rounds,
	};
}

/* --listen: one run's receiving end, and its own summary. */
static int listen_and_receive(const struct opts *o, struct tlm_session_cfg *cfg)
{
	struct tlm_bench_xfer x = xfer_of(o);
	struct tlm_bench_rx_summary sum = { 0 };
	struct tlm_listener *li = NULL;
	char host[256], port[32];
	int rc;

	if (tlm_cli_parse_hostport(o->listen, host, sizeof(host), port, sizeof(port))) {
		tlm_cli_err("--listen %s: want ADDR:PORT or [V6ADDR]:PORT", o->listen);
		return 2;
	}
	/* Page size is the sender's choice unless given here too. */
	cfg->page_size = o->page_size_set ? o->page_size : 0;
	rc = tlm_listen(cfg, host, port, &li);
	if (rc) {
		tlm_cli_err("cannot listen on %s: %s", o->listen, tlm_strerror(rc));
		return 1;
	}
	if (!o->json)
		fprintf(stderr, "tlm: receiver listening on %s port %d\n", host,
			tlm_listener_port(li));
	rc = tlm_bench_receive(li, &x, &sum);
	tlm_listener_close(li);
	if (rc >= 0 && o->json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "role", "receiver");
		tlm_json_str(&j, "transport", o->transport);
		tlm_json_u64(&j, "lanes", sum.lanes);
		tlm_json_u64(&j, "page_size", sum.page_size);
		tlm_json_u64(&j, "bytes", sum.bytes);
		tlm_json_u64(&j, "pages", sum.pages);
		tlm_json_dbl(&j, "seconds", sum.secs);
		tlm_json_u64(&j, "goodput_Bps", sum.secs > 0 ? (uint64_t)((double)sum.bytes /
									sum.secs) : 0);
		tlm_json_bool(&j, "verified", sum.ok);
		tlm_json_u64(&j, "bad_pages", sum.bad);
		tlm_json_u64(&j, "peak_rss_bytes", tlm_bench_peak_rss());
		tlm_json_finish(&j);
	} else if (rc >= 0) {
		printf("receiver: %u lanes, %" PRIu64 " pages, %" PRIu64 " bytes in %.3f s"
		       " (%.1f MB/s), %s\n", sum.lanes, sum.pages, sum.bytes, sum.secs,
		       sum.secs > 0 ? (double)sum.bytes / sum.secs / 1e6 : 0.0,
		       sum.ok ? "all verified" : "VERIFICATION FAILED");
	}
	return rc == 0 ? 0 : 1;
}

/* --peer ib_write_bw: the same bytes over the same device, after our
 * lanes are closed (the peer gets the device alone). */
static int run_peer(const struct opts *o, const char *host, struct tlm_bench_outcome *r)
{
	if (tlm_cli_rdma_dev_for(host, o->transport_args, r->peer_dev, sizeof(r->peer_dev))) {
		tlm_cli_err("--peer: no RDMA device holds %s (give transport args dev=NAME)", host);
		return -1;
	}
	return tlm_cli_ib_write_bw(r->peer_dev, host, o->lanes, o->page_size,
				   (o->bytes + o->page_size - 1) / o->page_size * o->page_size,
				   &r->peer_Bps) ? -1 : 0;
}

/* --rounds: each round's progress on stderr. */
static void on_round(void *arg, unsigned i, unsigned n, const struct tlm_bench_round *rd)
{
	const struct opts *o = arg;

	if (o->json)
		return;
	fprintf(stderr, "tlm: round %u/%u: lanes %.1f MB/s%s", i + 1, n,
		tlm_bench_goodput(&rd->out) / 1e6, rd->raw.ran ? "" : "\n");
	if (rd->raw.ran)
		fprintf(stderr, ", raw %.1f MB/s, lanes / raw %.2f\n", rd->raw.frames.Bps / 1e6,
			tlm_bench_round_key(rd));
}

int tlm_cli_bench_transport(int argc, char **argv)
{
	struct tlm_session_cfg cfg;
	struct tlm_bench_outcome *r = NULL, *tcp = NULL;
	struct tlm_bench_round *rounds = NULL;
	struct tlm_bench_xfer xf;
	struct extra x = { 0 };
	struct tlm_psk psk;
	struct opts o;
	char host[256], port[32];
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc > 0 ? 0 : 2;
	if (o.in_vm) {
		tlm_cli_reexec_in_vm("bench", argc, argv, "--in-vm", VM_ADDR, !o.local_addr);
		return 1;
	}
	if (tlm_cli_get_psk(o.psk_path, !o.listen && !o.connect, &psk))
		return 2;

	memset(&cfg, 0, sizeof(cfg));
	cfg.transport = o.transport;
	cfg.transport_args = o.transport_args;
	cfg.psk = &psk;
	cfg.protect = o.protect;
	cfg.timeout_ms = o.timeout_ms;
	cfg.page_size = o.page_size;

	if (o.listen)
		return listen_and_receive(&o, &cfg);

	xf = xfer_of(&o);
	xf.on_round = on_round;
	xf.on_round_arg = &o;
	tlm_bench_session_cfg(&xf, o.copy, &cfg);

	rc = 1;
	r = calloc(1, sizeof(*r));
	tcp = o.compare_tcp ? calloc(1, sizeof(*tcp)) : NULL;
	if (!r || (o.compare_tcp && !tcp)) {
		tlm_cli_err("out of memory");
		goto out;
	}
	if (o.connect) {
		if (tlm_cli_parse_hostport(o.connect, host, sizeof(host), port, sizeof(port))) {
			tlm_cli_err("--connect %s: want ADDR:PORT or [V6ADDR]:PORT", o.connect);
			rc = 2;
			goto out;
		}
		if (!strcmp(o.transport, "dpdk"))
			x.raw_skipped = "--connect: the blast runs both of its ends here";
		if (tlm_bench_send(&xf, &cfg, host, port, r))
			goto out;
	} else {
		/* Loopback: the raw blast first, while this process has no
		 * EAL; the receivers are children. */
		snprintf(host, sizeof(host), "%s", o.local_addr ? o.local_addr : "127.0.0.1");
		/* dpdk to a receiver with an address of its own: connect there */
		const char *rip = o.rx_args ? strstr(o.rx_args, "ip=") : NULL;
		if (!o.local_addr && rip && (rip == o.rx_args || rip[-1] == ','))
			snprintf(host, sizeof(host), "%.*s", (int)strcspn(rip + 3, ","), rip + 3);
		if (o.rounds <= 1 && !strcmp(o.transport, "dpdk") &&
		    tlm_bench_raw_phase(&xf, &x.raw, &x.raw_skipped))
			goto out;
		if (tcp) {
			struct tlm_session_cfg tcfg = cfg;

			tcfg.transport = "tcp";
			tcfg.transport_args = "";
			if (tlm_bench_loopback(&xf, &tcfg, "", "127.0.0.1", tcp))
				goto out;
			x.tcp = tcp;
		}
		if (o.rounds > 1) {
			if (tlm_bench_rounds(&xf, &cfg, host, &rounds, &x.median, &x.raw_skipped))
				goto out;
			x.rounds = rounds;
			x.nrounds = o.rounds;
			*r = rounds[x.median].out;
			x.raw = rounds[x.median].raw;
		} else if (tlm_bench_loopback(&xf, &cfg, o.rx_targs, host, r)) {
			goto out;
		}
		if (o.peer && run_peer(&o, host, r))
			goto out;
	}
	if (!strcmp(o.transport, "dpdk"))
		x.tsc_hz = x.raw.ran ? x.raw.frames.tsc_hz : tlm_bench_tsc_hz();
	print_result(&o, r, &x);
	if (!r->verified || (tcp && !tcp->verified)) {
		tlm_cli_err("the receiver did not verify every page%s",
			    r->verified ? " of the tcp comparison" : "");
		goto out;
	}
	rc = 0;
out:
	tlm_bench_rounds_free(rounds, o.rounds);
	free(tcp);
	free(r);
	return rc;
}
