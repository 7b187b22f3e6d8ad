/* SPDX-License-Identifier: MIT */
/*
 * The receiver's report on the control lane, and the figures derived from
 * an outcome (tlm-bench.h).
 *
 * The report is text, one line "R key=value..." for the whole run, then one
 * line "L id pages bytes bad ns err" per data lane.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench-internal.h"

int tlm__bench_report_format(char *buf, size_t cap, const struct tlm_bench_report *r,
			     const struct lane_job *jobs, unsigned n)
{
	size_t off = 0;

	off += (size_t)snprintf(buf + off, cap - off,
				"R ok=%d pages=%" PRIu64 " bytes=%" PRIu64 " bad=%" PRIu64
				" rss=%" PRIu64 " ns=%" PRIu64 " cpu=%" PRIu64 " full=%d"
				" placed=%" PRIu64 " reg_ns=%" PRIu64 " reg_bytes=%" PRIu64
				" vns=%" PRIu64 " vpages=%" PRIu64 " staged=%" PRIu64 "\n", r->ok,
				r->pages, r->bytes, r->bad, r->rss, r->ns, r->cpu, r->full,
				r->placed, r->reg_ns, r->reg_bytes, r->vns, r->vpages, r->staged);
	for (unsigned i = 0; i < n && off < cap - 128; i++)
		off += (size_t)snprintf(buf + off, cap - off,
					"L %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %d\n",
					i + 1, jobs[i].res.pages, jobs[i].res.bytes,
					jobs[i].res.bad, jobs[i].res.ns, jobs[i].res.err);
	return (int)off;
}

int tlm__bench_report_parse(char *text, unsigned lanes, struct tlm_bench_report *r)
{
	char *save = NULL, *line;
	unsigned seen = 0;

	memset(r, 0, sizeof(*r));
	line = strtok_r(text, "\n", &save);
	if (!line || sscanf(line, "R ok=%d pages=%" SCNu64 " bytes=%" SCNu64 " bad=%" SCNu64
			    " rss=%" SCNu64 " ns=%" SCNu64 " cpu=%" SCNu64 " full=%d"
			    " placed=%" SCNu64 " reg_ns=%" SCNu64 " reg_bytes=%" SCNu64
			    " vns=%" SCNu64 " vpages=%" SCNu64 " staged=%" SCNu64, &r->ok,
			    &r->pages, &r->bytes, &r->bad, &r->rss, &r->ns, &r->cpu,
			    &r->full, &r->placed, &r->reg_ns, &r->reg_bytes, &r->vns,
			    &r->vpages, &r->staged) != 14)
		return -EPROTO;
	while ((line = strtok_r(NULL, "\n", &save))) {
		struct tlm_bench_lane lr;
		unsigned id;

		if (sscanf(line, "L %u %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %d", &id,
			   &lr.pages, &lr.bytes, &lr.bad, &lr.ns, &lr.err) != 6 ||
		    id < 1 || id > lanes)
			return -EPROTO;
		r->lane[id - 1] = lr;
		seen++;
	}
	return seen == lanes ? 0 : -EPROTO;
}

uint64_t tlm_bench_pages_total(const struct tlm_bench_xfer *x)
{
	return (x->bytes + x->page_size - 1) / x->page_size;
}

void tlm_bench_session_cfg(const struct tlm_bench_xfer *x, bool copy,
			   struct tlm_session_cfg *cfg)
{
	cfg->n_lanes = x->lanes;
	for (unsigned i = 1; i <= x->lanes; i++)
		cfg->lane_modes[i] = TLM_MODE_PAGES;
	/* Region 0: the receiver's zero-copy window (none with copy). */
	if (!copy) {
		uint64_t total = tlm_bench_pages_total(x), max = TLM_BENCH_ZC_WINDOW / x->page_size;
		uint64_t w = total < max ? total : max;

		cfg->n_regions = 1;
		cfg->region_len[0] = (w < x->lanes ? x->lanes : w / x->lanes * x->lanes) *
				     x->page_size;
	}
}

struct tlm_bench_cost tlm_bench_cost_of(const struct tlm_bench_outcome *r, double hz)
{
	double pages = (double)r->rep.pages, tx = (double)r->cpu / 1e9,
	       rx = (double)r->rep.cpu / 1e9;

	if (!pages)
		return (struct tlm_bench_cost){ 0 };
	return (struct tlm_bench_cost){ tx * hz / pages, rx * hz / pages,
					tx > 0 ? pages / tx : 0, rx > 0 ? pages / rx : 0 };
}

double tlm_bench_goodput(const struct tlm_bench_outcome *r)
{
	return r->secs > 0 ? (double)r->bytes / r->secs : 0;
}

double tlm_bench_line_rate_pps(uint32_t page_size)
{
	return 1.19e9 / page_size;
}

bool tlm_bench_placed_mode(const struct tlm_bench_outcome *r)
{
	return r->live_send && r->rep.reg_bytes;
}

double tlm_bench_reg_s_per_gib(const struct tlm_bench_report *rep)
{
	return rep->reg_bytes ? (double)rep->reg_ns / 1e9 /
				((double)rep->reg_bytes / (1024.0 * 1024.0 * 1024.0)) : 0;
}
