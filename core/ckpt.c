/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint files: layout, header, checker and reader (core/ckpt.h; the
 * writer is core/ckpt-write.c; the format is in docs/checkpoint.md).
 *
 *   [header: header_len bytes, a multiple of the page size]
 *   [page table: one crc32c per page of every region, big-endian]
 *   [region 0 at a page-aligned offset] ... [region n-1]
 *   [device state at a page-aligned offset]
 *
 * Every page has one place, so a page the page saver sends again
 * overwrites its older copy and the file never grows past memory +
 * header + table + device state. Zero pages are never written: the file
 * is sparse. A region's digest is the SHA-256 of its part of the page
 * table; the header's crc32c covers the header; so one flipped byte
 * anywhere (header, table, page, device state) is found.
 *
 * Writing: PATH.tmp is prepared, filled by the engine's destination
 * through a mapping, then digested, fsynced and renamed over PATH. A new
 * file is mapped MAP_SHARED: the engine's writes are the file's. An
 * incremental checkpoint starts PATH.tmp as a copy of PATH (a reflink
 * where the file system has them) and maps it MAP_PRIVATE: the engine's
 * writes land in private copies of the pages, which /proc/self/pagemap
 * tells apart from the untouched file pages; only those whose content
 * differs from the previous checkpoint are written to the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "engine.h"

#include "ckpt-internal.h"


uint64_t tlm__ckpt_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int tlm__ckpt_place_of(const struct tlm_ckpt_layout *lay, struct place *p)
{
	uint32_t ps = lay->page_size;
	uint64_t at;

	if (ps < 512 || ps > (1u << 21) || (ps & (ps - 1)) || lay->n > TLM_MAX_REGIONS)
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	p->hdr_len = (uint32_t)tlm__ckpt_round_up(HDR_FIXED + REG_ENTRY * (uint64_t)lay->n, ps);
	for (unsigned i = 0; i < lay->n; i++) {
		if (lay->len[i] % ps || lay->len[i] > (1ull << 46))
			return -EINVAL;
		p->first_page[i] = p->pages;
		p->pages += lay->len[i] / ps;
	}
	p->table_off = p->hdr_len;
	p->table_len = 4 * p->pages;
	/* The regions are mapped from here: page aligned for the host too. */
	at = p->data_off = tlm__ckpt_round_up(p->table_off + p->table_len, ps > 4096 ? ps : 4096);
	for (unsigned i = 0; i < lay->n; i++) {
		p->off[i] = at;
		at += lay->len[i];
	}
	p->dev_off = at;
	return 0;
}

uint32_t tlm__ckpt_zero_crc(uint32_t ps)
{
	static _Thread_local uint32_t crc, for_ps;
	void *z;

	if (for_ps == ps)
		return crc;
	z = calloc(1, ps);
	if (!z)
		return 0;
	crc = tlm_crc32c(0, z, ps);
	for_ps = ps;
	free(z);
	return crc;
}

int tlm__ckpt_sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned int len = 32;

	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) && len == 32 ? 0 : -EIO;
}

int tlm__ckpt_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
	uint8_t *b = buf;

	while (n) {
		ssize_t r = pread(fd, b, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -TLM_EFRAME;
		b += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

int tlm__ckpt_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *b = buf;

	while (n) {
		ssize_t r = pwrite(fd, b, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		b += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* The next stretch of data at or after *pos below end: [*pos, *stop).
 * 0 when there is one, 1 when only holes remain. A file system without
 * SEEK_DATA reports everything as data. */
int tlm__ckpt_next_data(int fd, uint64_t *pos, uint64_t end, uint64_t *stop)
{
	off_t d, h;

	if (*pos >= end)
		return 1;
	d = lseek(fd, (off_t)*pos, SEEK_DATA);
	if (d < 0) {
		if (errno == ENXIO)
			return 1;
		*stop = end;
		return 0;
	}
	if ((uint64_t)d >= end)
		return 1;
	h = lseek(fd, d, SEEK_HOLE);
	*pos = (uint64_t)d;
	*stop = h < 0 || (uint64_t)h > end ? end : (uint64_t)h;
	return 0;
}

/* ---- header ---- */

void tlm__ckpt_encode_header(uint8_t *h, const struct tlm_ckpt_layout *lay,
			     const struct place *p, uint64_t epoch, uint64_t devlen,
			     const uint8_t devsha[32], const uint8_t (*regsha)[32])
{
	struct timespec ts;

	memset(h, 0, p->hdr_len);
	memcpy(h, MAGIC, 8);
	clock_gettime(CLOCK_REALTIME, &ts);
	tlm__put32(h + OFF_VERSION, TLM_CKPT_VERSION);
	tlm__put32(h + OFF_HDRLEN, p->hdr_len);
	tlm__put32(h + OFF_PAGESIZE, lay->page_size);
	tlm__put32(h + OFF_NREGIONS, lay->n);
	tlm__put64(h + OFF_EPOCH, epoch);
	tlm__put64(h + OFF_TIME, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	tlm__put64(h + OFF_FILELEN, p->dev_off + devlen);
	tlm__put64(h + OFF_TABLE, p->table_off);
	tlm__put64(h + OFF_TABLELEN, p->table_len);
	tlm__put64(h + OFF_DEVOFF, p->dev_off);
	tlm__put64(h + OFF_DEVLEN, devlen);
	memcpy(h + OFF_DEVSHA, devsha, 32);
	for (unsigned i = 0; i < lay->n; i++) {
		uint8_t *e = h + HDR_FIXED + REG_ENTRY * i;

		memcpy(e, lay->name[i], strnlen(lay->name[i], TLM_REGION_NAME_MAX));
		tlm__put64(e + RE_LEN, lay->len[i]);
		tlm__put64(e + RE_OFF, p->off[i]);
		memcpy(e + RE_SHA, regsha[i], 32);
	}
	tlm__put32(h + OFF_CRC, tlm_crc32c(0, h, p->hdr_len));
}

#define BAD(err_, ...) do { snprintf(why, wl, __VA_ARGS__); return (err_); } while (0)

/* Reads and checks the header: layout, placement, crc. *hdr is malloc'ed. */
static int read_header(int fd, uint64_t size, struct tlm_ckpt_info *info, struct place *p,
		       uint8_t **hdr, char *why, size_t wl)
{
	uint8_t fixed[HDR_FIXED], *h;
	uint32_t hl, crc;
	int err;

	*hdr = NULL;
	if (size < HDR_FIXED)
		BAD(-TLM_EFRAME, "truncated: %llu bytes, not even a header",
		    (unsigned long long)size);
	err = tlm__ckpt_pread_all(fd, fixed, HDR_FIXED, 0);
	if (err)
		BAD(err, "cannot read the header: %s", tlm_strerror(err));
	if (memcmp(fixed, MAGIC, 8))
		BAD(-TLM_EFRAME, "not a tlm checkpoint (no TLMCKPT magic), or its header is damaged");
	info->version = tlm__get32(fixed + OFF_VERSION);
	if (info->version != TLM_CKPT_VERSION)
		BAD(-TLM_EVERSION, "checkpoint format version %u; this tlm reads version %u",
		    info->version, TLM_CKPT_VERSION);
	hl = tlm__get32(fixed + OFF_HDRLEN);
	info->lay.page_size = tlm__get32(fixed + OFF_PAGESIZE);
	info->lay.n = tlm__get32(fixed + OFF_NREGIONS);
	if (info->lay.n > TLM_MAX_REGIONS || hl < HDR_FIXED + REG_ENTRY * info->lay.n ||
	    hl > HDR_FIXED + REG_ENTRY * TLM_MAX_REGIONS + (1u << 21))
		BAD(-TLM_EFRAME, "header damaged (%u regions in a %u-byte header)", info->lay.n, hl);
	if (size < hl)
		BAD(-TLM_EFRAME, "truncated: %llu bytes, the header alone has %u",
		    (unsigned long long)size, hl);
	h = malloc(hl);
	if (!h)
		return -ENOMEM;
	err = tlm__ckpt_pread_all(fd, h, hl, 0);
	if (err) {
		free(h);
		BAD(err, "cannot read the header: %s", tlm_strerror(err));
	}
	crc = tlm__get32(h + OFF_CRC);
	tlm__put32(h + OFF_CRC, 0);
	if (tlm_crc32c(0, h, hl) != crc) {
		free(h);
		BAD(-TLM_EFRAME, "header damaged (its crc32c does not match)");
	}
	tlm__put32(h + OFF_CRC, crc);
	info->epoch = tlm__get64(h + OFF_EPOCH);
	info->time_ns = tlm__get64(h + OFF_TIME);
	info->devstate_len = tlm__get64(h + OFF_DEVLEN);
	for (unsigned i = 0; i < info->lay.n; i++) {
		const uint8_t *e = h + HDR_FIXED + REG_ENTRY * i;

		memcpy(info->lay.name[i], e, TLM_REGION_NAME_MAX);
		info->lay.name[i][TLM_REGION_NAME_MAX] = 0;
		info->lay.len[i] = tlm__get64(e + RE_LEN);
	}
	/* The header must say exactly where the format puts things. */
	err = tlm__ckpt_place_of(&info->lay, p);
	if (!err && (p->hdr_len != hl || p->table_off != tlm__get64(h + OFF_TABLE) ||
		     p->table_len != tlm__get64(h + OFF_TABLELEN) ||
		     p->dev_off != tlm__get64(h + OFF_DEVOFF) || info->devstate_len > MAX_DEVSTATE ||
		     p->dev_off + info->devstate_len != tlm__get64(h + OFF_FILELEN)))
		err = -EINVAL;
	for (unsigned i = 0; !err && i < info->lay.n; i++)
		if (p->off[i] != tlm__get64(h + HDR_FIXED + REG_ENTRY * i + RE_OFF))
			err = -EINVAL;
	if (err) {
		free(h);
		BAD(-TLM_EFRAME, "header damaged (its layout is inconsistent)");
	}
	if (size < p->dev_off + info->devstate_len) {
		free(h);
		BAD(-TLM_EFRAME, "truncated: %llu bytes, the header says %llu",
		    (unsigned long long)size, (unsigned long long)(p->dev_off + info->devstate_len));
	}
	*hdr = h;
	return 0;
}

/* The page table, host order; each region's part checked against its digest. */
static int read_table(int fd, const uint8_t *h, const struct tlm_ckpt_info *info,
		      const struct place *p, uint32_t **out, char *why, size_t wl)
{
	uint8_t *raw = malloc(p->table_len ? p->table_len : 1), sha[32];
	uint32_t *t = malloc(p->pages ? p->pages * 4 : 4);
	int err = raw && t ? 0 : -ENOMEM;

	if (!err)
		err = tlm__ckpt_pread_all(fd, raw, p->table_len, p->table_off);
	for (unsigned i = 0; !err && i < info->lay.n; i++) {
		uint64_t np = info->lay.len[i] / info->lay.page_size;

		err = tlm__ckpt_sha256(raw + 4 * p->first_page[i], 4 * np, sha);
		if (!err && memcmp(sha, h + HDR_FIXED + REG_ENTRY * i + RE_SHA, 32)) {
			free(raw);
			free(t);
			BAD(-TLM_EFRAME, "region %u ('%s'): its page table does not match its digest"
			    " (damaged)", i, info->lay.name[i]);
		}
	}
	for (uint64_t i = 0; !err && i < p->pages; i++)
		t[i] = tlm__get32(raw + 4 * i);
	free(raw);
	/* The padding up to the first region is zero: no byte of the file
	 * goes unchecked. */
	if (!err && p->data_off > p->table_off + p->table_len) {
		size_t pad = (size_t)(p->data_off - p->table_off - p->table_len);
		uint8_t *z = calloc(1, pad), *b = malloc(pad);

		err = z && b ? tlm__ckpt_pread_all(fd, b, pad, p->table_off + p->table_len) : -ENOMEM;
		if (!err && memcmp(z, b, pad))
			err = -TLM_EFRAME;
		free(z);
		free(b);
		if (err == -TLM_EFRAME) {
			free(t);
			BAD(err, "the padding after the page table is damaged (not zero)");
		}
	}
	if (err) {
		free(t);
		BAD(err, "cannot read the page table: %s", tlm_strerror(err));
	}
	*out = t;
	return 0;
}

/* Every page of every region against the table. */
static int check_pages(int fd, const struct tlm_ckpt_info *info, const struct place *p,
		       const uint32_t *t, struct tlm_ckpt_info *out, char *why, size_t wl)
{
	uint32_t ps = info->lay.page_size, zc = tlm__ckpt_zero_crc(ps);
	size_t bufsz = (size_t)ps * 256;
	uint8_t *buf = malloc(bufsz);
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (unsigned r = 0; !err && r < info->lay.n; r++) {
		uint64_t base = p->off[r], end = base + info->lay.len[r], pos = base, stop;
		const uint32_t *rt = t + p->first_page[r];

		while (!err) {
			uint64_t hole_to = pos;

			if (tlm__ckpt_next_data(fd, &pos, end, &stop))
				pos = end;
			/* The hole before it: zero pages. */
			for (uint64_t a = hole_to - hole_to % ps; a < pos; a += ps)
				if (a >= base && rt[(a - base) / ps] != zc && out->bad_pages++ < 8)
					out->first_bad[out->bad_pages - 1] = p->first_page[r] + (a - base) / ps;
			if (pos >= end)
				break;
			pos -= (pos - base) % ps;
			stop = tlm__ckpt_round_up(stop, ps) < end ? tlm__ckpt_round_up(stop, ps) : end;
			while (pos < stop && !err) {
				size_t n = stop - pos < bufsz ? (size_t)(stop - pos) : bufsz;

				err = tlm__ckpt_pread_all(fd, buf, n, pos);
				for (size_t o = 0; !err && o < n; o += ps) {
					uint64_t pg = (pos + o - base) / ps;
					uint32_t c = tlm_crc32c(0, buf + o, ps);

					if (c != zc)
						out->pages_data++;
					if (c != rt[pg] && out->bad_pages++ < 8)
						out->first_bad[out->bad_pages - 1] = p->first_page[r] + pg;
				}
				pos += n;
			}
		}
	}
	free(buf);
	if (err)
		BAD(err, "cannot read the pages: %s", tlm_strerror(err));
	if (out->bad_pages) {
		uint64_t g = out->first_bad[0];
		unsigned r = 0;

		while (r + 1 < info->lay.n && g >= p->first_page[r + 1])
			r++;
		BAD(-TLM_EFRAME, "%llu damaged page(s): the first is page %llu of region %u ('%s')",
		    (unsigned long long)out->bad_pages, (unsigned long long)(g - p->first_page[r]),
		    r, info->lay.name[r]);
	}
	return 0;
}

static int check_devstate(int fd, const uint8_t *h, const struct place *p, uint64_t len,
			  uint8_t **out, char *why, size_t wl)
{
	uint8_t *d = malloc(len ? len : 1), sha[32];
	int err = d ? tlm__ckpt_pread_all(fd, d, len, p->dev_off) : -ENOMEM;

	if (!err)
		err = tlm__ckpt_sha256(d, len, sha);
	if (err) {
		free(d);
		BAD(err, "cannot read the device state: %s", tlm_strerror(err));
	}
	if (memcmp(sha, h + OFF_DEVSHA, 32)) {
		free(d);
		BAD(-TLM_EFRAME, "the device state does not match its digest (damaged)");
	}
	if (out)
		*out = d;
	else
		free(d);
	return 0;
}

/* Check an open file; on success the header, the table and (want_dev)
 * the device state are handed back. */
int tlm__ckpt_check_fd(int fd, bool pages, struct tlm_ckpt_info *info, struct place *p,
		       uint8_t **hdr, uint32_t **table, uint8_t **dev, char *why, size_t wl)
{
	struct stat sb;
	uint8_t *h = NULL, *d = NULL;
	uint32_t *t = NULL;
	int err;

	memset(info, 0, sizeof(*info));
	if (fstat(fd, &sb))
		BAD(-errno, "cannot stat: %s", strerror(errno));
	info->file_bytes = (uint64_t)sb.st_size;
	info->disk_bytes = (uint64_t)sb.st_blocks * 512;
	err = read_header(fd, (uint64_t)sb.st_size, info, p, &h, why, wl);
	if (!err)
		err = read_table(fd, h, info, p, &t, why, wl);
	if (!err)
		err = check_devstate(fd, h, p, info->devstate_len, dev ? &d : NULL, why, wl);
	if (!err && pages)
		err = check_pages(fd, info, p, t, info, why, wl);
	if (err || !hdr)
		free(h);
	else
		*hdr = h;
	if (err || !table)
		free(t);
	else
		*table = t;
	if (err)
		free(d);
	else if (dev)
		*dev = d;
	return err;
}

int tlm_ckpt_check(const char *path, bool pages, struct tlm_ckpt_info *info, char *why,
		   size_t wl)
{
	struct place p;
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0) {
		err = -errno;
		memset(info, 0, sizeof(*info));
		BAD(err, "cannot open %s: %s", path, strerror(-err));
	}
	err = tlm__ckpt_check_fd(fd, pages, info, &p, NULL, NULL, NULL, why, wl);
	close(fd);
	return err;
}

/* ---- reader ---- */

struct tlm_ckpt_r {
	struct tlm_ckpt_info info;
	struct place p;
	uint8_t *map;
	size_t map_len;
	uint8_t *dev;
	struct tlm_region reg[TLM_MAX_REGIONS];
	struct tlm_memsrc ms;
};

static int r_regions(void *ctx, const struct tlm_region **out, unsigned *n)
{
	struct tlm_ckpt_r *r = ctx;

	*out = r->reg;
	*n = r->info.lay.n;
	return 0;
}

static int r_nothing(void *ctx)
{
	(void)ctx;
	return 0;
}

static int r_get_dirty(void *ctx, unsigned region, uint64_t *bitmap)
{
	(void)ctx;
	(void)region;
	(void)bitmap;
	return 0;        /* a file is never written while it is sent */
}

static int r_device_state(void *ctx, const void **buf, size_t *len)
{
	struct tlm_ckpt_r *r = ctx;

	*buf = r->dev;
	*len = r->info.devstate_len;
	return 0;
}

static const struct tlm_memsrc_ops r_ops = {
	.regions = r_regions,
	.start_tracking = r_nothing,
	.get_dirty = r_get_dirty,
	.stop_tracking = r_nothing,
	.pause = r_nothing,
	.resume = r_nothing,
	.device_state = r_device_state,
};

/* The regions for reading: zero memory with the file's data stretches
 * mapped over it, so a hole reads as the zero page instead of filling the
 * page cache with zeros (a mostly-zero file is sent at the speed of its
 * data). A file in more stretches than that is worth is mapped whole. */
static int map_data(int fd, const struct place *p, size_t len, uint8_t **out)
{
	uint64_t pos = p->data_off, stop, end = p->dev_off, n = 0;
	uint8_t *m;

	while (!tlm__ckpt_next_data(fd, &pos, end, &stop) && n <= 4096) {
		n++;
		pos = stop;
	}
	if (n > 4096) {
		m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, fd, (off_t)p->data_off);
		if (m == MAP_FAILED)
			return -errno;
		(void)madvise(m, len, MADV_SEQUENTIAL);
		*out = m;
		return 0;
	}
	m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	pos = p->data_off;
	while (!tlm__ckpt_next_data(fd, &pos, end, &stop)) {
		uint64_t a = pos - (pos - p->data_off) % 4096;
		uint64_t b = tlm__ckpt_round_up(stop, 4096) < end ? tlm__ckpt_round_up(stop, 4096) : end;
		void *at = m + (a - p->data_off);

		if (mmap(at, b - a, PROT_READ, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd,
			 (off_t)a) == MAP_FAILED) {
			int err = -errno;

			munmap(m, len);
			return err;
		}
		(void)madvise(at, b - a, MADV_SEQUENTIAL);
		pos = b;
	}
	*out = m;
	return 0;
}

int tlm_ckpt_open(const char *path, struct tlm_ckpt_r **out, char *why, size_t wl)
{
	struct tlm_ckpt_r *r = calloc(1, sizeof(*r));
	int fd, err;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		free(r);
		BAD(err, "cannot open %s: %s", path, strerror(-err));
	}
	err = tlm__ckpt_check_fd(fd, true, &r->info, &r->p, NULL, NULL, &r->dev, why, wl);
	r->map_len = r->p.dev_off - r->p.data_off;
	if (!err && r->map_len) {
		err = map_data(fd, &r->p, r->map_len, &r->map);
		if (err)
			snprintf(why, wl, "cannot map %s: %s", path, strerror(-err));
	}
	close(fd);
	if (err) {
		free(r->dev);
		free(r);
		return err;
	}
	for (unsigned i = 0; i < r->info.lay.n; i++) {
		r->reg[i].base = r->map + (r->p.off[i] - r->p.data_off);
		r->reg[i].len = r->info.lay.len[i];
		r->reg[i].name = r->info.lay.name[i];
	}
	r->ms.ops = &r_ops;
	r->ms.ctx = r;
	r->ms.page_size = r->info.lay.page_size;
	*out = r;
	return 0;
}

const struct tlm_ckpt_info *tlm_ckpt_r_info(const struct tlm_ckpt_r *r)
{
	return &r->info;
}

void tlm_ckpt_r_regions(const struct tlm_ckpt_r *r, const struct tlm_region **reg, unsigned *n)
{
	*reg = r->reg;
	*n = r->info.lay.n;
}

struct tlm_memsrc *tlm_ckpt_memsrc(struct tlm_ckpt_r *r)
{
	return &r->ms;
}

void tlm_ckpt_close(struct tlm_ckpt_r *r)
{
	if (!r)
		return;
	if (r->map)
		munmap(r->map, r->map_len);
	free(r->dev);
	free(r);
}
