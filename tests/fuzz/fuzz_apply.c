/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the destination's apply path (core/apply.c): page
 * records (plain, zero, XBZRLE, PLACED, LAST) and control messages in any
 * order and any mix, as a key-holding source may send them on sealed lanes
 * (where no crc32c is checked), applied to small regions with a guard page
 * on either side. Anything may be refused; nothing may write outside a
 * region (the guards fault), read out of bounds, crash or hang.
 *
 * core/apply.c is compiled into the target with its few calls into the
 * session (configuration, lanes, the control lane's sends, zero-copy
 * offers) pointed at the stand-ins below, so its static functions (apply,
 * on_ctrl, drained) are driven one record, one message at a time, on one
 * thread, the way a lane's receiver and the control loop would. A new
 * call of core/apply.c into a lane or the session needs its stand-in here
 * (the lanes are NULL: fuzz-apply-corpus-replay crashes without one).
 *
 * Input: byte 0 picks the session (bits 0-1: regions 1..3, bit 2: zero
 * pages allowed, bit 3: XBZRLE allowed, bit 4: device state allowed, bit
 * 5: regions start zeroed, bit 6: 512-byte pages), byte 1 the data lanes
 * (1..4); then items, each a kind byte (its value / 4 picks the lane):
 *   kind % 4 == 0, 1  a page record: its 24-byte wire header
 *                     (tlm__page_hdr_decode), then its data
 *   kind % 4 == 2     a control message: u16 length, then the payload
 *   kind % 4 == 3     a short page record: u8 flags, u8 region, u16 index,
 *                     u8 epoch, u16 length, then the data
 * Processing stops at the first failure, as the destination does.
 *
 * Built with -fsanitize=fuzzer when -Dfuzz=true (clang); otherwise with a
 * main() that replays the corpus files given on the command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The session as core/apply.c sees it: the stand-ins below. */
#define tlm_session_cfg_get         fz_session_cfg_get
#define tlm_session_lanes           fz_session_lanes
#define tlm_session_lane            fz_session_lane
#define tlm_lane_register_region    fz_lane_register_region
#define tlm_lane_unregister_regions fz_lane_unregister_regions
#define tlm_lane_recv_pages         fz_lane_recv_pages
#define tlm__msg_recv               fz_msg_recv
#define tlm__seal_defer_macs        fz_seal_defer_macs
#define tlm__ka_init                fz_ka_init
#define tlm__ka_start               fz_ka_start
#define tlm__ka_destroy             fz_ka_destroy
#define tlm__ka_send                fz_ka_send
#define tlm_migrate_dest            fz_unused_migrate_dest
#define tlm__migrate_dest           fz_unused__migrate_dest

#include "../../core/apply.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tlm_session_cfg fz_cfg;
static unsigned fz_lanes;
static unsigned long fz_sent, fz_applied;

const struct tlm_session_cfg *fz_session_cfg_get(const struct tlm_session *s)
{
	(void)s;
	return &fz_cfg;
}

unsigned fz_session_lanes(const struct tlm_session *s)
{
	(void)s;
	return fz_lanes;
}

struct tlm_lane *fz_session_lane(struct tlm_session *s, unsigned i)
{
	(void)s; (void)i;
	return NULL;
}

int fz_lane_register_region(struct tlm_lane *l, unsigned region, void *base, size_t len,
			    unsigned how, int timeout_ms)
{
	(void)l; (void)region; (void)base; (void)len; (void)how; (void)timeout_ms;
	return -EOPNOTSUPP;
}

void fz_lane_unregister_regions(struct tlm_lane *l) { (void)l; }

void fz_seal_defer_macs(struct tlm_lane *l) { (void)l; }

int fz_lane_recv_pages(struct tlm_lane *l, const struct tlm_page_sink *sink, int timeout_ms)
{
	(void)l; (void)sink; (void)timeout_ms;
	return -EIO;
}

int fz_msg_recv(struct tlm_lane *l, uint8_t *type, void *buf, uint32_t max, uint32_t *len,
		int timeout_ms)
{
	(void)l; (void)type; (void)buf; (void)max; (void)len; (void)timeout_ms;
	return -EIO;
}

void fz_ka_init(struct tlm__ka *k, struct tlm_lane *lane, int timeout_ms)
{
	(void)lane; (void)timeout_ms;
	memset(k, 0, sizeof(*k));
}

int fz_ka_start(struct tlm__ka *k, void (*check)(void *), void (*fail)(void *, int), void *arg)
{
	(void)k; (void)check; (void)fail; (void)arg;
	return 0;
}

void fz_ka_destroy(struct tlm__ka *k) { (void)k; }

int fz_ka_send(struct tlm__ka *k, const uint8_t *msg, uint32_t len)
{
	(void)k;
	if (!len || tlm__cm_type(msg, len) < 0)
		abort();                  /* the destination sends only what it can encode */
	fz_sent++;
	return 0;
}

static void quiet(int level, const char *msg, void *arg) { (void)level; (void)msg; (void)arg; }

/* Regions between guard pages: a write outside faults. */
#define MAX_PAGES 8
static const uint64_t region_pages[3] = { MAX_PAGES, 3, 1 };
static uint8_t *guarded[3];
static size_t guarded_len[3];

static uint8_t *region_map(unsigned i, uint32_t page_size)
{
	size_t len = region_pages[i] * page_size;
	uint8_t *base, *lo;

	if (!guarded[i]) {
		/* Sized for 4 KiB pages, the largest used. */
		guarded_len[i] = region_pages[i] * 4096 + 2 * 4096;
		guarded[i] = mmap(NULL, guarded_len[i], PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (guarded[i] == MAP_FAILED)
			abort();
	}
	/* The region ends right at the last guard page; what lies between
	 * the first guard page and the region (512-byte pages) holds a
	 * canary, checked after each input. */
	base = guarded[i] + guarded_len[i] - 4096 - len;
	lo = guarded[i] + 4096;
	if (mprotect(guarded[i], guarded_len[i], PROT_NONE) ||
	    mprotect(lo, (size_t)(base + len - lo), PROT_READ | PROT_WRITE))
		abort();
	memset(lo, 0xa5, (size_t)(base - lo));
	memset(base, 0, len);
	return base;
}

static void canary_check(unsigned i, const uint8_t *base)
{
	for (const uint8_t *q = guarded[i] + 4096; q < base; q++)
		if (*q != 0xa5)
			abort();      /* written below the region */
}

static void run(const uint8_t *p, size_t n)
{
	uint8_t b0 = p[0], b1 = p[1];
	struct tlm_region regs[3];
	struct tlm_dest_stats st = { 0 };
	struct rx x[5] = { 0 };
	struct ctl k = { 0 };
	struct dst *d;
	size_t off = 2;
	unsigned nr = (b0 & 3) % 3 + 1, nl = b1 % 4 + 1;

	memset(&fz_cfg, 0, sizeof(fz_cfg));
	fz_cfg.page_size = b0 & 0x40 ? 512 : 4096;
	fz_cfg.n_regions = nr;
	fz_cfg.n_lanes = nl;
	fz_cfg.timeout_ms = 1;        /* a SYNC that waits gives up at once */
	fz_cfg.caps = (b0 & 4 ? TLM_CAP_ZERO_PAGE : 0) | (b0 & 8 ? TLM_CAP_XBZRLE : 0) |
		      (b0 & 0x10 ? TLM_CAP_DEVSTATE : 0);
	for (unsigned i = 1; i <= nl; i++)
		fz_cfg.lane_modes[i] = TLM_MODE_PAGES;
	fz_lanes = nl;
	for (unsigned i = 0; i < nr; i++) {
		regs[i].base = region_map(i, fz_cfg.page_size);
		regs[i].len = region_pages[i] * fz_cfg.page_size;
		regs[i].name = "r";
		fz_cfg.region_len[i] = regs[i].len;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->st = &st;
	d->zeroed = b0 & 0x20;
	if (dst_setup(d, regs, nr)) {
		dst_free(d, nr);
		return;
	}
	for (unsigned i = 1; i <= nl; i++) {
		x[i] = (struct rx){ .d = d, .lane = i };
		x[i].tmp = malloc(d->page_size);
	}
	while (off < n && !d->stop) {
		uint8_t kind = p[off++];
		struct rx *lane = &x[(kind >> 2) % nl + 1];
		struct tlm_page_rec rec;
		uint8_t hdr[TLM_PAGE_HDR];
		uint32_t len;
		int err = 0;

		switch (kind % 4) {
		case 0:
		case 1:
			if (n - off < TLM_PAGE_HDR) {
				off = n;
				break;
			}
			/* A PLACED record's frame is its header alone. */
			len = tlm__get16(p + off + 12) & TLM_PF_PLACED ? 0 : tlm__get32(p + off + 16);
			if (len > n - off - TLM_PAGE_HDR)
				len = (uint32_t)(n - off - TLM_PAGE_HDR);
			err = tlm__page_hdr_decode(p + off, TLM_PAGE_HDR + len, d->page_size, &rec);
			off += TLM_PAGE_HDR;
			if (!err) {
				rec.data = len ? p + off : NULL;
				off += len;
				err = apply(lane, &rec);
			}
			break;
		case 2:
			if (n - off < 2) {
				off = n;
				break;
			}
			len = tlm__get16(p + off);
			off += 2;
			if (len > n - off)
				len = (uint32_t)(n - off);
			if (len)
				on_ctrl(d, x, nl, p + off, len, &k);
			off += len;
			break;
		case 3:
			if (n - off < 7) {
				off = n;
				break;
			}
			memset(hdr, 0, sizeof(hdr));
			tlm__put64(hdr, tlm__get16(p + off + 2));         /* index */
			tlm__put32(hdr + 8, p[off + 4]);                  /* epoch */
			tlm__put16(hdr + 12, p[off]);                     /* flags */
			tlm__put16(hdr + 14, p[off + 1]);                 /* region */
			len = tlm__get16(p + off + 5);
			off += 7;
			if (len > n - off)
				len = (uint32_t)(n - off);
			tlm__put32(hdr + 16, len);
			err = tlm__page_hdr_decode(hdr, TLM_PAGE_HDR + len, d->page_size, &rec);
			if (!err) {
				rec.data = rec.len ? p + off : NULL;
				err = apply(lane, &rec);
			}
			off += len;
			break;
		}
		if (err)
			dst_fail(d, err, "record refused");
		else if (kind % 4 != 2)
			fz_applied++;
	}
	/* Stage 3 complete and every lane at LAST: the count check. */
	if (!d->stop && k.stage3 && k.devgot == k.devlen) {
		for (unsigned i = 1; i <= nl; i++)
			d->lanes_done += x[i].last;
		if (d->lanes_done == nl)
			drained(d, x, nl, &k);
	}
	if (k.devgot > k.devlen)
		abort();
#ifndef TLM_LIBFUZZER
	if (getenv("FUZZ_APPLY_WHY"))
		fprintf(stderr, "%s after %zu of %zu bytes\n", d->stop ? d->why : "no failure",
			off, n);
#endif
	for (unsigned i = 1; i <= nl; i++)
		free(x[i].tmp);
	free(k.dev);
	dst_free(d, nr);
	for (unsigned i = 0; i < nr; i++)
		canary_check(i, regs[i].base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;

	if (!init) {
		tlm_set_log_fn(quiet, NULL);
		init = true;
	}
	if (size >= 2)
		run(data, size);
	return 0;
}

#ifndef TLM_LIBFUZZER
#include "replay.h"

int main(int argc, char **argv)
{
	int n = tlm_fuzz_replay(argc, argv);

	if (n < 0)
		return 1;
	printf("fuzz_apply: %d inputs replayed, %lu records taken, %lu control answers\n",
	       n, fz_applied, fz_sent);
	return 0;
}
#endif
