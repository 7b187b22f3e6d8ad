/* SPDX-License-Identifier: MIT */
/*
 * tlm bench migrate: migrate in-process memory written by a workload with
 * the TLM engine, then prove the destination's memory equals the source's
 * at the pause, byte for byte (SHA-256 per region; crc32c per page to name
 * the pages that differ).
 *
 * By default the destination is a child process on this machine over
 * loopback; --listen (destination) and --connect (source) split it across
 * hosts. The destination's end and the digests are the benchmark library's
 * (bench/lib/migrate-check.c) and so are the workloads; the source's run is
 * still here, with its report.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "tlm-bench.h"

struct bm_opts {
	const char *transport, *targs, *workload, *psk_path, *tracker;
	int protect;
	const char *listen, *connect, *local_addr;
	uint64_t mem, rate, xbzrle, seed;
	unsigned threads, warmup_ms, fill;
	struct tlm_migrate_opts mo;
	bool json;
	bool dest_nonzero;
	int peer_timeout_ms;    /* --peer-timeout; 0: the engine's defaults */
};

static volatile int interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm bench migrate [options]\n"
"\n"
"Migrates in-process memory that a workload keeps writing, with the TLM\n"
"engine, and verifies the destination byte for byte against the source at\n"
"the pause. Both ends run here unless --listen/--connect split them.\n"
"\n"
"  --transport NAME     tcp (default), or another built-in transport\n"
TLM_CLI_TARGS_HELP
"  --policy P           tlm (default), precopy, stop-copy, frs, mp\n"
"  --workload W         mg (default), sp, random, hotset, idle\n"
"  --mem SIZE           memory to migrate (default 1G)\n"
"  --threads N          workload threads (default 1)\n"
"  --rate N             page writes per second, 0 = unlimited (default 0)\n"
"  --fill PERCENT       write this share of memory once before the workload\n"
"                       starts, as an application initialising its arrays\n"
"                       (default 100; 0 leaves memory the workload does not\n"
"                       write zero)\n"
"  --warmup-ms N        let the workload run before migrating (default 300)\n"
"  --epoch-ms N         epoch length (default 100)\n"
"  --chk-lanes N        checkpoint lanes (default 1)\n"
"  --ps-lanes N         page-saver lanes (default 1)\n"
"  --downtime-ms N      precopy downtime target (default 300)\n"
"  --max-iterations N   precopy cap (default 30)\n"
"  --xbzrle-cache SIZE  delta-encode re-sent pages with this cache (default off)\n"
"  --no-zero-pages      send zero pages in full\n"
"  --dest-nonzero       the destination's memory starts non-zero, as reused\n"
"                       RAM would (zero pages must then be written)\n"
"  --copy-pages         copy pages even where the transport could send them\n"
"                       zero-copy (RDMA WRITE; the default there)\n"
"  --tracker T          auto (default), pagemap-scan, mprotect\n"
"  --seed N             workload seed\n"
"  --listen ADDR:PORT   be the destination only\n"
"  --connect ADDR:PORT  be the source only\n"
"  --psk FILE           pre-shared key (required with --listen/--connect)\n"
"  --protect MODE       encrypt (default), integrity or none (docs/security.md)\n"
"  --peer-timeout SEC   a peer silent this long on the control lane fails the\n"
"                       migration at either end (2..3600; default 60 at the\n"
"                       source, 10 at the destination)\n"
"  --local-addr ADDR    address both local ends use (default 127.0.0.1; an\n"
"                       RDMA device's address for --transport rdma)\n"
"  --json               one JSON object on stdout\n");
}

/* ---- source ---- */

/* Both ends here: the destination child's end. */
static int dest_child(struct tlm_listener *li, void *arg)
{
	const struct bm_opts *o = arg;

	return tlm_bench_migrate_dest(li, o->dest_nonzero, true);
}

static double r1(double v) { return (double)(long long)(v * 1000.0 + 0.5) / 1000.0; }

/* st->stage3 as a JSON object: docs/downtime.md. */
static void json_stage3(struct tlm_json *j, const struct tlm_migrate_stats *st, unsigned chk,
			unsigned nl)
{
	const struct tlm_stage3_stats *s = &st->stage3;
	double sum = s->pause_ms + s->chk_ms + s->sync_ms + s->ps_ms + s->last_ms +
		     s->devstate_ms + s->wait_ms;

	tlm_json_obj(j, "stage3");
	tlm_json_dbl(j, "downtime_ms", r1(s->downtime_ms));
	tlm_json_dbl(j, "steps_sum_ms", r1(sum));
	tlm_json_dbl(j, "pause_ms", r1(s->pause_ms));
	tlm_json_dbl(j, "chk_ms", r1(s->chk_ms));
	tlm_json_dbl(j, "sync_ms", r1(s->sync_ms));
	tlm_json_u64(j, "dirty_pages", s->dirty_pages);
	tlm_json_u64(j, "ps_pages", s->ps_pages);
	tlm_json_u64(j, "ps_bytes", s->ps_bytes);
	tlm_json_dbl(j, "ps_ms", r1(s->ps_ms));
	tlm_json_dbl(j, "last_ms", r1(s->last_ms));
	tlm_json_dbl(j, "devstate_ms", r1(s->devstate_ms));
	tlm_json_dbl(j, "wait_ms", r1(s->wait_ms));
	tlm_json_u64(j, "backlog_records", s->backlog_records);
	tlm_json_u64(j, "backlog_bytes", s->backlog_bytes);
	tlm_json_dbl(j, "dest_commit_ms", r1(s->dest_commit_ms));
	tlm_json_arr(j, "lanes");
	for (unsigned i = 1; i <= nl; i++) {
		tlm_json_obj(j, NULL);
		tlm_json_u64(j, "lane", i);
		tlm_json_str(j, "stream", i <= chk ? "chk" : "ps");
		tlm_json_u64(j, "backlog_records", s->lane_backlog_records[i]);
		tlm_json_dbl(j, "drain_ms", r1(s->lane_drain_ms[i]));
		tlm_json_end_obj(j);
	}
	tlm_json_end_arr(j);
	tlm_json_obj(j, "model");
	tlm_json_dbl(j, "bandwidth_MBps", r1(s->bandwidth_Bps / 1e6));
	tlm_json_dbl(j, "fixed_ms", r1(s->fixed_ms));
	tlm_json_dbl(j, "predicted_ms", r1(s->predicted_ms));
	tlm_json_dbl(j, "measured_ms", r1(s->downtime_ms));
	tlm_json_dbl(j, "write_rate_pps", r1(s->write_rate_pps));
	tlm_json_bool(j, "lanes_keep_up", s->lanes_keep_up);
	tlm_json_end_obj(j);
	tlm_json_u64(j, "tail_rounds", s->tail_rounds);
	tlm_json_dbl(j, "tail_ms", r1(s->tail_ms));
	tlm_json_end_obj(j);
}

/* The same in one line. */
static void print_stage3(const struct tlm_migrate_stats *st)
{
	const struct tlm_stage3_stats *s = &st->stage3;

	printf("  stage 3: pause %.1f", s->pause_ms);
	if (s->chk_ms > 0)
		printf(" + paused pass %.1f", s->chk_ms);
	printf(" + sync %.1f (%llu dirty) + ps %.1f (%llu pages, %.1f MiB) + last %.1f"
	       " + devstate %.1f + wait %.1f = %.1f ms; backlog at pause %llu records"
	       " (%.1f MiB), lanes drained %.1f ms after it;"
	       " model %.1f ms (%.0f MB/s, fixed %.1f)%s\n",
	       s->sync_ms, (unsigned long long)s->dirty_pages, s->ps_ms,
	       (unsigned long long)s->ps_pages, (double)s->ps_bytes / 1048576.0, s->last_ms,
	       s->devstate_ms, s->wait_ms, s->downtime_ms,
	       (unsigned long long)s->backlog_records, (double)s->backlog_bytes / 1048576.0,
	       s->dest_commit_ms, s->predicted_ms, s->bandwidth_Bps / 1e6, s->fixed_ms,
	       s->lanes_keep_up || s->predicted_ms == 0 ? "" : "; the guest writes faster than the lanes carry");
}

struct prog { bool tty; uint64_t t0; };

static void progress(const struct tlm_migrate_stats *st, uint64_t sent, uint64_t total, void *arg)
{
	struct prog *p = arg;
	double secs = (double)(tlm_cli_now_ms() - p->t0) / 1000.0;

	if (!p->tty)
		return;
	fprintf(stderr, "\r  checkpoint %5.1f%%  chk %6.0f MiB  ps %6.0f MiB (%llu pages)  epoch %u  %5.1fs ",
		total ? 100.0 * (double)sent / (double)total : 100.0,
		(double)st->bytes_chk / 1048576.0, (double)st->bytes_ps / 1048576.0,
		(unsigned long long)st->pages_ps, st->n_epochs, secs);
}

static int run_source(const struct bm_opts *o, const char *host, const char *port,
		      const struct tlm_psk *psk, pid_t child)
{
	size_t size = (size_t)o->mem;
	struct tlm_session_cfg cfg = { 0 };
	struct tlm_migrate_stats st = { 0 };
	struct tlm_workload *w = NULL;
	struct tlm_local *m = NULL;
	struct tlm_session *s = NULL;
	const struct tlm_region *regs;
	struct tlm_memsrc *ms;
	struct tlm_bench_digest mine = { 0 }, theirs = { 0 };
	struct prog pr = { isatty(2) && !o->json, tlm_cli_now_ms() };
	uint64_t dst_stats[8] = { 0 }, writes0 = 0, writes_after = 0, fill_ms = 0;
	int64_t filled = 0;
	enum tlm_tracker tr = TLM_TRACK_AUTO;
	unsigned nr, mismatched = 0, nl = o->mo.chk_lanes + o->mo.ps_lanes;
	bool verified = false, dst_ok = false;
	uint64_t bad_pages[8];
	int err, rc = 1;

	if (o->tracker && !strcmp(o->tracker, "pagemap-scan"))
		tr = TLM_TRACK_PAGEMAP_SCAN;
	else if (o->tracker && !strcmp(o->tracker, "mprotect"))
		tr = TLM_TRACK_MPROTECT;
	err = tlm_local_create(&size, 1, tr, &m);
	if (err) {
		tlm_cli_err("cannot set up %llu bytes of memory: %s", (unsigned long long)o->mem,
			    tlm_strerror(err));
		return 1;
	}
	ms = tlm_local_memsrc(m);
	ms->ops->regions(ms->ctx, &regs, &nr);
	fill_ms = tlm_cli_now_ms();
	filled = tlm_workload_fill(m, o->fill, o->threads > 2 ? o->threads : 2);
	fill_ms = tlm_cli_now_ms() - fill_ms;
	if (filled < 0) {
		tlm_cli_err("cannot fill memory: %s", tlm_strerror((int)filled));
		goto out;
	}
	err = tlm_workload_start(m, o->workload, o->threads, o->rate, o->seed, &w);
	if (err) {
		tlm_cli_err("workload %s: %s", o->workload, tlm_strerror(err));
		goto out;
	}
	usleep(o->warmup_ms * 1000u);
	writes0 = tlm_workload_writes(w);

	cfg.transport = o->transport;
	cfg.transport_args = o->targs;
	cfg.n_lanes = nl;
	for (unsigned i = 1; i <= nl; i++)
		cfg.lane_modes[i] = TLM_MODE_PAGES;
	cfg.page_size = 4096;
	cfg.n_regions = nr;
	for (unsigned i = 0; i < nr; i++)
		cfg.region_len[i] = regs[i].len;
	cfg.psk = psk;
	cfg.protect = o->protect;
	cfg.timeout_ms = 20000;
	err = tlm_connect(&cfg, host, port, &s);
	if (err) {
		tlm_cli_err("cannot connect to the destination: %s", tlm_strerror(err));
		goto out;
	}
	{
		struct tlm_migrate_opts mo = o->mo;
		mo.progress = progress;
		mo.progress_arg = &pr;
		mo.abort_flag = &interrupted;
		err = tlm_migrate_source(s, ms, &mo, &st);
	}
	if (pr.tty)
		fputc('\n', stderr);
	if (!err) {
		/* Paused: the source's memory at the pause, against the destination's. */
		struct tlm_lane *c = tlm_session_lane(s, 0);
		uint8_t ok = 0;
		err = tlm_bench_digest(regs, nr, 4096, &mine);
		if (!err)
			err = tlm_bench_digest_recv(c, &mine, &ok, &theirs);
		if (!err)
			err = tlm_bench_read_all(c, dst_stats, sizeof(dst_stats));
		if (!err) {
			uint8_t b = 1;
			(void)tlm_lane_write(c, &b, 1);
			(void)tlm_lane_flush(c);
			dst_ok = ok == 1;
		} else {
			tlm_cli_err("no verification data from the destination: %s", tlm_strerror(err));
		}
		if (dst_ok) {
			verified = true;
			for (unsigned i = 0; i < nr; i++) {
				if (!memcmp(mine.sha[i], theirs.sha[i], 32))
					continue;
				verified = false;
				for (uint64_t p = 0; p < mine.pages[i]; p++)
					if (mine.crc[i][p] != theirs.crc[i][p]) {
						if (mismatched < 8)
							bad_pages[mismatched] = p;
						mismatched++;
					}
				if (!mismatched)
					mismatched = 1; /* same crcs, different bytes */
			}
		}
		ms->ops->resume(ms->ctx);
	}
	if (err) {
		/* A failed migration must have resumed the source: the workload
		 * writes during a wait after the engine returned. */
		uint64_t w0 = tlm_workload_writes(w);
		usleep(200000);
		writes_after = tlm_workload_writes(w) - w0;
	}
	rc = st.completed && verified ? 0 : 1;
	if (o->json) {
		struct tlm_json j;
		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "policy", tlm_policy_name(o->mo.policy));
		tlm_json_str(&j, "workload", o->workload);
		tlm_json_str(&j, "transport", o->transport);
		tlm_json_str(&j, "protect", tlm_protect_name(o->protect));
		tlm_json_u64(&j, "mem", o->mem);
		tlm_json_u64(&j, "rate", o->rate);
		tlm_json_u64(&j, "fill", o->fill);
		tlm_json_u64(&j, "pages_filled", (uint64_t)filled);
		tlm_json_u64(&j, "fill_ms", fill_ms);
		tlm_json_u64(&j, "threads", o->threads);
		tlm_json_u64(&j, "chk_lanes", o->mo.chk_lanes);
		tlm_json_u64(&j, "ps_lanes", o->mo.ps_lanes);
		tlm_json_u64(&j, "epoch_ms", o->mo.epoch_ms);
		tlm_json_bool(&j, "completed", st.completed);
		tlm_json_bool(&j, "converged", st.converged);
		tlm_json_bool(&j, "verified", verified);
		tlm_json_u64(&j, "mismatched_pages", mismatched);
		tlm_json_u64(&j, "downtime_ms", st.completed ? st.downtime_ms : 0);
		tlm_json_u64(&j, "elapsed_ms", st.elapsed_ms);
		tlm_json_u64(&j, "bytes_chk", st.bytes_chk);
		tlm_json_u64(&j, "bytes_ps", st.bytes_ps);
		tlm_json_u64(&j, "pages_chk", st.pages_chk);
		tlm_json_u64(&j, "pages_ps", st.pages_ps);
		tlm_json_u64(&j, "pages_zero", st.pages_zero);
		tlm_json_u64(&j, "pages_xbzrle", st.pages_xbzrle);
		tlm_json_u64(&j, "pages_stale_at_destination", dst_stats[1]);
		tlm_json_u64(&j, "iterations", st.iterations);
		tlm_json_str(&j, "dirty_tracker", tlm_local_tracker_name(m));
		tlm_json_u64(&j, "source_extra_bytes", st.extra_bytes + tlm_local_tracker_bytes(m));
		tlm_json_u64(&j, "workload_writes", tlm_workload_writes(w) - writes0);
		tlm_json_u64(&j, "workload_writes_after_failure", writes_after);
		tlm_json_u64(&j, "peak_rss_source_bytes", tlm_bench_peak_rss());
		tlm_json_u64(&j, "peak_rss_destination_bytes", dst_stats[2]);
		tlm_json_u64(&j, "pages_zero_kept_at_destination", dst_stats[5]);
		tlm_json_bool(&j, "zero_copy", st.zero_copy);
		tlm_json_u64(&j, "pages_placed_at_destination", dst_stats[3]);
		tlm_json_u64(&j, "pages_placed_encrypted_at_destination", dst_stats[7]);
		tlm_json_u64(&j, "register_ms_source", st.register_ms);
		tlm_json_u64(&j, "register_ms_destination", dst_stats[4]);
		/* Source side: every lane's registration, per GiB of memory. */
		tlm_json_dbl(&j, "register_s_per_GiB",
			     st.zero_copy ? (double)st.register_ms / 1000.0 /
					    ((double)o->mem / (1024.0 * 1024.0 * 1024.0)) : 0);
		tlm_json_str(&j, "error", st.completed ? NULL : st.why);
		json_stage3(&j, &st, o->mo.chk_lanes, nl);
		tlm_json_arr(&j, "epochs");
		for (unsigned i = 0; i < st.n_epochs; i++) {
			tlm_json_obj(&j, NULL);
			tlm_json_u64(&j, "epoch", st.epochs[i].epoch);
			tlm_json_u64(&j, "dirtied", st.epochs[i].dirtied);
			tlm_json_u64(&j, "sent_ps", st.epochs[i].sent_ps);
			tlm_json_end_obj(&j);
		}
		tlm_json_end_arr(&j);
		tlm_json_finish(&j);
	} else {
		printf("policy %s, workload %s at %llu writes/s, %llu MiB (%u%% filled) over %s"
		       " (%u CHK + %u PS lanes), tracker %s\n",
		       tlm_policy_name(o->mo.policy), o->workload, (unsigned long long)o->rate,
		       (unsigned long long)(o->mem >> 20), o->fill, o->transport, o->mo.chk_lanes,
		       o->mo.ps_lanes, tlm_local_tracker_name(m));
		if (st.completed)
			printf("  completed in %llu ms, downtime %llu ms, %llu iteration(s)%s\n",
			       (unsigned long long)st.elapsed_ms, (unsigned long long)st.downtime_ms,
			       (unsigned long long)st.iterations, st.converged ? "" : " (heuristic stop)");
		if (st.completed)
			print_stage3(&st);
		else
			printf("  NOT completed after %llu ms: %s (the workload kept running)\n",
			       (unsigned long long)st.elapsed_ms, st.why);
		printf("  checkpoint: %llu pages, %.1f MiB; page saver: %llu pages, %.1f MiB; "
		       "zero %llu, xbzrle %llu\n",
		       (unsigned long long)st.pages_chk, (double)st.bytes_chk / 1048576.0,
		       (unsigned long long)st.pages_ps, (double)st.bytes_ps / 1048576.0,
		       (unsigned long long)st.pages_zero, (unsigned long long)st.pages_xbzrle);
		if (st.completed) {
			printf("  verification: %s", verified ? "destination equals source at the pause, byte for byte\n"
							      : "MISMATCH");
			if (!verified) {
				printf(" in %u page(s):", mismatched);
				for (unsigned i = 0; i < mismatched && i < 8; i++)
					printf(" %llu", (unsigned long long)bad_pages[i]);
				printf("\n");
			}
		}
	}
	tlm_migrate_stats_free(&st);
out:
	if (s)
		tlm_session_close(s);
	if (child > 0) {
		int status;
		pid_t w8 = 0;
		/* the destination ends once the session does (and cleans up
		 * after itself, the dpdk lanes' EAL directory among it); one
		 * that does not within 2 s is told to */
		for (int i = 0; i < 200 && (w8 = waitpid(child, &status, WNOHANG)) == 0; i++)
			usleep(10000);
		if (w8 == 0) {
			kill(child, SIGTERM);
			waitpid(child, &status, 0);
		}
	}
	if (w)
		tlm_workload_stop(w);
	tlm_bench_digest_free(&mine);
	tlm_bench_digest_free(&theirs);
	if (m)
		tlm_local_destroy(m);
	return rc;
}

int tlm_cli_bench_migrate(int argc, char **argv)
{
	struct bm_opts o = {
		.transport = "tcp", .workload = "mg", .mem = 1ull << 30, .threads = 1,
		.warmup_ms = 300, .seed = 1, .local_addr = "127.0.0.1", .fill = 100,
		.mo = { .policy = TLM_POLICY_TLM, .chk_lanes = 1, .ps_lanes = 1, .epoch_ms = 100,
			.downtime_ms = 300, .max_iterations = 30, .zero_pages = true,
			.timeout_ms = 60000 },
	};
	static const struct option lo[] = {
		{ "transport", required_argument, NULL, 't' },
		TLM_CLI_TARGS_OPTIONS,
		{ "policy", required_argument, NULL, 'p' },
		{ "workload", required_argument, NULL, 'w' },
		{ "mem", required_argument, NULL, 'm' },
		{ "threads", required_argument, NULL, 'T' },
		{ "rate", required_argument, NULL, 'r' },
		{ "fill", required_argument, NULL, 'f' },
		{ "warmup-ms", required_argument, NULL, 'W' },
		{ "epoch-ms", required_argument, NULL, 'e' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "ps-lanes", required_argument, NULL, 's' },
		{ "downtime-ms", required_argument, NULL, 'd' },
		{ "max-iterations", required_argument, NULL, 'i' },
		{ "xbzrle-cache", required_argument, NULL, 'x' },
		{ "no-zero-pages", no_argument, NULL, 'z' },
		{ "dest-nonzero", no_argument, NULL, 'N' },
		{ "copy-pages", no_argument, NULL, 'Z' },
		{ "tracker", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 'S' },
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'C' },
		{ "psk", required_argument, NULL, 'P' },
		{ "protect", required_argument, NULL, 'Q' },
		{ "local-addr", required_argument, NULL, 'L' },
		{ "peer-timeout", required_argument, NULL, 'K' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char host[256], port[16], targs[512];
	struct tlm_cli_targs ta = { 0 };
	struct tlm_psk psk;
	int opt, pol, li_idx = 0;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, &li_idx)) != -1) {
		uint64_t v = 0;

		if (tlm_cli_targs_opt(&ta, opt))
			continue;
		switch (opt) {
		case 't': o.transport = optarg; break;
		case 'p':
			pol = tlm_policy_parse(optarg);
			if (pol < 0) {
				tlm_cli_err("unknown policy '%s' (tlm, precopy, stop-copy, frs, mp)", optarg);
				return 2;
			}
			o.mo.policy = (enum tlm_policy)pol;
			break;
		case 'w': o.workload = optarg; break;
		case 'Z': o.mo.copy_pages = true; break;
		case 'k': o.tracker = optarg; break;
		case 'l': o.listen = optarg; break;
		case 'C': o.connect = optarg; break;
		case 'P': o.psk_path = optarg; break;
		case 'Q':
			if (tlm_cli_parse_protect(optarg, &o.protect))
				return 2;
			break;
		case 'L': o.local_addr = optarg; break;
		case 'K': {
			char *end;
			long sec = strtol(optarg, &end, 10);

			if (*end || end == optarg || sec < 2 || sec > 3600) {
				tlm_cli_err("--peer-timeout: seconds, 2..3600");
				return 2;
			}
			o.peer_timeout_ms = (int)sec * 1000;
			o.mo.timeout_ms = o.peer_timeout_ms;
			break;
		}
		case 'j': o.json = true; break;
		case 'z': o.mo.zero_pages = false; break;
		case 'N': o.dest_nonzero = true; break;
		case 'h': usage(stdout); return 0;
		case 'm': case 'x': case 'r': case 'T': case 'W': case 'e': case 'c': case 's':
		case 'd': case 'i': case 'S': case 'f':
			if (tlm_cli_parse_size(optarg, &v) || (v == 0 && opt != 'r' && opt != 'W' &&
							       opt != 'x' && opt != 'S' && opt != 'f') ||
			    (opt == 'f' && v > 100) ||
			    (opt != 'm' && opt != 'x' && opt != 'r' && opt != 'S' && v > UINT32_MAX)) {
				tlm_cli_err("bad value '%s' for --%s", optarg, lo[li_idx].name);
				return 2;
			}
			if (opt == 'm') o.mem = v;
			else if (opt == 'x') o.mo.xbzrle_cache = v;
			else if (opt == 'r') o.rate = v;
			else if (opt == 'T') o.threads = (unsigned)v;
			else if (opt == 'W') o.warmup_ms = (unsigned)v;
			else if (opt == 'e') o.mo.epoch_ms = (unsigned)v;
			else if (opt == 'c') o.mo.chk_lanes = (unsigned)v;
			else if (opt == 's') o.mo.ps_lanes = (unsigned)v;
			else if (opt == 'd') o.mo.downtime_ms = (unsigned)v;
			else if (opt == 'i') o.mo.max_iterations = (unsigned)v;
			else if (opt == 'f') o.fill = (unsigned)v;
			else o.seed = v;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		tlm_cli_err("unexpected argument '%s'", argv[optind]);
		return 2;
	}
	if (!tlm_transport_available(o.transport)) {
		tlm_cli_err("transport '%s' is not built into this tlm", o.transport);
		return 2;
	}
	if (tlm_cli_targs_build(&ta, o.transport, targs, sizeof(targs)))
		return 2;
	o.targs = targs;
	if (o.mo.chk_lanes + o.mo.ps_lanes >= TLM_MAX_LANES) {
		tlm_cli_err("too many lanes (at most %d in all)", TLM_MAX_LANES - 1);
		return 2;
	}
	if (o.mem < 1u << 20 || o.mem % 4096) {
		tlm_cli_err("--mem must be at least 1M and a multiple of 4096");
		return 2;
	}
	{
		bool known = false;
		for (unsigned i = 0; tlm_workload_names[i]; i++)
			known |= !strcmp(tlm_workload_names[i], o.workload);
		if (!known) {
			tlm_cli_err("unknown workload '%s' (mg, sp, random, hotset, idle)", o.workload);
			return 2;
		}
	}
	if (o.tracker && strcmp(o.tracker, "auto") && strcmp(o.tracker, "pagemap-scan") &&
	    strcmp(o.tracker, "mprotect")) {
		tlm_cli_err("unknown tracker '%s' (auto, pagemap-scan, mprotect)", o.tracker);
		return 2;
	}
	if (o.listen && o.connect) {
		tlm_cli_err("--listen and --connect exclude each other");
		return 2;
	}
	{
		/* Both ends here hold the memory twice; refuse what cannot fit
		 * rather than meet the OOM killer half way. */
		uint64_t need = o.listen || o.connect ? o.mem : 2 * o.mem, avail = tlm_cli_mem_available();

		if (avail && need > avail) {
			tlm_cli_err("--mem %llu MiB needs %llu MiB here, only %llu MiB available",
				    (unsigned long long)(o.mem >> 20), (unsigned long long)(need >> 20),
				    (unsigned long long)(avail >> 20));
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_sigint);
	if (tlm_cli_get_psk(o.psk_path, !o.listen && !o.connect, &psk))
		return 2;

	if (o.listen || o.connect) {
		if (tlm_cli_parse_hostport(o.listen ? o.listen : o.connect, host, sizeof(host),
					   port, sizeof(port))) {
			tlm_cli_err("bad address '%s' (want HOST:PORT or [V6]:PORT)",
				    o.listen ? o.listen : o.connect);
			return 2;
		}
		if (o.listen) {
			struct tlm_session_cfg cfg = { .transport = o.transport,
				.transport_args = o.targs, .psk = &psk, .protect = o.protect,
				.timeout_ms = o.peer_timeout_ms };
			struct tlm_listener *li;
			int err = tlm_listen(&cfg, host, port, &li), rc;
			if (err) {
				tlm_cli_err("cannot listen on %s: %s", o.listen, tlm_strerror(err));
				return 1;
			}
			rc = tlm_bench_migrate_dest(li, o.dest_nonzero, false);
			tlm_listener_close(li);
			return rc;
		}
		return run_source(&o, host, port, &psk, 0);
	}

	/* Both ends here: the destination is a child over loopback. */
	{
		struct tlm_session_cfg cfg = { .transport = o.transport,
			.transport_args = o.targs, .psk = &psk, .protect = o.protect,
			.timeout_ms = o.peer_timeout_ms };
		pid_t child = tlm_bench_fork_listener(&cfg, o.local_addr, port, sizeof(port),
						      dest_child, &o);

		if (child < 0)
			return 1;
		return run_source(&o, o.local_addr, port, &psk, child);
	}
}
