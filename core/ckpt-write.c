/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint files: the writer (core/ckpt.h). PATH.tmp is prepared,
 * filled by the engine's destination through a mapping, then digested,
 * fsynced and renamed over PATH; ckpt.c's header at the top says how an
 * incremental checkpoint writes only the pages that changed.
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

/* ---- writer ---- */

struct tlm_ckpt_w {
	char *path, *tmp;
	int fd;
	struct tlm_ckpt_layout lay;
	struct place p;
	bool incremental;
	uint64_t epoch;
	uint32_t *table;         /* incremental: the previous checkpoint's */
	uint8_t *map;            /* [data_off, dev_off) of the file */
	size_t map_len;
	struct tlm_region reg[TLM_MAX_REGIONS];
};

static bool same_layout(const struct tlm_ckpt_layout *a, const struct tlm_ckpt_layout *b)
{
	if (a->page_size != b->page_size || a->n != b->n)
		return false;
	for (unsigned i = 0; i < a->n; i++)
		if (a->len[i] != b->len[i] || strcmp(a->name[i], b->name[i]))
			return false;
	return true;
}

/* PATH's data into the new file: a reflink, or a copy of its data stretches. */
static int clone_file(int from, int to, uint64_t size, struct tlm_ckpt_stats *st)
{
	uint64_t pos = 0, stop;

	if (ioctl(to, FICLONE, from) == 0) {
		st->reflinked = true;
		return 0;
	}
	while (!tlm__ckpt_next_data(from, &pos, size, &stop)) {
		while (pos < stop) {
			loff_t a = (loff_t)pos, b = (loff_t)pos;
			ssize_t n = copy_file_range(from, &a, to, &b, stop - pos, 0);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			pos += (uint64_t)n;
			st->copied_bytes += (uint64_t)n;
		}
	}
	return ftruncate(to, (off_t)size) ? -errno : 0;
}

static char *cat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

int tlm_ckpt_begin(const char *path, const struct tlm_ckpt_layout *lay,
		   struct tlm_ckpt_w **out, struct tlm_ckpt_stats *st)
{
	struct tlm_ckpt_w *w = calloc(1, sizeof(*w));
	struct tlm_ckpt_info old;
	char why[200];
	int err = 0, ofd = -1;

	memset(st, 0, sizeof(*st));
	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->lay = *lay;
	w->path = strdup(path);
	w->tmp = cat(path, ".tmp");
	if (!w->path || !w->tmp) {
		err = -ENOMEM;
		goto fail;
	}
	if (tlm__ckpt_place_of(lay, &w->p)) {
		snprintf(st->why, sizeof(st->why), "memory layout the format cannot hold");
		err = -EINVAL;
		goto fail;
	}
	/* A previous writer that died left its PATH.tmp: never valid, drop it. */
	if (unlink(w->tmp) && errno != ENOENT) {
		err = -errno;
		snprintf(st->why, sizeof(st->why), "cannot remove %s: %s", w->tmp, strerror(errno));
		goto fail;
	}
	ofd = open(path, O_RDONLY | O_CLOEXEC);
	if (ofd >= 0) {
		struct place op;

		if (!tlm__ckpt_check_fd(ofd, false, &old, &op, NULL, &w->table, NULL, why, sizeof(why)) &&
		    same_layout(&old.lay, lay)) {
			w->incremental = true;
			w->epoch = old.epoch + 1;
		} else {
			free(w->table);
			w->table = NULL;
		}
	}
	if (!w->incremental)
		w->epoch = 1;
	w->fd = open(w->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		err = -errno;
		snprintf(st->why, sizeof(st->why), "cannot create %s: %s", w->tmp, strerror(errno));
		goto fail;
	}
	if (w->incremental)
		err = clone_file(ofd, w->fd, old.file_bytes, st);
	if (!err && ftruncate(w->fd, (off_t)w->p.dev_off))
		err = -errno;
	if (err) {
		snprintf(st->why, sizeof(st->why), "cannot prepare %s: %s", w->tmp, tlm_strerror(err));
		goto fail;
	}
	w->map_len = w->p.dev_off - w->p.data_off;
	if (w->map_len) {
		w->map = mmap(NULL, w->map_len, PROT_READ | PROT_WRITE,
			      (w->incremental ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE, w->fd,
			      (off_t)w->p.data_off);
		if (w->map == MAP_FAILED) {
			w->map = NULL;
			err = -errno;
			snprintf(st->why, sizeof(st->why), "cannot map %s: %s", w->tmp, strerror(errno));
			goto fail;
		}
		/* No readahead: a fault then brings in one page, not a large
		 * folio, and a page written later dirties only itself, so the
		 * zero pages around it stay holes. */
		(void)madvise(w->map, w->map_len, MADV_RANDOM);
	}
	for (unsigned i = 0; i < lay->n; i++) {
		w->reg[i].base = w->map + (w->p.off[i] - w->p.data_off);
		w->reg[i].len = lay->len[i];
		w->reg[i].name = w->lay.name[i];
	}
	st->incremental = w->incremental;
	st->epoch = w->epoch;
	st->pages_total = w->p.pages;
	if (ofd >= 0)
		close(ofd);
	*out = w;
	return 0;
fail:
	if (ofd >= 0)
		close(ofd);
	tlm_ckpt_abort(w);
	return err;
}

void tlm_ckpt_regions(struct tlm_ckpt_w *w, const struct tlm_region **r, unsigned *n)
{
	*r = w->reg;
	*n = w->lay.n;
}

void tlm_ckpt_abort(struct tlm_ckpt_w *w)
{
	if (!w)
		return;
	if (w->map)
		munmap(w->map, w->map_len);
	if (w->fd >= 0) {
		close(w->fd);
		(void)unlink(w->tmp);
	}
	free(w->table);
	free(w->path);
	free(w->tmp);
	free(w);
}

/* New file: the mapping is the file. Flush it, then read each data
 * stretch once for the table; holes are zero pages. */
static int table_full(struct tlm_ckpt_w *w, uint32_t *t, struct tlm_ckpt_stats *st)
{
	uint32_t ps = w->lay.page_size, zc = tlm__ckpt_zero_crc(ps);

	if (w->map && msync(w->map, w->map_len, MS_SYNC))
		return -errno;
	if (fsync(w->fd))
		return -errno;
	for (uint64_t i = 0; i < w->p.pages; i++)
		t[i] = zc;
	for (unsigned r = 0; r < w->lay.n; r++) {
		uint64_t base = w->p.off[r], end = base + w->lay.len[r], pos = base, stop;
		uint32_t *rt = t + w->p.first_page[r];

		while (!tlm__ckpt_next_data(w->fd, &pos, end, &stop)) {
			pos -= (pos - base) % ps;
			for (; pos < stop; pos += ps) {
				uint64_t pg = (pos - base) / ps;

				rt[pg] = tlm_crc32c(0, w->reg[r].base + pg * ps, ps);
				st->pages_written++;
			}
		}
	}
	return 0;
}

/* Incremental: the pages the engine wrote are private copies now (present,
 * not file-backed, or swapped out); of those, the ones that differ from
 * the previous checkpoint's go to the file. Without /proc/self/pagemap
 * every page is compared. */
/* Page g (global: the regions follow one another) to the file if it
 * differs from the previous checkpoint's; a page now zero becomes a hole. */
static int write_if_changed(struct tlm_ckpt_w *w, uint64_t g, uint8_t *old, uint32_t *t,
			    struct tlm_ckpt_stats *st)
{
	uint32_t ps = w->lay.page_size;
	const uint8_t *page = w->map + g * ps;
	uint64_t file_off = w->p.data_off + g * ps;
	int err = tlm__ckpt_pread_all(w->fd, old, ps, file_off);

	if (err || !memcmp(old, page, ps))
		return err;
	if (!tlm__page_zero(page, ps) ||
	    fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)file_off, ps))
		err = tlm__ckpt_pwrite_all(w->fd, page, ps, file_off);
	t[g] = tlm_crc32c(0, page, ps);
	st->pages_written++;
	return err;
}

/* Incremental: the pages the engine wrote are private copies now (present,
 * not file-backed, or swapped out); of those, the ones that differ from
 * the previous checkpoint's go to the file. Without /proc/self/pagemap
 * every page is compared. */
static int table_incremental(struct tlm_ckpt_w *w, uint32_t *t, struct tlm_ckpt_stats *st)
{
	uint32_t ps = w->lay.page_size;
	uint64_t sys_ps = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t npg = (w->map_len + sys_ps - 1) / sys_ps, ent[512], next = 0;
	uint8_t *old = malloc(ps);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), err = 0;

	if (!old) {
		if (pm >= 0)
			close(pm);
		return -ENOMEM;
	}
	memcpy(t, w->table, w->p.pages * 4);
	for (uint64_t i = 0; i < npg && !err; i += 512) {
		uint64_t n = npg - i < 512 ? npg - i : 512;
		uint64_t vpn = ((uintptr_t)w->map) / sys_ps + i;
		bool all = pm < 0 ||
			   pread(pm, ent, n * 8, (off_t)(vpn * 8)) != (ssize_t)(n * 8);

		for (uint64_t k = 0; k < n && !err; k++) {
			uint64_t off = (i + k) * sys_ps, g, last;
			bool touched = all || ((ent[k] >> 63) & 1 && !((ent[k] >> 61) & 1)) ||
				       ((ent[k] >> 62) & 1);

			if (!touched)
				continue;
			/* Every page of ours this host page holds part of. */
			last = (off + sys_ps - 1) / ps;
			if (last >= w->p.pages)
				last = w->p.pages - 1;
			for (g = off / ps > next ? off / ps : next; g <= last && !err; g++)
				err = write_if_changed(w, g, old, t, st);
			next = last + 1;
		}
	}
	if (pm >= 0)
		close(pm);
	free(old);
	return err;
}

static int fsync_dir(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, err = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return err;
}

int tlm_ckpt_commit(struct tlm_ckpt_w *w, const void *devstate, size_t devlen,
		    struct tlm_ckpt_stats *st)
{
	uint8_t (*regsha)[32] = calloc(TLM_MAX_REGIONS, 32), devsha[32], *raw = NULL, *h = NULL;
	uint32_t *t = malloc(w->p.pages ? w->p.pages * 4 : 4), zc = tlm__ckpt_zero_crc(w->lay.page_size);
	const char *step = "the pages";
	uint64_t t0 = tlm__now_ns();
	struct stat sb;
	int err = regsha && t ? 0 : -ENOMEM;

	if (devlen > MAX_DEVSTATE)
		err = -EFBIG;
	if (!err)
		err = w->incremental ? table_incremental(w, t, st) : table_full(w, t, st);
	if (w->map) {
		munmap(w->map, w->map_len);
		w->map = NULL;
	}
	if (!err) {
		step = "the page table";
		raw = malloc(w->p.table_len ? w->p.table_len : 1);
		h = malloc(w->p.hdr_len);
		err = raw && h ? 0 : -ENOMEM;
	}
	for (uint64_t i = 0; !err && i < w->p.pages; i++) {
		tlm__put32(raw + 4 * i, t[i]);
		st->pages_data += t[i] != zc;
	}
	for (unsigned i = 0; !err && i < w->lay.n; i++)
		err = tlm__ckpt_sha256(raw + 4 * w->p.first_page[i], w->lay.len[i] / w->lay.page_size * 4,
			     regsha[i]);
	if (!err)
		err = tlm__ckpt_pwrite_all(w->fd, raw, w->p.table_len, w->p.table_off);
	if (!err) {
		step = "the device state";
		err = tlm__ckpt_sha256(devstate ? devstate : "", devlen, devsha);
	}
	if (!err && ftruncate(w->fd, (off_t)(w->p.dev_off + devlen)))
		err = -errno;
	if (!err && devlen)
		err = tlm__ckpt_pwrite_all(w->fd, devstate, devlen, w->p.dev_off);
	if (!err) {
		step = "the header";
		tlm__ckpt_encode_header(h, &w->lay, &w->p, w->epoch, devlen, devsha,
			      (const uint8_t (*)[32])regsha);
		err = tlm__ckpt_pwrite_all(w->fd, h, w->p.hdr_len, 0);
	}
	if (!err) {
		step = "fsync";
		err = fsync(w->fd) ? -errno : 0;
	}
	if (!err) {
		step = "the rename";
		err = rename(w->tmp, w->path) ? -errno : 0;
	}
	if (!err) {
		close(w->fd);
		w->fd = -1;      /* PATH.tmp is PATH now: abort must not unlink */
		(void)fsync_dir(w->path);
		if (!stat(w->path, &sb)) {
			st->file_bytes = (uint64_t)sb.st_size;
			st->disk_bytes = (uint64_t)sb.st_blocks * 512;
		}
		st->devstate_len = devlen;
	} else {
		snprintf(st->why, sizeof(st->why), "writing %s of %s: %s", step, w->tmp,
			 tlm_strerror(err));
	}
	st->commit_ms = (double)(tlm__now_ns() - t0) / 1e6;
	free(regsha);
	free(t);
	free(raw);
	free(h);
	tlm_ckpt_abort(w);
	return err;
}

int tlm_ckpt_receive(struct tlm_session *s, const char *path, struct tlm_ckpt_stats *st)
{
	const struct tlm_session_cfg *cfg = tlm_session_cfg_get(s);
	struct tlm_ckpt_layout lay = { .page_size = cfg->page_size, .n = cfg->n_regions };
	const struct tlm_region *reg;
	struct tlm_dest_stats ds;
	struct tlm_ckpt_w *w;
	void *dev = NULL;
	size_t devlen = 0;
	unsigned n;
	int err;

	for (unsigned i = 0; i < lay.n; i++) {
		lay.len[i] = cfg->region_len[i];
		snprintf(lay.name[i], sizeof(lay.name[i]), "%s",
			 cfg->region_name[i] ? cfg->region_name[i] : "");
	}
	err = tlm_ckpt_begin(path, &lay, &w, st);
	if (err)
		return err;
	tlm_ckpt_regions(w, &reg, &n);
	/* A new file is all holes: the destination need not read them. */
	err = tlm__migrate_dest(s, reg, n, st->incremental ? 0 : TLM__DEST_ZEROED, &dev, &devlen,
				&ds);
	if (err) {
		snprintf(st->why, sizeof(st->why), "the migration into the file failed: %s",
			 ds.why[0] ? ds.why : tlm_strerror(err));
		tlm_ckpt_abort(w);
		return err;
	}
	err = tlm_ckpt_commit(w, dev, devlen, st);
	free(dev);
	return err;
}
