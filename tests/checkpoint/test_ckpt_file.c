/* SPDX-License-Identifier: MIT */
/*
 * The checkpoint file on its own (core/ckpt.c), without the engine: a small
 * file (512-byte pages, two regions, a device state) written through the
 * writer's mapping and committed must check valid and read back equal;
 * then every single byte of it flipped, and the file cut at every length,
 * must be refused (so no byte goes unchecked); another format version is
 * refused as such; an incremental checkpoint writes exactly the pages that
 * changed, and a hole again for a page that became zero; an aborted one
 * leaves the previous file as it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "ckpt.h"

#define PS 512

static char dir[64], path[128], bad[128];

static void cleanup(void)
{
	char tmp[160];

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	unlink(path);
	unlink(bad);
	rmdir(dir);
}

static uint8_t *slurp(const char *p, size_t *n)
{
	struct stat sb;
	uint8_t *b;
	int fd = open(p, O_RDONLY);

	CHECK(fd >= 0 && !fstat(fd, &sb));
	*n = (size_t)sb.st_size;
	b = malloc(*n + 1);
	CHECK(b && read(fd, b, *n) == (ssize_t)*n);
	close(fd);
	return b;
}

/* A new file each time: ext4 flushes a file rewritten through O_TRUNC
 * when it is closed, which made this test wait on the disk. */
static void spit(const char *p, const uint8_t *b, size_t n)
{
	int fd;

	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);

	CHECK(fd >= 0 && write(fd, b, n) == (ssize_t)n);
	close(fd);
}

static const struct tlm_ckpt_layout lay = {
	.page_size = PS, .n = 2, .len = { 4 * PS, 3 * PS }, .name = { "ram", "rom" },
};

/* Writes a checkpoint whose page g (global) holds byte seed + g, except
 * the pages in zero_mask, which stay zero. */
static void write_ckpt(unsigned seed, unsigned zero_mask, const char *dev,
		       struct tlm_ckpt_stats *st)
{
	struct tlm_ckpt_w *w;
	const struct tlm_region *r;
	unsigned n, g = 0;

	CHECK_OK(tlm_ckpt_begin(path, &lay, &w, st));
	tlm_ckpt_regions(w, &r, &n);
	CHECK(n == 2 && r[0].len == 4 * PS && r[1].len == 3 * PS);
	for (unsigned i = 0; i < n; i++)
		for (size_t p = 0; p < r[i].len / PS; p++, g++) {
			uint8_t *page = (uint8_t *)r[i].base + p * PS;

			if (zero_mask & (1u << g))
				memset(page, 0, PS);   /* what apply does to a page that must be zero */
			else
				memset(page, (int)(seed + g), PS);
		}
	CHECK_OK(tlm_ckpt_commit(w, dev, strlen(dev), st));
}

static void expect_content(unsigned seed, unsigned zero_mask, const char *dev)
{
	struct tlm_ckpt_r *rd;
	const struct tlm_region *r;
	const void *d;
	size_t dl;
	unsigned n, g = 0;
	char why[200];

	CHECK_OK(tlm_ckpt_open(path, &rd, why, sizeof(why)));
	tlm_ckpt_r_regions(rd, &r, &n);
	CHECK(n == 2 && !strcmp(r[0].name, "ram") && !strcmp(r[1].name, "rom"));
	for (unsigned i = 0; i < n; i++)
		for (size_t p = 0; p < r[i].len / PS; p++, g++) {
			const uint8_t *page = (const uint8_t *)r[i].base + p * PS;
			uint8_t want = (zero_mask & (1u << g)) ? 0 : (uint8_t)(seed + g);

			for (unsigned k = 0; k < PS; k++)
				CHECK(page[k] == want, "page %u byte %u: %u, want %u", g, k, page[k], want);
		}
	CHECK_OK(tlm_ckpt_memsrc(rd)->ops->device_state(tlm_ckpt_memsrc(rd)->ctx, &d, &dl));
	CHECK(dl == strlen(dev) && !memcmp(d, dev, dl));
	tlm_ckpt_close(rd);
}

int main(void)
{
	struct tlm_ckpt_stats st;
	struct tlm_ckpt_info in;
	struct tlm_ckpt_w *w;
	uint8_t *img, *cp;
	size_t n;
	char why[200];
	int err;

	snprintf(dir, sizeof(dir), "/tmp/tlm-ckpt-unit-XXXXXX");
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	atexit(cleanup);

	/* A new file: every page written, nothing incremental. */
	write_ckpt(1, 0, "device-state", &st);
	CHECK(!st.incremental && st.epoch == 1 && st.pages_total == 7 && st.pages_written == 7 &&
	      st.pages_data == 7, "new file: incremental %d epoch %llu written %llu",
	      st.incremental, (unsigned long long)st.epoch, (unsigned long long)st.pages_written);
	CHECK_OK(tlm_ckpt_check(path, true, &in, why, sizeof(why)));
	CHECK(in.epoch == 1 && in.pages_data == 7 && in.devstate_len == 12 && in.lay.n == 2);
	expect_content(1, 0, "device-state");

	/* Every byte flipped, one at a time, is found. */
	img = slurp(path, &n);
	cp = malloc(n);
	CHECK(cp);
	for (size_t i = 0; i < n; i++) {
		memcpy(cp, img, n);
		cp[i] ^= 0x01;
		spit(bad, cp, n);
		err = tlm_ckpt_check(bad, true, &in, why, sizeof(why));
		CHECK(err < 0, "byte %zu of %zu flipped, the file still checks valid", i, n);
	}
	/* ... and every truncation. */
	for (size_t len = 0; len < n; len++) {
		spit(bad, img, len);
		err = tlm_ckpt_check(bad, true, &in, why, sizeof(why));
		CHECK(err == -TLM_EFRAME && strstr(why, "truncated"),
		      "cut at %zu of %zu: %d %s", len, n, err, why);
	}
	/* Another version is refused as such, before its crc is looked at. */
	memcpy(cp, img, n);
	cp[11] = 2;
	spit(bad, cp, n);
	err = tlm_ckpt_check(bad, true, &in, why, sizeof(why));
	CHECK(err == -TLM_EVERSION && strstr(why, "version 2"), "%d %s", err, why);

	/* Incremental: pages 2 and 5 change, page 6 becomes zero. */
	write_ckpt(1, 1u << 6, "device-state", &st);
	CHECK(st.incremental && st.epoch == 2 && st.pages_written == 1,
	      "only page 6 changed: incremental %d epoch %llu written %llu", st.incremental,
	      (unsigned long long)st.epoch, (unsigned long long)st.pages_written);
	{
		struct tlm_ckpt_w *w2;
		const struct tlm_region *r;
		unsigned nr;

		CHECK_OK(tlm_ckpt_begin(path, &lay, &w2, &st));
		tlm_ckpt_regions(w2, &r, &nr);
		memset((uint8_t *)r[0].base + 2 * PS, 0x77, PS);
		memset((uint8_t *)r[1].base + 1 * PS, 0x55, PS);
		/* Rewritten with the same content: not a change. */
		memset((uint8_t *)r[0].base + 3 * PS, 1 + 3, PS);
		CHECK_OK(tlm_ckpt_commit(w2, "dev2", 4, &st));
		CHECK(st.incremental && st.epoch == 3 && st.pages_written == 2 && st.pages_data == 6,
		      "two pages changed: written %llu, data %llu",
		      (unsigned long long)st.pages_written, (unsigned long long)st.pages_data);
		free(img);
		CHECK_OK(tlm_ckpt_check(path, true, &in, why, sizeof(why)));
		CHECK(in.epoch == 3 && in.pages_data == 6 && in.devstate_len == 4);
	}

	/* An aborted checkpoint leaves the file as it was. */
	img = slurp(path, &n);
	CHECK_OK(tlm_ckpt_begin(path, &lay, &w, &st));
	{
		const struct tlm_region *r;
		unsigned nr;

		tlm_ckpt_regions(w, &r, &nr);
		memset(r[0].base, 0x99, r[0].len);
	}
	tlm_ckpt_abort(w);
	{
		size_t n2;
		uint8_t *again = slurp(path, &n2);
		char tmp[160];

		CHECK(n2 == n && !memcmp(again, img, n), "the file changed under an aborted checkpoint");
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		CHECK(access(tmp, F_OK) != 0, "the aborted checkpoint left its .tmp");
		free(again);
	}
	CHECK_OK(tlm_ckpt_check(path, true, &in, why, sizeof(why)));
	CHECK(in.epoch == 3);
	/* A different layout is a new file, not an increment. */
	{
		struct tlm_ckpt_layout l2 = lay;

		l2.len[1] = 2 * PS;
		CHECK_OK(tlm_ckpt_begin(path, &l2, &w, &st));
		CHECK(!st.incremental && st.epoch == 1);
		tlm_ckpt_abort(w);
	}
	free(img);
	free(cp);
	printf("checkpoint file: %zu-byte image, every byte flip and truncation refused\n", n);
	return 0;
}
