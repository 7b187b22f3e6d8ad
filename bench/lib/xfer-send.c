/* SPDX-License-Identifier: MIT */
/*
 * The sending end of a transport run (tlm-bench.h): t0; one thread per
 * data lane sends its share of the pages in bursts, then a TLM_PF_LAST
 * record; then the receiver's report is read on the control lane (byte
 * mode); t1 = report in; seconds = t1 - t0, less the receiver's in-place
 * check.
 *
 * Zero copy (on transports that can): the sender registers its page pools,
 * two halves of a burst per lane, and sends TLM_PF_LIVE records; global
 * page g lands at the receiver's window page g % R (R a multiple of the
 * lane count, so one lane owns each window page, in order). Before
 * re-stamping a half the sender waits until the burst that used it two
 * bursts ago is complete (tlm_lane_wait_sent). dpdk takes the sender's
 * registration (live_send: no staging copy) but refuses the receiver's
 * window.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench-internal.h"

static void *send_thread(void *arg)
{
	struct lane_job *j = arg;
	const struct pattern *p = j->pat;
	struct tlm_page_rec *recs = calloc(p->burst, sizeof(*recs));
	size_t half = (size_t)p->burst * p->page_size;
	uint8_t *pool = j->zc_pool ? j->zc_pool : malloc(half);
	uint64_t t0 = tlm_bench_now_ns(), k = 0, sent = 0, done_at[2] = { 0, 0 };
	unsigned halves = j->zc_pool ? 2 : 1, b = 0;
	int rc = 0;

	if (!recs || !pool) {
		j->res.err = -ENOMEM;
		goto out;
	}
	/* Page n of a pool half holds template n % slots; only stamps change
	 * per burst. Copying: send_pages() returns once the transport has the
	 * bytes, so the pool is ours again for the next burst. Zero copy: the
	 * transport reads the half when it sends it, so bursts alternate
	 * halves and a half is re-stamped only once its last burst completed.
	 * Bursts start at multiples of burst, so page k sits in slot k % burst,
	 * template k % slots. */
	for (size_t off = 0; off < halves * half; off += (size_t)p->slots * p->page_size)
		memcpy(pool + off, tlm__bench_tmpl_of(p, j->id, 0), (size_t)p->slots * p->page_size);
	while (k < j->pages) {
		uint8_t *base = pool + (b % halves) * half;
		unsigned n = 0;

		if (j->zc_pool && b >= 2) {
			rc = tlm_lane_wait_sent(j->lane, done_at[b % 2], j->timeout_ms);
			if (rc < 0)
				break;
		}
		for (; n < p->burst && k < j->pages; n++, k++) {
			uint8_t *pg = base + (size_t)n * p->page_size;
			uint64_t index = k * j->lanes + j->id - 1;

			tlm__bench_stamp(pg, j->id, index);
			recs[n] = (struct tlm_page_rec){
				.index = index, .epoch = EPOCH, .region = 0,
				.len = p->page_size, .data = pg,
			};
			if (j->zc_pool)
				recs[n].flags = TLM_PF_LIVE;
			else
				recs[n].crc = tlm__bench_page_crc(p, tlm__bench_rest_crc(p, j->id, n % p->slots),
								  pg);
		}
		rc = tlm_lane_send_pages(j->lane, recs, n);
		if (rc < 0)
			break;
		sent += n;
		done_at[b % 2] = sent;
		b++;
		j->res.pages += n;
		j->res.bytes += (uint64_t)n * p->page_size;
	}
	if (rc >= 0) {
		recs[0] = (struct tlm_page_rec){ .index = UINT64_MAX, .epoch = EPOCH,
						 .flags = TLM_PF_LAST };
		rc = tlm_lane_send_pages(j->lane, recs, 1);
	}
	if (rc >= 0)
		rc = tlm_lane_flush(j->lane);
	j->res.err = rc < 0 ? rc : 0;
out:
	j->res.ns = tlm_bench_now_ns() - t0;
	free(recs);
	if (!j->zc_pool)
		free(pool);
	return NULL;
}

/* Reads the control lane until the peer's FIN; returns bytes or error. */
static ssize_t read_report(struct tlm_lane *l, char *buf, size_t cap, int timeout_ms)
{
	size_t got = 0;

	while (got + 1 < cap) {
		ssize_t r = tlm_lane_read(l, buf + got, cap - 1 - got, timeout_ms);

		if (r < 0)
			return r;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

/* len bytes of page pools registered for zero copy on every data lane of
 * s, or NULL (copying) where a lane cannot. */
static uint8_t *zc_pools(struct tlm_session *s, const struct tlm_bench_xfer *o, size_t len)
{
	uint8_t *zc = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int rc = zc == MAP_FAILED ? -ENOMEM : 0;

	for (unsigned i = 1; !rc && i <= o->lanes; i++)
		rc = tlm_lane_register_region(tlm_session_lane(s, i), 0, zc, len, TLM_REG_SRC,
					      o->timeout_ms);
	if (!rc)
		return zc;
	if (rc != -EOPNOTSUPP)
		tlm_bench_err("zero copy is off: %s", tlm_strerror(rc));
	for (unsigned i = 1; i <= o->lanes; i++)
		tlm_lane_unregister_regions(tlm_session_lane(s, i));
	if (zc != MAP_FAILED)
		munmap(zc, len);
	return NULL;
}

int tlm_bench_send(const struct tlm_bench_xfer *o, struct tlm_session_cfg *cfg,
		   const char *host, const char *port, struct tlm_bench_outcome *r)
{
	struct tlm_session *s = NULL;
	struct lane_job *jobs = NULL;
	struct pattern pat = { 0 };
	char *text = NULL;
	uint8_t *zc = NULL;
	size_t zc_len = 0;
	uint64_t total = tlm_bench_pages_total(o), t0, cpu0;
	int rc, status = -1;
	ssize_t got;

	memset(r, 0, sizeof(*r));
	r->peer_Bps = -1;
	rc = tlm__bench_pattern_init(&pat, o->lanes, o->page_size);
	if (rc) {
		tlm_bench_err("cannot set up the page pattern: %s", tlm_strerror(rc));
		goto out;
	}
	jobs = calloc(o->lanes, sizeof(*jobs));
	text = malloc(REPORT_MAX);
	if (!jobs || !text) {
		tlm_bench_err("out of memory");
		goto out;
	}
	rc = tlm_connect(cfg, host, port, &s);
	if (rc) {
		tlm_bench_err("cannot connect to %s port %s: %s", host, port, tlm_strerror(rc));
		goto out;
	}
	/* Zero copy where every lane can: the pools, two bursts per lane. */
	if (cfg->n_regions == 1) {
		zc_len = (size_t)o->lanes * 2 * pat.burst * o->page_size;
		zc = zc_pools(s, o, zc_len);
		r->live_send = zc != NULL;
	}
	for (unsigned i = 0; i < o->lanes; i++)
		jobs[i] = (struct lane_job){ .lane = tlm_session_lane(s, i + 1), .pat = &pat,
					     .id = i + 1, .lanes = o->lanes,
					     .pages = tlm__bench_pages_of_lane(total, o->lanes, i + 1),
					     .timeout_ms = o->timeout_ms,
					     .zc_pool = zc ? zc + (size_t)i * 2 * pat.burst * o->page_size
							   : NULL };
	t0 = tlm_bench_now_ns();
	cpu0 = tlm_bench_cpu_ns();
	rc = tlm__bench_run_lanes(jobs, o->lanes, send_thread);
	if (rc) {
		tlm_bench_err("cannot start sender threads: %s", strerror(-rc));
		goto out;
	}
	for (unsigned i = 0; i < o->lanes; i++)
		if (jobs[i].res.err) {
			tlm_bench_err("lane %u: %s", i + 1, tlm_strerror(jobs[i].res.err));
			goto out;
		}
	/* The receiver answers once it has checked every page. */
	got = read_report(tlm_session_lane(s, 0), text, REPORT_MAX,
			  o->timeout_ms > 60000 ? o->timeout_ms : 60000);
	r->secs = (double)(tlm_bench_now_ns() - t0) / 1e9;
	if (got < 0) {
		tlm_bench_err("no report from the receiver: %s", tlm_strerror((int)got));
		goto out;
	}
	tlm_lane_shutdown(tlm_session_lane(s, 0));
	if (tlm__bench_report_parse(text, o->lanes, &r->rep) < 0) {
		tlm_bench_err("malformed report from the receiver");
		goto out;
	}
	/* Every page placed where the receiver offered a window, none where it
	 * did not (dpdk takes the sender's registration, not the receiver's). */
	r->verified = r->rep.ok && r->rep.bad == 0 && r->rep.pages == total &&
		      r->rep.placed == (tlm_bench_placed_mode(r) ? total : 0);
	for (unsigned i = 0; i < o->lanes; i++) {
		r->bytes += jobs[i].res.bytes;
		if (r->rep.lane[i].pages != jobs[i].res.pages || r->rep.lane[i].err)
			r->verified = false;
	}
	r->verify_s = (double)r->rep.vns / 1e9;
	if (r->secs > r->verify_s)
		r->secs -= r->verify_s;
	r->cpu = tlm_bench_cpu_ns() - cpu0;
	status = 0;
out:
	if (zc && s)
		for (unsigned i = 1; i <= o->lanes; i++)
			tlm_lane_unregister_regions(tlm_session_lane(s, i));
	tlm_session_close(s);
	if (zc)
		munmap(zc, zc_len);
	free(text);
	free(jobs);
	tlm__bench_pattern_free(&pat);
	return status;
}
