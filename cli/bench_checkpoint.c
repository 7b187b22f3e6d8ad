/* SPDX-License-Identifier: MIT */
/*
 * tlm bench checkpoint / tlm bench restore: live checkpointing (TLC) of
 * in-process memory that a workload keeps writing.
 *
 * A checkpoint is a migration whose destination memory is the file
 * (core/ckpt.c): the writer is a child process over loopback lanes, which
 * receives with the engine's destination into PATH.tmp and commits it
 * (digests, fsync, rename). The source resumes as soon as the writer has
 * confirmed stage 3; the flush happens while the workload runs. --verify
 * hashes the memory at the pause (which holds the pause longer than the
 * downtime reported: that is the engine's) and, once the file is
 * committed, restores it through the engine into fresh memory and
 * compares.
 *
 * Restore: the file is validated whole, then sent as a memory source
 * (stop-copy: it never changes) into fresh memory, and the result is
 * compared with the file; the peer is reading the file sequentially.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt.h"
#include "cli.h"
#include "tlm/engine.h"
#include "tlm/memsrc.h"
#include "tlm-bench.h"

static volatile int interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

/* What the writer child reports back over the control lane. */
struct wire_result {
	int32_t err;
	uint32_t pad;
	struct tlm_ckpt_stats st;
	uint64_t peak_rss;
};

static int write_all(struct tlm_lane *l, const void *p, size_t n)
{
	ssize_t r = tlm_lane_write(l, p, n);
	return r < 0 ? (int)r : tlm_lane_flush(l);
}

static int read_all(struct tlm_lane *l, void *p, size_t n, int timeout_ms)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = tlm_lane_read(l, b, n, timeout_ms);

		if (r <= 0)
			return r ? (int)r : -TLM_EPEERCLOSED;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

/* ---- the writer: the receiving end, into the file ---- */

struct writer_args { const char *path; unsigned count; };

/* One session per checkpoint, count of them, each into path. */
static int writer_child(struct tlm_listener *li, void *arg)
{
	const struct writer_args *wa = arg;
	int rc = 0;

	for (unsigned i = 0; i < wa->count; i++) {
		struct wire_result res = { 0 };
		struct tlm_session *s;
		int err = tlm_accept(li, 300000, &s);

		if (err) {
			tlm_cli_err("checkpoint writer: no session: %s", tlm_strerror(err));
			return 1;
		}
		res.err = tlm_ckpt_receive(s, wa->path, &res.st);
		res.peak_rss = tlm_bench_peak_rss();
		if (!write_all(tlm_session_lane(s, 0), &res, sizeof(res))) {
			uint8_t b;
			(void)tlm_lane_read(tlm_session_lane(s, 0), &b, 1, 60000);
		}
		tlm_session_close(s);
		if (res.err)
			rc = 1;
	}
	return rc;
}

/* ---- digests ---- */

static int sha_regions(const struct tlm_region *r, unsigned n, uint8_t (*sha)[32])
{
	for (unsigned i = 0; i < n; i++) {
		unsigned int len = 32;

		if (!EVP_Digest(r[i].base, r[i].len, sha[i], &len, EVP_sha256(), NULL))
			return -EIO;
	}
	return 0;
}

/* ---- restore into fresh memory, through the engine ---- */

struct restore_src {
	unsigned chk;            /* checkpoint lanes (one page-saver lane, idle) */
	struct tlm_ckpt_r *r;
	const char *host, *port, *transport;
	const struct tlm_psk *psk;
	struct tlm_migrate_stats st;
	int err;
	char why[200];
};

static void *restore_src_thread(void *arg)
{
	struct restore_src *rs = arg;
	const struct tlm_ckpt_info *in = tlm_ckpt_r_info(rs->r);
	struct tlm_session_cfg cfg = {
		.transport = rs->transport, .n_lanes = rs->chk + 1, .page_size = in->lay.page_size,
		.n_regions = in->lay.n, .caps = TLM_CAP_ZERO_PAGE | TLM_CAP_DEVSTATE,
		.psk = rs->psk, .timeout_ms = 20000,
	};
	struct tlm_migrate_opts mo = {
		.policy = TLM_POLICY_STOPCOPY, .chk_lanes = rs->chk, .ps_lanes = 1, .epoch_ms = 100,
		.zero_pages = true, .timeout_ms = 120000, .abort_flag = &interrupted,
	};
	struct tlm_session *s;

	for (unsigned i = 1; i <= cfg.n_lanes; i++)
		cfg.lane_modes[i] = TLM_MODE_PAGES;
	for (unsigned i = 0; i < in->lay.n; i++) {
		cfg.region_len[i] = in->lay.len[i];
		cfg.region_name[i] = in->lay.name[i];
	}
	rs->err = tlm_connect(&cfg, rs->host, rs->port, &s);
	if (rs->err) {
		snprintf(rs->why, sizeof(rs->why), "cannot connect: %s", tlm_strerror(rs->err));
		return NULL;
	}
	rs->err = tlm_migrate_source(s, tlm_ckpt_memsrc(rs->r), &mo, &rs->st);
	if (rs->err)
		snprintf(rs->why, sizeof(rs->why), "%s", rs->st.why);
	tlm_session_close(s);
	return NULL;
}

struct restored {
	bool completed;
	uint64_t ms, pages_applied, devstate_len;
	unsigned n;
	struct tlm_region reg[TLM_MAX_REGIONS];
	char why[256];
};

static void restored_free(struct restored *d)
{
	for (unsigned i = 0; i < d->n; i++)
		if (d->reg[i].base)
			munmap(d->reg[i].base, d->reg[i].len);
	d->n = 0;
}

/* Sends the (validated, open) file through the engine over loopback into
 * anonymous memory; d holds the result. */
static int restore_into_memory(struct tlm_ckpt_r *r, const char *transport, unsigned chk,
			       struct restored *d)
{
	const struct tlm_ckpt_info *in = tlm_ckpt_r_info(r);
	struct tlm_psk psk;
	struct tlm_session_cfg lcfg = {
		.transport = transport, .psk = &psk, .timeout_ms = 20000,
		.caps = TLM_CAP_ZERO_PAGE | TLM_CAP_DEVSTATE,
	};
	struct restore_src rs = { .chk = chk, .r = r, .host = "127.0.0.1", .transport = transport,
				  .psk = &psk };
	struct tlm_listener *li = NULL;
	struct tlm_session *s = NULL;
	struct tlm_dest_stats ds;
	char port[16];
	pthread_t t;
	uint64_t t0 = tlm_cli_now_ms();
	void *dev = NULL;
	size_t devlen = 0;
	int err;

	memset(d, 0, sizeof(*d));
	err = tlm_psk_random(&psk);
	if (!err)
		err = tlm_listen(&lcfg, "127.0.0.1", "0", &li);
	if (err) {
		snprintf(d->why, sizeof(d->why), "cannot listen: %s", tlm_strerror(err));
		return err;
	}
	snprintf(port, sizeof(port), "%d", tlm_listener_port(li));
	rs.port = port;
	if (pthread_create(&t, NULL, restore_src_thread, &rs)) {
		tlm_listener_close(li);
		return -ENOMEM;
	}
	err = tlm_accept(li, 30000, &s);
	if (!err) {
		for (unsigned i = 0; i < in->lay.n; i++) {
			d->reg[i].len = in->lay.len[i];
			d->reg[i].name = in->lay.name[i];
			d->reg[i].base = mmap(NULL, d->reg[i].len, PROT_READ | PROT_WRITE,
					      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (d->reg[i].base == MAP_FAILED) {
				d->reg[i].base = NULL;
				err = -ENOMEM;
			}
			d->n = i + 1;
		}
		if (!err)
			err = tlm_migrate_dest(s, d->reg, d->n, &dev, &devlen, &ds);
		if (err)
			snprintf(d->why, sizeof(d->why), "%s", ds.why[0] ? ds.why : tlm_strerror(err));
		d->pages_applied = ds.pages_applied;
	} else {
		snprintf(d->why, sizeof(d->why), "no session: %s", tlm_strerror(err));
		interrupted = 1;
	}
	pthread_join(t, NULL);
	if (!err && rs.err) {
		err = rs.err;
		snprintf(d->why, sizeof(d->why), "source: %s", rs.why);
	}
	tlm_migrate_stats_free(&rs.st);
	if (s)
		tlm_session_close(s);
	tlm_listener_close(li);
	d->ms = tlm_cli_now_ms() - t0;
	d->devstate_len = devlen;
	if (!err && (devlen != in->devstate_len)) {
		err = -TLM_EFRAME;
		snprintf(d->why, sizeof(d->why), "device state of %zu bytes, the file has %llu",
			 devlen, (unsigned long long)in->devstate_len);
	}
	free(dev);
	d->completed = !err;
	return err;
}

/* ---- tlm bench checkpoint ---- */

struct bc_opts {
	const char *transport, *workload, *to, *tracker;
	uint64_t mem, rate, seed;
	unsigned threads, warmup_ms, fill, count, interval_ms;
	struct tlm_migrate_opts mo;
	bool json, verify;
};

struct one_ckpt {
	bool completed, verified;
	int err;
	struct tlm_migrate_stats st;
	struct wire_result res;
	uint64_t total_ms, writes_before, writes_during, before_ms, during_ms;
	uint64_t restore_ms;
	char why[400];
};

static void usage_checkpoint(FILE *f)
{
	fprintf(f,
"usage: tlm bench checkpoint --to FILE [options]\n"
"\n"
"Checkpoints in-process memory that a workload keeps writing into FILE with\n"
"the TLM engine (a migration whose destination is the file), while the\n"
"workload runs. FILE is written as FILE.tmp and renamed once complete; a\n"
"second checkpoint into a valid FILE of the same size is incremental (only\n"
"the pages that changed are written).\n"
"\n"
"  --to FILE            the checkpoint file\n"
"  --policy P           tlm (default) or stop-copy (or precopy, frs, mp)\n"
"  --workload W         mg (default), sp, random, hotset, idle\n"
"  --mem SIZE           memory (default 256M)\n"
"  --rate N             page writes per second, 0 = unlimited (default 20000)\n"
"  --fill PERCENT       memory written once before the workload (default 100)\n"
"  --threads N          workload threads (default 1)\n"
"  --warmup-ms N        workload time before the first checkpoint (default 300)\n"
"  --count N            checkpoints in a row into FILE (default 1)\n"
"  --interval-ms N      workload time between them (default 300)\n"
"  --epoch-ms N         epoch length (default 100)\n"
"  --verify             restore each checkpoint through the engine into fresh\n"
"                       memory and compare it with the memory at the pause\n"
"  --transport NAME     lanes to the writer (default tcp, loopback)\n"
"  --tracker T          auto (default), pagemap-scan, mprotect\n"
"  --seed N             workload seed\n"
"  --json               one JSON object on stdout\n");
}

static int one_checkpoint(const struct bc_opts *o, struct tlm_local *m, struct tlm_workload *w,
			  const struct tlm_psk *psk, const char *port, struct one_ckpt *c)
{
	struct tlm_memsrc *ms = tlm_local_memsrc(m);
	const struct tlm_region *regs;
	struct tlm_session_cfg cfg = { 0 };
	struct tlm_session *s = NULL;
	uint8_t sha_src[TLM_MAX_REGIONS][32];
	uint64_t t1, w1;
	unsigned nr, nl = o->mo.chk_lanes + o->mo.ps_lanes;
	bool paused = false;
	int err;

	ms->ops->regions(ms->ctx, &regs, &nr);
	cfg.transport = o->transport;
	cfg.n_lanes = nl;
	for (unsigned i = 1; i <= nl; i++)
		cfg.lane_modes[i] = TLM_MODE_PAGES;
	cfg.page_size = ms->page_size;
	cfg.n_regions = nr;
	for (unsigned i = 0; i < nr; i++) {
		cfg.region_len[i] = regs[i].len;
		cfg.region_name[i] = regs[i].name;
	}
	cfg.caps = TLM_CAP_ZERO_PAGE | TLM_CAP_DEVSTATE;
	cfg.psk = psk;
	cfg.timeout_ms = 20000;
	t1 = tlm_cli_now_ms();
	w1 = tlm_workload_writes(w);
	err = tlm_connect(&cfg, "127.0.0.1", port, &s);
	if (err) {
		snprintf(c->why, sizeof(c->why), "cannot connect to the writer: %s", tlm_strerror(err));
		goto out;
	}
	{
		struct tlm_migrate_opts mo = o->mo;
		mo.abort_flag = &interrupted;
		err = tlm_migrate_source(s, ms, &mo, &c->st);
	}
	if (err) {
		snprintf(c->why, sizeof(c->why), "%s", c->st.why);
		goto out;
	}
	paused = true;
	c->completed = c->st.completed;
	if (o->verify)
		err = sha_regions(regs, nr, sha_src);
	ms->ops->resume(ms->ctx);
	paused = false;
	c->during_ms = tlm_cli_now_ms() - t1;
	c->writes_during = tlm_workload_writes(w) - w1;
	if (err)
		goto out;
	/* The writer commits the file while the workload runs again. */
	err = read_all(tlm_session_lane(s, 0), &c->res, sizeof(c->res), 300000);
	if (err) {
		snprintf(c->why, sizeof(c->why), "the writer did not report: %s", tlm_strerror(err));
		goto out;
	}
	(void)tlm_lane_write(tlm_session_lane(s, 0), "k", 1);
	(void)tlm_lane_flush(tlm_session_lane(s, 0));
	c->total_ms = tlm_cli_now_ms() - t1;
	if (c->res.err) {
		err = c->res.err;
		c->completed = false;
		snprintf(c->why, sizeof(c->why), "the writer: %s", c->res.st.why);
		goto out;
	}
	if (o->verify) {
		struct tlm_ckpt_r *r;
		struct restored d;
		uint8_t sha_dst[TLM_MAX_REGIONS][32];
		char why[200];

		err = tlm_ckpt_open(o->to, &r, why, sizeof(why));
		if (err) {
			snprintf(c->why, sizeof(c->why), "the checkpoint does not validate: %s", why);
			goto out;
		}
		err = restore_into_memory(r, o->transport, 1, &d);
		tlm_ckpt_close(r);
		c->restore_ms = d.ms;
		if (err) {
			snprintf(c->why, sizeof(c->why), "restore failed: %s", d.why);
		} else {
			err = sha_regions(d.reg, d.n, sha_dst);
			c->verified = !err && !memcmp(sha_src, sha_dst, 32 * (size_t)nr);
			if (!c->verified)
				snprintf(c->why, sizeof(c->why), "the restored memory differs from the "
					 "memory at the pause");
		}
		restored_free(&d);
	}
out:
	if (paused)
		ms->ops->resume(ms->ctx);
	if (s)
		tlm_session_close(s);
	c->err = err;
	return err;
}

int tlm_cli_bench_checkpoint(int argc, char **argv)
{
	struct bc_opts o = {
		.transport = "tcp", .workload = "mg", .mem = 256ull << 20, .rate = 20000,
		.threads = 1, .warmup_ms = 300, .fill = 100, .count = 1, .interval_ms = 300,
		.seed = 1,
		.mo = { .policy = TLM_POLICY_TLM, .chk_lanes = 1, .ps_lanes = 1, .epoch_ms = 100,
			.downtime_ms = 300, .max_iterations = 30, .zero_pages = true,
			.timeout_ms = 60000 },
	};
	static const struct option lo[] = {
		{ "to", required_argument, NULL, 'o' },
		{ "policy", required_argument, NULL, 'p' },
		{ "workload", required_argument, NULL, 'w' },
		{ "mem", required_argument, NULL, 'm' },
		{ "rate", required_argument, NULL, 'r' },
		{ "fill", required_argument, NULL, 'f' },
		{ "threads", required_argument, NULL, 'T' },
		{ "warmup-ms", required_argument, NULL, 'W' },
		{ "count", required_argument, NULL, 'n' },
		{ "interval-ms", required_argument, NULL, 'I' },
		{ "epoch-ms", required_argument, NULL, 'e' },
		{ "verify", no_argument, NULL, 'v' },
		{ "transport", required_argument, NULL, 't' },
		{ "tracker", required_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct one_ckpt *cs = NULL;
	struct tlm_local *m = NULL;
	struct tlm_workload *w = NULL;
	enum tlm_tracker tr = TLM_TRACK_AUTO;
	struct tlm_psk psk;
	size_t size;
	int opt, idx = 0, rc = 1, pol;
	unsigned done = 0;
	uint64_t wb0, tb0, wb1, tb1;
	bool all_ok = true;
	struct writer_args wa;
	char port[16];
	pid_t child;
	int status;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, &idx)) != -1) {
		uint64_t v = 0;

		switch (opt) {
		case 'o': o.to = optarg; break;
		case 'w': o.workload = optarg; break;
		case 't': o.transport = optarg; break;
		case 'k': o.tracker = optarg; break;
		case 'v': o.verify = true; break;
		case 'j': o.json = true; break;
		case 'h': usage_checkpoint(stdout); return 0;
		case 'p':
			pol = tlm_policy_parse(optarg);
			if (pol < 0) {
				tlm_cli_err("unknown policy '%s' (tlm, stop-copy, precopy, frs, mp)", optarg);
				return 2;
			}
			o.mo.policy = (enum tlm_policy)pol;
			break;
		case 'm': case 'r': case 'f': case 'T': case 'W': case 'n': case 'I': case 'e':
		case 'S':
			if (tlm_cli_parse_size(optarg, &v) || (opt == 'f' && v > 100) ||
			    (v == 0 && (opt == 'm' || opt == 'T' || opt == 'n' || opt == 'e'))) {
				tlm_cli_err("bad value '%s' for --%s", optarg, lo[idx].name);
				return 2;
			}
			if (opt == 'm') o.mem = v;
			else if (opt == 'r') o.rate = v;
			else if (opt == 'f') o.fill = (unsigned)v;
			else if (opt == 'T') o.threads = (unsigned)v;
			else if (opt == 'W') o.warmup_ms = (unsigned)v;
			else if (opt == 'n') o.count = (unsigned)v;
			else if (opt == 'I') o.interval_ms = (unsigned)v;
			else if (opt == 'e') o.mo.epoch_ms = (unsigned)v;
			else o.seed = v;
			break;
		default:
			usage_checkpoint(stderr);
			return 2;
		}
	}
	if (optind < argc || !o.to) {
		tlm_cli_err(optind < argc ? "unexpected argument" : "--to FILE is required");
		return 2;
	}
	if (o.mem % 4096 || o.mem < (1u << 20)) {
		tlm_cli_err("--mem must be at least 1M and a multiple of 4096");
		return 2;
	}
	if (!tlm_transport_available(o.transport)) {
		tlm_cli_err("transport '%s' is not built into this tlm", o.transport);
		return 2;
	}
	if (o.tracker && !strcmp(o.tracker, "pagemap-scan"))
		tr = TLM_TRACK_PAGEMAP_SCAN;
	else if (o.tracker && !strcmp(o.tracker, "mprotect"))
		tr = TLM_TRACK_MPROTECT;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_sigint);
	if (tlm_cli_get_psk(NULL, true, &psk))
		return 1;
	/* The writer first, before the memory exists: a fork later would share
	 * the workload's pages copy-on-write. */
	wa = (struct writer_args){ o.to, o.count };
	{
		struct tlm_session_cfg lcfg = {
			.transport = o.transport, .psk = &psk,
			.caps = TLM_CAP_ZERO_PAGE | TLM_CAP_XBZRLE | TLM_CAP_DEVSTATE,
		};

		child = tlm_bench_fork_listener(&lcfg, "127.0.0.1", port, sizeof(port),
						writer_child, &wa);
	}
	if (child < 0)
		return 1;
	cs = calloc(o.count, sizeof(*cs));
	size = (size_t)o.mem;
	if (!cs || tlm_local_create(&size, 1, tr, &m)) {
		tlm_cli_err("cannot set up %llu bytes of memory", (unsigned long long)o.mem);
		goto out;
	}
	if (tlm_workload_fill(m, o.fill, 2) < 0 ||
	    tlm_workload_start(m, o.workload, o.threads, o.rate, o.seed, &w)) {
		tlm_cli_err("cannot start workload '%s'", o.workload);
		goto out;
	}
	usleep(o.warmup_ms * 1000u);
	/* The write rate with no checkpoint running: the second half of the warm-up. */
	tb0 = tlm_cli_now_ms();
	wb0 = tlm_workload_writes(w);
	usleep(o.warmup_ms * 1000u);
	tb1 = tlm_cli_now_ms();
	wb1 = tlm_workload_writes(w);
	for (; done < o.count && !interrupted; done++) {
		if (done)
			usleep(o.interval_ms * 1000u);
		(void)one_checkpoint(&o, m, w, &psk, port, &cs[done]);
		all_ok &= cs[done].completed && !cs[done].err && (!o.verify || cs[done].verified);
		if (cs[done].err)
			break;
	}
	rc = all_ok && done == o.count ? 0 : 1;
	{
		double rate_before = tb1 > tb0 ? (double)(wb1 - wb0) * 1000.0 / (double)(tb1 - tb0) : 0;
		struct one_ckpt *l = done ? &cs[done < o.count ? done : done - 1] : NULL;
		struct tlm_json j;

		if (l && done < o.count && !l->err && !l->completed)
			l = &cs[done - 1];
		if (o.json) {
			tlm_json_begin(&j, stdout);
			tlm_json_str(&j, "policy", tlm_policy_name(o.mo.policy));
			tlm_json_str(&j, "workload", o.workload);
			tlm_json_u64(&j, "mem", o.mem);
			tlm_json_u64(&j, "rate", o.rate);
			tlm_json_str(&j, "file", o.to);
			tlm_json_str(&j, "dirty_tracker", tlm_local_tracker_name(m));
			tlm_json_bool(&j, "completed", rc == 0 || (l && l->completed));
			tlm_json_bool(&j, "verified", o.verify && all_ok && done == o.count);
			tlm_json_dbl(&j, "writes_per_s_before", rate_before);
			if (l) {
				tlm_json_u64(&j, "downtime_ms", l->st.downtime_ms);
				tlm_json_u64(&j, "elapsed_ms", l->st.elapsed_ms);
				tlm_json_u64(&j, "total_ms", l->total_ms);
				tlm_json_u64(&j, "file_bytes", l->res.st.file_bytes);
				tlm_json_u64(&j, "disk_bytes", l->res.st.disk_bytes);
				tlm_json_u64(&j, "pages_written", l->res.st.pages_written);
			}
			tlm_json_arr(&j, "checkpoints");
			for (unsigned i = 0; i < done + (done < o.count ? 1 : 0) && i < o.count; i++) {
				struct one_ckpt *c = &cs[i];

				tlm_json_obj(&j, NULL);
				tlm_json_bool(&j, "completed", c->completed && !c->err);
				tlm_json_bool(&j, "verified", c->verified);
				tlm_json_bool(&j, "incremental", c->res.st.incremental);
				tlm_json_u64(&j, "epoch", c->res.st.epoch);
				tlm_json_u64(&j, "downtime_ms", c->st.downtime_ms);
				tlm_json_u64(&j, "elapsed_ms", c->st.elapsed_ms);
				tlm_json_u64(&j, "total_ms", c->total_ms);
				tlm_json_dbl(&j, "commit_ms", c->res.st.commit_ms);
				tlm_json_u64(&j, "restore_ms", c->restore_ms);
				tlm_json_u64(&j, "file_bytes", c->res.st.file_bytes);
				tlm_json_u64(&j, "disk_bytes", c->res.st.disk_bytes);
				tlm_json_u64(&j, "pages_total", c->res.st.pages_total);
				tlm_json_u64(&j, "pages_written", c->res.st.pages_written);
				tlm_json_u64(&j, "pages_data", c->res.st.pages_data);
				tlm_json_u64(&j, "copied_bytes", c->res.st.copied_bytes);
				tlm_json_bool(&j, "reflinked", c->res.st.reflinked);
				tlm_json_u64(&j, "pages_chk", c->st.pages_chk);
				tlm_json_u64(&j, "pages_ps", c->st.pages_ps);
				tlm_json_u64(&j, "pages_zero", c->st.pages_zero);
				tlm_json_u64(&j, "writer_peak_rss_bytes", c->res.peak_rss);
				tlm_json_dbl(&j, "writes_per_s_during",
					     c->during_ms ? (double)c->writes_during * 1000.0 /
							    (double)c->during_ms : 0);
				if (c->why[0])
					tlm_json_str(&j, "error", c->why);
				tlm_json_end_obj(&j);
			}
			tlm_json_end_arr(&j);
			tlm_json_finish(&j);
		} else {
			printf("policy %s, workload %s at %llu writes/s (%.0f measured), %llu MiB, "
			       "into %s\n", tlm_policy_name(o.mo.policy), o.workload,
			       (unsigned long long)o.rate, rate_before,
			       (unsigned long long)(o.mem >> 20), o.to);
			for (unsigned i = 0; i < done + (done < o.count ? 1 : 0) && i < o.count; i++) {
				struct one_ckpt *c = &cs[i];

				if (c->err || !c->completed) {
					printf("  checkpoint %u FAILED: %s\n", i + 1, c->why);
					continue;
				}
				printf("  checkpoint %u (epoch %llu, %s): downtime %llu ms, engine %llu ms, "
				       "total %llu ms; %llu of %llu pages written; file %.1f MiB, %.1f MiB "
				       "on disk%s\n", i + 1, (unsigned long long)c->res.st.epoch,
				       c->res.st.incremental ? "incremental" : "new file",
				       (unsigned long long)c->st.downtime_ms,
				       (unsigned long long)c->st.elapsed_ms,
				       (unsigned long long)c->total_ms,
				       (unsigned long long)c->res.st.pages_written,
				       (unsigned long long)c->res.st.pages_total,
				       (double)c->res.st.file_bytes / 1048576.0,
				       (double)c->res.st.disk_bytes / 1048576.0,
				       o.verify ? (c->verified ? "; restored and verified" : "; NOT verified")
						: "");
			}
		}
	}
out:
	for (unsigned i = 0; i < o.count && cs; i++)
		tlm_migrate_stats_free(&cs[i].st);
	free(cs);
	if (w)
		tlm_workload_stop(w);
	if (m)
		tlm_local_destroy(m);
	/* A writer still waiting for a session that never comes is told to go. */
	for (int i = 0; i < 300 && waitpid(child, &status, WNOHANG) == 0; i++)
		usleep(10000);
	if (waitpid(child, &status, WNOHANG) == 0) {
		kill(child, SIGTERM);
		waitpid(child, &status, 0);
	}
	return rc;
}

/* ---- tlm bench restore ---- */

static void usage_restore(FILE *f)
{
	fprintf(f,
"usage: tlm bench restore --from FILE [--transport NAME] [--chk-lanes N] [--json]\n"
"\n"
"Validates FILE whole, restores it through the TLM engine into fresh memory\n"
"over loopback lanes and compares the result with the file, region by\n"
"region. The peer: reading the file sequentially, in the same run.\n");
}

/* The peer: every byte of the file, front to back. */
static int read_file_ms(const char *path, uint64_t *ms, uint64_t *bytes)
{
	uint64_t t0 = tlm_cli_now_ms();
	size_t cap = 1u << 20;
	char *buf = malloc(cap);
	int fd = open(path, O_RDONLY);
	ssize_t n;

	*bytes = 0;
	if (fd < 0 || !buf) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((n = read(fd, buf, cap)) > 0)
		*bytes += (uint64_t)n;
	close(fd);
	free(buf);
	*ms = tlm_cli_now_ms() - t0;
	return n < 0 ? -errno : 0;
}

int tlm_cli_bench_restore(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "transport", required_argument, NULL, 't' },
		{ "chk-lanes", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *from = NULL, *transport = "tcp";
	uint64_t chk = 1;
	bool json = false, verified = false;
	struct tlm_ckpt_r *r = NULL;
	struct restored d = { 0 };
	uint8_t sha_f[TLM_MAX_REGIONS][32], sha_d[TLM_MAX_REGIONS][32];
	uint64_t t0, check_ms, read_ms = 0, read_bytes = 0;
	const struct tlm_region *reg;
	unsigned n;
	char why[200] = "";
	int opt, err;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'f': from = optarg; break;
		case 't': transport = optarg; break;
		case 'c':
			if (tlm_cli_parse_size(optarg, &chk) || !chk || chk >= TLM_MAX_LANES - 1) {
				tlm_cli_err("bad --chk-lanes '%s'", optarg);
				return 2;
			}
			break;
		case 'j': json = true; break;
		case 'h': usage_restore(stdout); return 0;
		default: usage_restore(stderr); return 2;
		}
	}
	if (!from || optind < argc) {
		usage_restore(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	t0 = tlm_cli_now_ms();
	err = tlm_ckpt_open(from, &r, why, sizeof(why));
	check_ms = tlm_cli_now_ms() - t0;
	if (err) {
		tlm_cli_err("%s: refused: %s", from, why);
		return 1;
	}
	(void)read_file_ms(from, &read_ms, &read_bytes);
	err = restore_into_memory(r, transport, (unsigned)chk, &d);
	if (!err) {
		tlm_ckpt_r_regions(r, &reg, &n);
		err = sha_regions(reg, n, sha_f);
		if (!err)
			err = sha_regions(d.reg, d.n, sha_d);
		verified = !err && !memcmp(sha_f, sha_d, 32 * (size_t)n);
	}
	if (json) {
		struct tlm_json j;

		tlm_json_begin(&j, stdout);
		tlm_json_str(&j, "file", from);
		tlm_json_bool(&j, "completed", d.completed);
		tlm_json_bool(&j, "verified", verified);
		tlm_json_u64(&j, "epoch", tlm_ckpt_r_info(r)->epoch);
		tlm_json_u64(&j, "check_ms", check_ms);
		tlm_json_u64(&j, "restore_ms", d.ms);
		tlm_json_u64(&j, "read_ms", read_ms);
		tlm_json_u64(&j, "read_bytes", read_bytes);
		tlm_json_dbl(&j, "restore_over_read", read_ms ? (double)d.ms / (double)read_ms : 0);
		tlm_json_u64(&j, "file_bytes", tlm_ckpt_r_info(r)->file_bytes);
		tlm_json_u64(&j, "disk_bytes", tlm_ckpt_r_info(r)->disk_bytes);
		tlm_json_u64(&j, "pages_applied", d.pages_applied);
		if (d.why[0])
			tlm_json_str(&j, "error", d.why);
		tlm_json_finish(&j);
	} else if (d.completed) {
		printf("restored %s (epoch %llu) in %llu ms (reading the file: %llu ms; check %llu ms): "
		       "%s\n", from, (unsigned long long)tlm_ckpt_r_info(r)->epoch,
		       (unsigned long long)d.ms, (unsigned long long)read_ms,
		       (unsigned long long)check_ms,
		       verified ? "memory equals the file, byte for byte" : "MISMATCH");
	} else {
		tlm_cli_err("restore failed: %s", d.why);
	}
	restored_free(&d);
	tlm_ckpt_close(r);
	return d.completed && verified ? 0 : 1;
}
