/* SPDX-License-Identifier: MIT */
/* Between the files of the benchmark library (tlm-bench.h lists them). */
#ifndef TLM_BENCH_INTERNAL_H
#define TLM_BENCH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tlm-bench.h"

#define STAMP_LEN   16
#define STAMP_MAGIC 0x544c4d42u          /* "TLMB" */
#define SLOTS       16                   /* templates per lane */
#define BURST_BYTES (1u << 20)           /* page data per send_pages() call */
#define REPORT_MAX  (16 * 1024)
#define EPOCH       1

/* pattern.c APIs: templates and crc tables shared by both ends for one
 * (lanes, page size). */
struct pattern {
	uint32_t page_size;
	unsigned slots;            /* templates per lane (SLOTS) */
	unsigned burst;            /* pages per send_pages() call, a multiple of slots */
	unsigned lanes;
	uint8_t *tmpl;             /* [lanes][slots][page_size] */
	uint32_t *rest_crc;        /* [lanes][slots]: crc32c of bytes after the stamp */
	uint32_t shift[4][256];    /* crc of stamp -> its effect after page_size-16 bytes */
};

int tlm__bench_pattern_init(struct pattern *p, unsigned lanes, uint32_t page_size);
void tlm__bench_pattern_free(struct pattern *p);
/* Per page, so inline: the template, the stamp, the page's crc. */
static inline uint8_t *tlm__bench_tmpl_of(const struct pattern *p, unsigned lane, unsigned slot)
{
	return p->tmpl + ((size_t)(lane - 1) * p->slots + slot) * p->page_size;
}

static inline void tlm__bench_stamp(uint8_t *s, unsigned lane, uint64_t index)
{
	uint32_t v[2] = { lane, STAMP_MAGIC };

	memcpy(s, v, 8);
	memcpy(s + 8, &index, 8);
}

/*
 * crc32c(stamp || rest) = crc32c(0, rest) ^ M(crc32c(0, stamp)), with M the
 * linear map "run n = page_size - 16 zero bytes through the register":
 * chaining gives crc(c, rest) and the pre/post inversion cancels in
 * crc(c, zeros) ^ crc(0, zeros). M is tabulated per byte of its input.
 */
static inline uint32_t tlm__bench_page_crc(const struct pattern *p, uint32_t rest_crc,
					   const uint8_t *st)
{
	uint32_t c = tlm_crc32c(0, st, STAMP_LEN);

	return rest_crc ^ p->shift[0][c & 0xff] ^ p->shift[1][(c >> 8) & 0xff] ^
	       p->shift[2][(c >> 16) & 0xff] ^ p->shift[3][c >> 24];
}

/* crc32c of template slot of lane after its stamp */
static inline uint32_t tlm__bench_rest_crc(const struct pattern *p, unsigned lane, unsigned slot)
{
	return p->rest_crc[(size_t)(lane - 1) * p->slots + slot];
}

/* One lane's thread, either end. */
struct lane_job {
	struct tlm_lane *lane;
	const struct pattern *pat;
	unsigned id;               /* 1..lanes */
	unsigned lanes;
	uint64_t pages;            /* sender: pages to send */
	uint8_t *zc_pool;          /* sender: 2 bursts of registered pages, or NULL */
	int timeout_ms;            /* receiver: longest quiet spell */
	uint64_t placed;           /* receiver: PLACED records */
	uint64_t staged;           /* receiver: ... of them opened from staging */
	bool full;                 /* receiver: compare every byte (--verify full) */
	uint64_t next;             /* receiver: next expected k */
	uint64_t t_first;
	bool last;
	struct tlm_bench_lane res;
};

/* Lane id gets pages k = 0.. with global index k * lanes + id - 1. */
static inline uint64_t tlm__bench_pages_of_lane(uint64_t total, unsigned lanes, unsigned id)
{
	return total / lanes + ((total % lanes) >= id ? 1 : 0);
}

/* util.c APIs: */
/* n lanes threads running fn(&jobs[i]); on a failed pthread_create the
 * lanes already started are still joined. Returns 0 or -errno. */
int tlm__bench_run_lanes(struct lane_job *jobs, unsigned n, void *(*fn)(void *));

/* report.c APIs: the report's text form on the control lane. */
int tlm__bench_report_format(char *buf, size_t cap, const struct tlm_bench_report *r,
			     const struct lane_job *jobs, unsigned n);
int tlm__bench_report_parse(char *text, unsigned lanes, struct tlm_bench_report *r);

#endif
