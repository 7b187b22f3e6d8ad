/* SPDX-License-Identifier: MIT */
/*
 * The check of `tlm bench migrate` (tlm-bench.h): the destination's end of
 * the run (accept, migrate into fresh memory, then send a SHA-256 per
 * region and a crc32c per page of what it holds, and its figures, on the
 * control lane), and the digests the source compares with its own memory
 * at the pause.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bench-internal.h"
#include "tlm/engine.h"

int tlm_bench_digest(const struct tlm_region *r, unsigned n, uint32_t ps,
		     struct tlm_bench_digest *d)
{
	memset(d, 0, sizeof(*d));
	d->n = n;
	for (unsigned i = 0; i < n; i++) {
		unsigned int len = 32;
		d->pages[i] = r[i].len / ps;
		d->crc[i] = malloc(d->pages[i] * sizeof(uint32_t));
		if (!d->crc[i])
			return -ENOMEM;
		for (uint64_t p = 0; p < d->pages[i]; p++)
			d->crc[i][p] = tlm_crc32c(0, (const uint8_t *)r[i].base + p * ps, ps);
		if (!EVP_Digest(r[i].base, r[i].len, d->sha[i], &len, EVP_sha256(), NULL))
			return -EIO;
	}
	return 0;
}

void tlm_bench_digest_free(struct tlm_bench_digest *d)
{
	for (unsigned i = 0; i < d->n; i++)
		free(d->crc[i]);
}

static int write_all(struct tlm_lane *l, const void *p, size_t n)
{
	ssize_t r = tlm_lane_write(l, p, n);
	return r < 0 ? (int)r : 0;
}

int tlm_bench_read_all(struct tlm_lane *l, void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = tlm_lane_read(l, b, n, 60000);
		if (r <= 0)
			return r ? (int)r : -TLM_EPEERCLOSED;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int send_digest(struct tlm_lane *l, const struct tlm_bench_digest *d)
{
	uint8_t ok = 1;
	int err = write_all(l, &ok, 1);
	for (unsigned i = 0; !err && i < d->n; i++) {
		err = write_all(l, d->sha[i], 32);
		if (!err)
			err = write_all(l, d->crc[i], d->pages[i] * sizeof(uint32_t));
	}
	return err ? err : tlm_lane_flush(l);
}

int tlm_bench_migrate_dest(struct tlm_listener *li, bool dest_nonzero, bool quiet)
{
	struct tlm_region regs[TLM_MAX_REGIONS];
	struct tlm_dest_stats ds;
	const struct tlm_session_cfg *cfg;
	struct tlm_session *s;
	struct tlm_bench_digest d;
	int err;

	err = tlm_accept(li, 120000, &s);
	if (err) {
		tlm_bench_err("destination: no session: %s", tlm_strerror(err));
		return 1;
	}
	cfg = tlm_session_cfg_get(s);
	{
		/* The peer says how much memory to map: never more than this
		 * host has (an 8 TiB region was mapped and walked), refused
		 * before anything is mapped. */
		long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
		uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0, total = 0;

		for (unsigned i = 0; i < cfg->n_regions; i++)
			total = cfg->region_len[i] > UINT64_MAX - total ? UINT64_MAX
									: total + cfg->region_len[i];
		if (ram && total > ram) {
			tlm_bench_err("destination: the source announces %llu MiB of memory, this "
				      "host has %llu MiB of RAM; refused",
				      (unsigned long long)(total >> 20), (unsigned long long)(ram >> 20));
			tlm_session_close(s);
			return 1;
		}
	}
	for (unsigned i = 0; i < cfg->n_regions; i++) {
		regs[i].len = cfg->region_len[i];
		regs[i].name = "ram";
		regs[i].base = mmap(NULL, regs[i].len, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (regs[i].base == MAP_FAILED) {
			tlm_bench_err("destination: cannot map %zu bytes", regs[i].len);
			tlm_session_close(s);
			return 1;
		}
		if (dest_nonzero)
			memset(regs[i].base, 0xa5, regs[i].len);
	}
	err = tlm_migrate_dest(s, regs, cfg->n_regions, NULL, NULL, &ds);
	if (err) {
		if (!quiet)
			tlm_bench_err("destination: migration failed: %s (%s)", ds.why, tlm_strerror(err));
		tlm_session_close(s);
		return 1;
	}
	err = tlm_bench_digest(regs, cfg->n_regions, cfg->page_size, &d);
	if (!err)
		err = send_digest(tlm_session_lane(s, 0), &d);
	if (!err) {
		uint64_t st[8] = { ds.pages_applied, ds.pages_stale, tlm_bench_peak_rss(),
				   ds.pages_placed, ds.register_ms, ds.pages_zero_kept,
				   ds.backlog_records, ds.pages_placed_encrypted };
		err = write_all(tlm_session_lane(s, 0), st, sizeof(st));
		if (!err)
			err = tlm_lane_flush(tlm_session_lane(s, 0));
		/* Wait for the source to read it all before closing. */
		if (!err) {
			uint8_t b;
			(void)tlm_lane_read(tlm_session_lane(s, 0), &b, 1, 60000);
		}
	}
	tlm_bench_digest_free(&d);
	tlm_session_close(s);
	return err ? 1 : 0;
}

int tlm_bench_digest_recv(struct tlm_lane *l, const struct tlm_bench_digest *mine, uint8_t *ok,
			  struct tlm_bench_digest *theirs)
{
	int err = tlm_bench_read_all(l, ok, 1);

	theirs->n = mine->n;
	for (unsigned i = 0; !err && i < mine->n; i++) {
		theirs->pages[i] = mine->pages[i];
		theirs->crc[i] = malloc(mine->pages[i] * 4);
		err = theirs->crc[i] ? tlm_bench_read_all(l, theirs->sha[i], 32) : -ENOMEM;
		if (!err)
			err = tlm_bench_read_all(l, theirs->crc[i], mine->pages[i] * 4);
	}
	return err;
}
