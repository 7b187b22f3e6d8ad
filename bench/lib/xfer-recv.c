/* SPDX-License-Identifier: MIT */
/*
 * The receiving end of a transport run (tlm-bench.h): one thread per data
 * lane takes records until LAST and checks each one (the order of the
 * indices, the stamp, and every other byte against its own copy of the
 * template, or with verify_crc the record's crc32c against the crc the
 * expected content has: the transport itself has checked the data against
 * that crc); then the report (verified, counts, per-lane figures, peak
 * RSS) goes on the control lane, followed by FIN.
 *
 * Zero copy: the receiver offers a window of up to TLM_BENCH_TLM_BENCH_ZC_WINDOW
 * bytes as region 0; it checks each PLACED record's header as it comes
 * and, after every lane's LAST, every window page against the last page
 * placed there; that check is reported (vns) and not counted in the
 * goodput time. dpdk refuses the window: nothing is placed, each page is
 * copied out of the lane's ring and checked as it comes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench-internal.h"

static int check_page(void *arg, const struct tlm_page_rec *r)
{
	struct lane_job *j = arg;
	const struct pattern *p = j->pat;
	uint64_t want = j->next * j->lanes + j->id - 1;
	uint8_t st[STAMP_LEN];
	const uint8_t *t;
	unsigned slot;

	if (!j->t_first)
		j->t_first = tlm_bench_now_ns();
	if (r->flags & TLM_PF_LAST) {
		j->last = true;
		return 0;
	}
	if (j->last) {
		j->res.bad++;       /* nothing may follow LAST */
		return 0;
	}
	slot = (unsigned)(j->next % p->slots);
	t = tlm__bench_tmpl_of(p, j->id, slot);
	tlm__bench_stamp(st, j->id, want);
	/* PLACED: the data is in the window already; checked at the end.
	 * STAGED too: it crossed sealed, and was opened into place. */
	if ((r->flags & ~TLM_PF_STAGED) == TLM_PF_PLACED) {
		if (r->index != want || r->region != 0 || r->epoch != EPOCH ||
		    r->len != p->page_size || r->data)
			j->res.bad++;
		j->placed++;
		if (r->flags & TLM_PF_STAGED)
			j->staged++;
		j->next++;
		j->res.pages++;
		j->res.bytes += r->len;
		return 0;
	}
	/* --verify crc: the transport has checked the data against r->crc;
	 * we check r->crc against the crc the expected content has. */
	if (r->index != want || r->region != 0 || r->epoch != EPOCH || r->flags ||
	    r->len != p->page_size || memcmp(r->data, st, STAMP_LEN) ||
	    (j->full ? memcmp((const uint8_t *)r->data + STAMP_LEN, t + STAMP_LEN,
			      p->page_size - STAMP_LEN) != 0
		     : r->crc != tlm__bench_page_crc(p, tlm__bench_rest_crc(p, j->id, slot), st)))
		j->res.bad++;
	j->next++;
	j->res.pages++;
	j->res.bytes += r->len;
	return 0;
}

static void *recv_thread(void *arg)
{
	struct lane_job *j = arg;
	struct tlm_page_sink sink = { check_page, j };
	int rc = 0;

	while (!j->last) {
		rc = tlm_lane_recv_pages(j->lane, &sink, j->timeout_ms);
		if (rc == 0)
			rc = -ETIMEDOUT;   /* nothing for a whole timeout */
		if (rc < 0)
			break;
	}
	j->res.err = rc < 0 ? rc : 0;
	j->res.ns = j->t_first ? tlm_bench_now_ns() - j->t_first : 0;
	return NULL;
}

/* The receiver's zero-copy window. */
struct window {
	uint8_t *base;
	uint64_t pages;
	uint64_t reg_ns, reg_bytes;
	uint64_t verify_ns, verified;   /* pages checked in place */
};

/* Offer the window the sender asked for (region 0) on every lane. */
static void window_offer(struct tlm_session *s, uint32_t ps, struct window *w, int timeout_ms)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(s);
	uint64_t t0;
	size_t len;

	memset(w, 0, sizeof(*w));
	if (cfg->n_regions != 1 || cfg->region_len[0] == 0 || cfg->region_len[0] > TLM_BENCH_ZC_WINDOW ||
	    cfg->region_len[0] % ps)
		return;
	len = (size_t)cfg->region_len[0];
	w->base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->base == MAP_FAILED) {
		w->base = NULL;
		return;
	}
	w->pages = len / ps;
	t0 = tlm_bench_now_ns();
	for (unsigned i = 1; i <= tlm_session_lanes(s); i++) {
		int rc = tlm_lane_register_region(tlm_session_lane(s, i), 0, w->base, len,
						  TLM_REG_DST, timeout_ms);
		if (rc) {
			if (rc != -EOPNOTSUPP)
				tlm_bench_err("receiver: lane %u: zero copy not offered: %s", i,
					    tlm_strerror(rc));
			return;
		}
	}
	w->reg_ns = tlm_bench_now_ns() - t0;
	w->reg_bytes = len;
}

/* After every LAST: each window page must hold the last page placed there
 * (global page g goes to g % pages; that page's lane sends in order). */
static uint64_t window_check(const struct window *w, const struct pattern *p, uint64_t total,
			     unsigned lanes)
{
	uint64_t bad = 0;
	uint8_t st[STAMP_LEN];

	for (uint64_t slot = 0; slot < w->pages && slot < total; slot++) {
		uint64_t g = slot + (total - 1 - slot) / w->pages * w->pages;
		unsigned lane = (unsigned)(g % lanes) + 1;
		const uint8_t *pg = w->base + slot * p->page_size;
		const uint8_t *t = tlm__bench_tmpl_of(p, lane, (unsigned)(g / lanes % p->slots));

		tlm__bench_stamp(st, lane, g);
		if (memcmp(pg, st, STAMP_LEN) ||
		    memcmp(pg + STAMP_LEN, t + STAMP_LEN, p->page_size - STAMP_LEN))
			bad++;
	}
	return bad;
}

static void window_free(struct tlm_session *s, struct window *w)
{
	if (!w->base)
		return;
	for (unsigned i = 1; i <= tlm_session_lanes(s); i++)
		tlm_lane_unregister_regions(tlm_session_lane(s, i));
	munmap(w->base, w->pages * tlm_session_cfg_get(s)->page_size);
	w->base = NULL;
}

/* The lanes' results into rep: totals, and the window checked in place
 * where the transport placed pages. */
static void judge(const struct lane_job *jobs, unsigned n, const struct pattern *pat,
		  struct window *w, struct tlm_bench_report *rep)
{
	rep->ok = 1;
	for (unsigned i = 0; i < n; i++) {
		rep->pages += jobs[i].res.pages;
		rep->bytes += jobs[i].res.bytes;
		rep->bad += jobs[i].res.bad;
		if (jobs[i].res.err || jobs[i].res.bad || !jobs[i].last)
			rep->ok = 0;
		if (jobs[i].res.err)
			tlm_bench_err("receiver: lane %u: %s", i + 1, tlm_strerror(jobs[i].res.err));
		rep->placed += jobs[i].placed;
		rep->staged += jobs[i].staged;
	}
	if (rep->placed) {
		uint64_t v0 = tlm_bench_now_ns(), wbad;

		/* All placed, or the lanes disagree about zero copy. */
		if (rep->placed == rep->pages && w->base) {
			wbad = window_check(w, pat, rep->pages, n);
			w->verified = w->pages < rep->pages ? w->pages : rep->pages;
		} else {
			wbad = rep->pages;
		}
		w->verify_ns = tlm_bench_now_ns() - v0;
		rep->bad += wbad;
		if (wbad)
			rep->ok = 0;
	}
}

/*
 * Accept one session, receive and verify, report on the control lane.
 */
int tlm_bench_receive(struct tlm_listener *li, const struct tlm_bench_xfer *o,
		      struct tlm_bench_rx_summary *sum)
{
	struct tlm_session *s = NULL;
	const struct tlm_session_cfg *cfg;
	struct tlm_bench_report rep = { 0 };
	struct lane_job *jobs = NULL;
	struct pattern pat = { 0 };
	struct window w = { 0 };
	char *text = NULL;
	unsigned n;
	uint64_t t0, cpu0;
	int rc, len;

	rc = tlm_accept(li, o->timeout_ms, &s);
	if (rc) {
		tlm_bench_err("receiver: no session: %s", tlm_strerror(rc));
		return rc;
	}
	cfg = tlm_session_cfg_get(s);
	n = tlm_session_lanes(s);
	for (unsigned i = 1; i <= n; i++)
		if (cfg->lane_modes[i] != TLM_MODE_PAGES) {
			tlm_bench_err("receiver: data lane %u is not in page mode", i);
			rc = -TLM_EPARAM;
			goto out;
		}
	rc = tlm__bench_pattern_init(&pat, n, cfg->page_size);
	if (rc)
		goto out;
	jobs = calloc(n, sizeof(*jobs));
	text = malloc(REPORT_MAX);
	if (!jobs || !text) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < n; i++)
		jobs[i] = (struct lane_job){ .lane = tlm_session_lane(s, i + 1), .pat = &pat,
					     .id = i + 1, .lanes = n,
					     .timeout_ms = o->timeout_ms,
					     .full = !o->verify_crc };
	window_offer(s, cfg->page_size, &w, o->timeout_ms);
	t0 = tlm_bench_now_ns();
	cpu0 = tlm_bench_cpu_ns();
	rc = tlm__bench_run_lanes(jobs, n, recv_thread);
	if (rc)
		goto out;
	judge(jobs, n, &pat, &w, &rep);
	window_free(s, &w);
	rep.rss = tlm_bench_peak_rss();
	rep.ns = tlm_bench_now_ns() - t0;
	rep.cpu = tlm_bench_cpu_ns() - cpu0;
	rep.full = !o->verify_crc;
	rep.reg_ns = w.reg_ns;
	rep.reg_bytes = w.reg_bytes;
	rep.vns = w.verify_ns;
	rep.vpages = w.verified;
	len = tlm__bench_report_format(text, REPORT_MAX, &rep, jobs, n);
	rc = (int)tlm_lane_write(tlm_session_lane(s, 0), text, (size_t)len);
	if (rc >= 0)
		rc = tlm_lane_shutdown(tlm_session_lane(s, 0));
	if (rc < 0) {
		tlm_bench_err("receiver: cannot send the report: %s", tlm_strerror(rc));
		goto out;
	}
	/* Wait for the sender's end so it has the report before we close. */
	{
		char tmp[64];

		while (tlm_lane_read(tlm_session_lane(s, 0), tmp, sizeof(tmp),
				     o->timeout_ms) > 0)
			;
	}
	if (sum)
		*sum = (struct tlm_bench_rx_summary){
			.lanes = n, .page_size = cfg->page_size, .pages = rep.pages,
			.bytes = rep.bytes, .bad = rep.bad, .ok = rep.ok,
			.secs = (double)(tlm_bench_now_ns() - t0) / 1e9,
		};
	rc = rep.ok ? 0 : 1;
out:
	window_free(s, &w);
	free(text);
	free(jobs);
	tlm__bench_pattern_free(&pat);
	tlm_session_close(s);
	return rc;
}
