/* SPDX-License-Identifier: MIT */
/*
 * The in-process memory source: regions mmap'ed here, written by workload
 * threads, with one of two dirty-page trackers.
 *
 * pagemap-scan (Linux 6.7+): the regions are registered with a userfaultfd
 *   in asynchronous write-protect mode. A write to a protected page does not
 *   stop the writer: the kernel resolves the fault itself by clearing the
 *   pte's uffd-wp bit. PAGEMAP_SCAN on /proc/self/pagemap with
 *   PM_SCAN_WP_MATCHING then reports every pte without the bit ("written")
 *   and sets it again, under the page-table lock, pte by pte. A write either
 *   reached the pte before the scan did (the page is reported, and the
 *   caller reads it afterwards) or faults after it (the page is written
 *   again and goes into the next scan). No user-space bitmap at all.
 *
 * mprotect: the regions are made read-only; the process-wide SIGSEGV
 *   handler makes the faulting page writable and sets its bit in the
 *   region's bitmap. get_dirty exchanges the bitmap words with 0 and then
 *   re-protects the region. Why no write is lost is argued at get_dirty.
 *   Only user-space writes are caught: a syscall writing into a protected
 *   page gets EFAULT instead of a fault we can see.
 *
 * Both: regions are anonymous private mappings without transparent huge
 * pages, so tracking granularity is the 4 KiB page.
 *
 * Locking: m->lock serializes start_tracking, stop_tracking and get_dirty of
 * one source. The SIGSEGV handler takes no lock: it finds regions through
 * the slot table with atomic loads only. The pause gate has its own mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "memsrc-internal.h"
#include "tlm-internal.h"
#include "tlm/memsrc.h"

/*
 * Debian 12's kernel headers predate asynchronous write protection and
 * PAGEMAP_SCAN; the kernel decides at run time. Values are upstream's
 * (include/uapi/linux/userfaultfd.h and fs.h, 6.7). The structs carry our
 * own names so newer headers that declare them cannot clash.
 */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

struct pm_region {          /* struct page_region */
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

struct pm_scan {            /* struct pm_scan_arg */
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};
_Static_assert(sizeof(struct pm_region) == 24, "page_region layout");
_Static_assert(sizeof(struct pm_scan) == 96, "pm_scan_arg layout");

#define TLM_PAGEMAP_SCAN        _IOWR('f', 16, struct pm_scan)
#define TLM_PAGE_IS_WRITTEN     (1u << 1)
#define TLM_PM_SCAN_WP_MATCHING (1u << 0)
#define TLM_PM_SCAN_CHECK_WPASYNC (1u << 1)

#define SCAN_VEC_LEN 512

struct lregion {
	size_t npages;
	size_t nwords;
	_Atomic uint64_t *bm;   /* mprotect: pages dirtied since last get_dirty */
	int slot;               /* mprotect: index in the handler's slot table */
};

struct tlm_local {
	struct tlm_memsrc src;
	enum tlm_tracker tracker;
	unsigned n;
	struct tlm_region *regs;    /* contiguous: regions() hands it out */
	struct lregion *lr;
	size_t page_size;

	pthread_mutex_t lock;
	bool tracking;
	int uffd;                   /* pagemap-scan */
	int pagemap_fd;
	struct pm_region *vec;      /* pagemap-scan output, SCAN_VEC_LEN long */

	/* Pause gate; see tlm__local_gate_enter. */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_go;     /* writers wait here while paused */
	pthread_cond_t gate_idle;   /* pause() waits here for inflight == 0 */
	atomic_bool paused;
	_Alignas(64) atomic_long inflight;
};

/* ---------------------------------------------------------------------- */
/* bitmap helpers */

/* Sets bits [first, first+count) in a plain bitmap. */
static void bits_set(uint64_t *bm, size_t first, size_t count)
{
	while (count > 0) {
		size_t w = first / 64, b = first % 64;
		size_t k = 64 - b < count ? 64 - b : count;
		uint64_t mask = k == 64 ? ~0ull : ((1ull << k) - 1) << b;

		bm[w] |= mask;
		first += k;
		count -= k;
	}
}

/* ---------------------------------------------------------------------- */
/* userfaultfd + PAGEMAP_SCAN */

/* A userfaultfd negotiated for async write protection of unpopulated
 * anonymous memory, or a negative errno. Falls back to user-mode-only
 * handling when vm.unprivileged_userfaultfd=0 refuses us (async WP faults
 * are resolved in the kernel, so user-mode-only loses nothing). */
static int uffd_open(void)
{
	const uint64_t need = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
	struct uffdio_api api = { .api = UFFD_API, .features = need };
	int fd, err;

	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 && (errno == EPERM || errno == EACCES))
		fd = (int)syscall(SYS_userfaultfd,
				  O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	/* Kernels that do not know a requested feature fail with EINVAL. */
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		err = -errno;
		goto fail;
	}
	if ((api.features & need) != need ||
	    !(api.ioctls & (1ull << _UFFDIO_REGISTER))) {
		err = -EOPNOTSUPP;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return err;
}

static int uffd_register(int uffd, void *base, size_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	/* With WP_UNPOPULATED this also plants markers in empty ptes, so a
	 * first write to a never-touched page counts as a write. */
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		int err = -errno;
		struct uffdio_range r = reg.range;

		ioctl(uffd, UFFDIO_UNREGISTER, &r);
		return err;
	}
	return 0;
}

static int uffd_unregister(int uffd, void *base, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)base, .len = len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/* Reports written pages of [base, base+len) into bitmap (page 0 = base)
 * and write-protects them again, in one atomic step per pte. Returns the
 * number of pages reported or a negative errno. */
static long pm_scan_clear(int pagemap_fd, struct pm_region *vec, char *base,
			  size_t len, size_t page_size, uint64_t *bitmap)
{
	uint64_t end = (uintptr_t)base + len;
	struct pm_scan arg = {
		.size = sizeof(arg),
		.flags = TLM_PM_SCAN_WP_MATCHING | TLM_PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)base,
		.end = end,
		.vec = (uintptr_t)vec,
		.vec_len = SCAN_VEC_LEN,
		.category_mask = TLM_PAGE_IS_WRITTEN,
		.return_mask = TLM_PAGE_IS_WRITTEN,
	};
	long count = 0;

	for (;;) {
		int ret = ioctl(pagemap_fd, TLM_PAGEMAP_SCAN, &arg);

		if (ret < 0)
			return -errno;
		for (int i = 0; i < ret; i++) {
			size_t first = (vec[i].start - (uintptr_t)base) / page_size;
			size_t pages = (vec[i].end - vec[i].start) / page_size;

			bits_set(bitmap, first, pages);
			count += (long)pages;
		}
		/* A full vec stops the walk early; only what was reported was
		 * re-protected, so resuming at walk_end loses nothing. */
		if (arg.walk_end >= end)
			break;
		if (arg.walk_end <= arg.start)
			return -EIO;
		arg.start = arg.walk_end;
	}
	return count;
}

/* The probe: a never-touched page and a populated page, both written after
 * protection, must come back exactly, and a second scan must be empty. */
static int probe_pagemap_scan(void)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = 8 * ps;
	struct pm_region vec[16];
	uint64_t bm[1] = { 0 };
	int uffd, pfd, ok = 0;
	char *p;

	uffd = uffd_open();
	if (uffd < 0) {
		tlm__dbg("memsrc: userfaultfd async write-protect unavailable: %s",
			 tlm_strerror(uffd));
		return 0;
	}
	pfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		goto out_uffd;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		goto out_pfd;
	madvise(p, len, MADV_NOHUGEPAGE);
	p[1 * ps] = 1;                       /* populated before protection */
	if (uffd_register(uffd, p, len) < 0)
		goto out_map;
	{
		struct pm_scan arg = {
			.size = sizeof(arg),
			.flags = TLM_PM_SCAN_WP_MATCHING | TLM_PM_SCAN_CHECK_WPASYNC,
			.start = (uintptr_t)p, .end = (uintptr_t)p + len,
			.vec = (uintptr_t)vec, .vec_len = 16,
			.category_mask = TLM_PAGE_IS_WRITTEN,
			.return_mask = TLM_PAGE_IS_WRITTEN,
		};
		int ret;

		p[1 * ps] = 2;
		p[5 * ps] = 3;                   /* never touched before */
		ret = ioctl(pfd, TLM_PAGEMAP_SCAN, &arg);
		if (ret < 0) {
			tlm__dbg("memsrc: PAGEMAP_SCAN: %s", tlm_strerror(-errno));
			goto out_map;
		}
		for (int i = 0; i < ret; i++)
			bits_set(bm, (vec[i].start - (uintptr_t)p) / ps,
				 (vec[i].end - vec[i].start) / ps);
		if (bm[0] != ((1u << 1) | (1u << 5)))
			goto out_map;
		ok = ioctl(pfd, TLM_PAGEMAP_SCAN, &arg) == 0;
	}
out_map:
	munmap(p, len);
out_pfd:
	close(pfd);
out_uffd:
	close(uffd);
	return ok;
}

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_result;

static void probe_run(void)
{
	probe_result = probe_pagemap_scan();
}

int tlm_local_pagemap_scan_supported(void)
{
	pthread_once(&probe_once, probe_run);
	return probe_result;
}

/* ---------------------------------------------------------------------- */
/* mprotect + SIGSEGV */

/*
 * The handler finds regions through this table with atomic loads only.
 * A slot is published by storing base last (release) and retired by
 * clearing base first; the bitmap it points to lives as long as its
 * tlm_local, which must not be destroyed while anything writes into it.
 */
#define MAX_SLOTS 256

struct slot {
	_Atomic uintptr_t base;
	_Atomic size_t len;
	_Atomic(_Atomic uint64_t *) bm;
};

static struct slot slots[MAX_SLOTS];
static atomic_uint slots_used;          /* high-water mark */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static bool handler_installed;          /* under slots_lock */
static struct sigaction prev_segv;      /* written once, before install */
static size_t handler_page_size;        /* written once, before install */

/* Hands a fault that is not ours to whoever had SIGSEGV before us. */
static void segv_chain(int sig, siginfo_t *si, void *uc)
{
	if (prev_segv.sa_flags & SA_SIGINFO) {
		prev_segv.sa_sigaction(sig, si, uc);
		return;
	}
	if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
		prev_segv.sa_handler(sig);
		return;
	}
	/* Default action: uninstall ourselves. A real fault re-executes the
	 * instruction and dies the ordinary way; a sent signal is re-raised
	 * and delivered once this handler returns (SIGSEGV is blocked now). */
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	sigemptyset(&dfl.sa_mask);
	sigaction(SIGSEGV, &dfl, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

/* Makes pages [first, first+count) of a tracked region writable, then marks
 * every one of them dirty (writable first, bits second: see
 * get_dirty_mprotect). Async-signal-safe. */
static bool unprotect_mark(uintptr_t base, size_t ps, _Atomic uint64_t *bm,
			   size_t first, size_t count)
{
	if (mprotect((void *)(base + first * ps), count * ps,
		     PROT_READ | PROT_WRITE) != 0)
		return false;
	while (count > 0) {
		size_t w = first / 64, b = first % 64;
		size_t k = 64 - b < count ? 64 - b : count;

		atomic_fetch_or(&bm[w], k == 64 ? ~0ull : ((1ull << k) - 1) << b);
		first += k;
		count -= k;
	}
	return true;
}

/*
 * Async-signal-safe: atomics and mprotect only, errno preserved.
 *
 * Every page made writable splits the region's VMA; scattered writes over
 * a large region can exhaust vm.max_map_count (65530 by default), and then
 * mprotect fails with ENOMEM. Rather than die, the handler then opens the
 * surrounding 2 MiB (which merges the VMAs inside it), or failing that the
 * whole region (which merges all of them), and reports all those pages
 * dirty: a superset, which costs resends but loses nothing. The next
 * get_dirty re-protects the region as one VMA again.
 */
#define FALLBACK_BLOCK_PAGES 512

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	int saved_errno = errno;
	uintptr_t a = (uintptr_t)si->si_addr;
	size_t ps = handler_page_size;

	if (si->si_code == SEGV_ACCERR) {
		unsigned used = atomic_load_explicit(&slots_used, memory_order_acquire);

		for (unsigned i = 0; i < used; i++) {
			uintptr_t base = atomic_load_explicit(&slots[i].base,
							      memory_order_acquire);
			size_t len = atomic_load_explicit(&slots[i].len,
							  memory_order_relaxed);
			size_t page, npages = len / ps, blk, blen;
			_Atomic uint64_t *bm;

			if (!base || a - base >= len)
				continue;
			bm = atomic_load_explicit(&slots[i].bm, memory_order_relaxed);
			page = (a - base) / ps;
			blk = page / FALLBACK_BLOCK_PAGES * FALLBACK_BLOCK_PAGES;
			blen = npages - blk < FALLBACK_BLOCK_PAGES ?
			       npages - blk : FALLBACK_BLOCK_PAGES;
			if (unprotect_mark(base, ps, bm, page, 1) ||
			    unprotect_mark(base, ps, bm, blk, blen) ||
			    unprotect_mark(base, ps, bm, 0, npages)) {
				errno = saved_errno;
				return;
			}
			/* Unrecoverable: let the previous handler have it. */
			break;
		}
	}
	segv_chain(sig, si, uc);
	errno = saved_errno;
}

/* Publishes a region to the handler, installing the handler on first use.
 * It stays installed for the life of the process: another library may have
 * chained after it, so taking it out again could cut that chain. */
static int slot_add(void *base, size_t len, _Atomic uint64_t *bm)
{
	int ret = -ENOSPC;

	pthread_mutex_lock(&slots_lock);
	if (!handler_installed) {
		struct sigaction sa = { .sa_sigaction = segv_handler,
					.sa_flags = SA_SIGINFO | SA_RESTART };

		sigemptyset(&sa.sa_mask);
		handler_page_size = (size_t)sysconf(_SC_PAGESIZE);
		if (sigaction(SIGSEGV, NULL, &prev_segv) < 0 ||
		    sigaction(SIGSEGV, &sa, NULL) < 0) {
			ret = -errno;
			goto out;
		}
		handler_installed = true;
	}
	for (unsigned i = 0; i < MAX_SLOTS; i++) {
		if (atomic_load(&slots[i].base))
			continue;
		atomic_store_explicit(&slots[i].bm, bm, memory_order_relaxed);
		atomic_store_explicit(&slots[i].len, len, memory_order_relaxed);
		atomic_store_explicit(&slots[i].base, (uintptr_t)base,
				      memory_order_release);
		if (atomic_load(&slots_used) <= i)
			atomic_store_explicit(&slots_used, i + 1, memory_order_release);
		ret = (int)i;
		break;
	}
out:
	pthread_mutex_unlock(&slots_lock);
	return ret;
}

static void slot_del(int i)
{
	pthread_mutex_lock(&slots_lock);
	atomic_store(&slots[i].base, 0);
	pthread_mutex_unlock(&slots_lock);
}

/*
 * Get-and-clear for the mprotect tracker.
 *
 * Invariant: a page of a tracked region is writable only if its bit is set,
 * or a handler that made it writable is about to set it. It holds because
 * pages become writable only in the handler, which sets the bit *after*
 * its mprotect, and because we exchange the bits *before* re-protecting.
 *
 * Take a write W to page p that completes before this call returns.
 *  - p's bit is taken by our exchange: p is in this set, and the caller
 *    reads p after we return, so it sees W.
 *  - Otherwise p's bit was clear at our exchange. Then p was read-only at
 *    that moment, or a handler had made it writable and not yet set the bit
 *    (a set bit would have been taken). If p was read-only, W faulted and
 *    the handler's bit-set comes after our exchange: the bit stays for the
 *    next call. If a handler was pending, its bit-set also comes after our
 *    exchange: same. Either way p is in the next call's set.
 *  - Writes between our exchange and our re-protect land on pages that
 *    were writable, so their bit was taken (this set) or is pending (next
 *    set). After the re-protect they fault again.
 * Setting the bit before the handler's mprotect would break this: the
 * exchange could take the bit, our re-protect run, and only then the
 * handler make p writable, leaving p writable with a clear bit.
 *
 * The bitmap words are exchanged one at a time; the argument is per page,
 * so that does not matter. If nothing was dirty nothing is re-protected:
 * any writable page then has a pending bit and is handled next call.
 */
static long get_dirty_mprotect(struct tlm_local *m, unsigned r, uint64_t *out)
{
	struct lregion *lr = &m->lr[r];
	long count = 0;

	for (size_t w = 0; w < lr->nwords; w++) {
		uint64_t x = atomic_exchange(&lr->bm[w], 0);

		if (x) {
			out[w] |= x;
			count += __builtin_popcountll(x);
		}
	}
	if (count && mprotect(m->regs[r].base, m->regs[r].len, PROT_READ) < 0)
		return -errno;
	return count;
}

/* ---------------------------------------------------------------------- */
/* memsrc ops */

static int op_regions(void *ctx, const struct tlm_region **out, unsigned *n)
{
	struct tlm_local *m = ctx;

	*out = m->regs;
	*n = m->n;
	return 0;
}

static int start_locked(struct tlm_local *m)
{
	unsigned i;
	int err = 0;

	for (i = 0; i < m->n; i++) {
		if (m->tracker == TLM_TRACK_PAGEMAP_SCAN) {
			err = uffd_register(m->uffd, m->regs[i].base, m->regs[i].len);
		} else {
			for (size_t w = 0; w < m->lr[i].nwords; w++)
				atomic_store(&m->lr[i].bm[w], 0);
			if (mprotect(m->regs[i].base, m->regs[i].len, PROT_READ) < 0)
				err = -errno;
		}
		if (err)
			goto undo;
	}
	m->tracking = true;
	return 0;
undo:
	tlm__err("memsrc: start tracking region %u: %s", i, tlm_strerror(err));
	while (i-- > 0) {
		if (m->tracker == TLM_TRACK_PAGEMAP_SCAN)
			uffd_unregister(m->uffd, m->regs[i].base, m->regs[i].len);
		else
			mprotect(m->regs[i].base, m->regs[i].len, PROT_READ | PROT_WRITE);
	}
	return err;
}

static int stop_locked(struct tlm_local *m)
{
	int err = 0;

	for (unsigned i = 0; i < m->n; i++) {
		int e = 0;

		if (m->tracker == TLM_TRACK_PAGEMAP_SCAN)
			e = uffd_unregister(m->uffd, m->regs[i].base, m->regs[i].len);
		else if (mprotect(m->regs[i].base, m->regs[i].len,
				  PROT_READ | PROT_WRITE) < 0)
			e = -errno;
		if (e && !err)
			err = e;
	}
	m->tracking = false;
	return err;
}

static int op_start_tracking(void *ctx)
{
	struct tlm_local *m = ctx;
	int err = 0;

	pthread_mutex_lock(&m->lock);
	if (!m->tracking)
		err = start_locked(m);
	pthread_mutex_unlock(&m->lock);
	return err;
}

static int op_stop_tracking(void *ctx)
{
	struct tlm_local *m = ctx;
	int err = 0;

	pthread_mutex_lock(&m->lock);
	if (m->tracking)
		err = stop_locked(m);
	pthread_mutex_unlock(&m->lock);
	return err;
}

static int op_get_dirty(void *ctx, unsigned region, uint64_t *bitmap)
{
	struct tlm_local *m = ctx;
	long ret;

	if (region >= m->n || !bitmap)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (!m->tracking) {
		pthread_mutex_unlock(&m->lock);
		return -EINVAL;
	}
	if (m->tracker == TLM_TRACK_PAGEMAP_SCAN)
		ret = pm_scan_clear(m->pagemap_fd, m->vec, m->regs[region].base,
				    m->regs[region].len, m->page_size, bitmap);
	else
		ret = get_dirty_mprotect(m, region, bitmap);
	pthread_mutex_unlock(&m->lock);
	if (ret < 0)
		tlm__err("memsrc: get_dirty region %u: %s", region, tlm_strerror((int)ret));
	return ret > INT32_MAX ? INT32_MAX : (int)ret;
}

/*
 * The pause gate. A writer announces itself (inflight++) and then checks
 * paused; pause() sets paused and then waits for inflight to drain. Both
 * sides use sequentially consistent atomics, so at least one sees the
 * other: either the writer sees paused and backs out, or pause() sees it
 * in flight and waits for its gate_exit. Wake-ups go through gate_lock so
 * none is lost between a check and a wait.
 */
int tlm__local_gate_enter(struct tlm_local *m, const atomic_bool *stop)
{
	for (;;) {
		atomic_fetch_add(&m->inflight, 1);
		if (!atomic_load(&m->paused))
			return 0;
		tlm__local_gate_exit(m);
		pthread_mutex_lock(&m->gate_lock);
		while (atomic_load(&m->paused) && !atomic_load(stop))
			pthread_cond_wait(&m->gate_go, &m->gate_lock);
		pthread_mutex_unlock(&m->gate_lock);
		if (atomic_load(stop))
			return 1;
	}
}

void tlm__local_gate_exit(struct tlm_local *m)
{
	if (atomic_fetch_sub(&m->inflight, 1) == 1 && atomic_load(&m->paused)) {
		pthread_mutex_lock(&m->gate_lock);
		pthread_cond_broadcast(&m->gate_idle);
		pthread_mutex_unlock(&m->gate_lock);
	}
}

void tlm__local_gate_kick(struct tlm_local *m)
{
	pthread_mutex_lock(&m->gate_lock);
	pthread_cond_broadcast(&m->gate_go);
	pthread_mutex_unlock(&m->gate_lock);
}

static int op_pause(void *ctx)
{
	struct tlm_local *m = ctx;

	pthread_mutex_lock(&m->gate_lock);
	atomic_store(&m->paused, true);
	while (atomic_load(&m->inflight) != 0)
		pthread_cond_wait(&m->gate_idle, &m->gate_lock);
	pthread_mutex_unlock(&m->gate_lock);
	return 0;
}

static int op_resume(void *ctx)
{
	struct tlm_local *m = ctx;

	pthread_mutex_lock(&m->gate_lock);
	atomic_store(&m->paused, false);
	pthread_cond_broadcast(&m->gate_go);
	pthread_mutex_unlock(&m->gate_lock);
	return 0;
}

static const struct tlm_memsrc_ops local_ops = {
	.regions = op_regions,
	.start_tracking = op_start_tracking,
	.get_dirty = op_get_dirty,
	.stop_tracking = op_stop_tracking,
	.pause = op_pause,
	.resume = op_resume,
	.device_state = NULL,
};

/* ---------------------------------------------------------------------- */
/* life cycle */

static const char *const region_names[] = {
	"ram0", "ram1", "ram2", "ram3", "ram4", "ram5", "ram6", "ram7",
	"ram8", "ram9", "ram10", "ram11", "ram12", "ram13", "ram14", "ram15",
};

/* TLM_TRACK_AUTO made concrete; -EOPNOTSUPP or -EINVAL if it cannot be. */
static int pick_tracker(enum tlm_tracker tracker)
{
	switch (tracker) {
	case TLM_TRACK_AUTO:
		return tlm_local_pagemap_scan_supported() ? TLM_TRACK_PAGEMAP_SCAN
							  : TLM_TRACK_MPROTECT;
	case TLM_TRACK_PAGEMAP_SCAN:
		return tlm_local_pagemap_scan_supported() ? (int)tracker : -EOPNOTSUPP;
	case TLM_TRACK_MPROTECT:
		return (int)tracker;
	default:
		return -EINVAL;
	}
}

/* The n regions, mapped (m->n counts those mapped so far). */
static int map_regions(struct tlm_local *m, const size_t *sizes, unsigned n, size_t ps)
{
	for (unsigned i = 0; i < n; i++) {
		size_t len = (sizes[i] + ps - 1) / ps * ps;
		void *p;

		if (len == 0)
			return -EINVAL;
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return -errno;
		/* 4 KiB tracking granularity, and no huge-page splits in the
		 * write-fault path. */
		madvise(p, len, MADV_NOHUGEPAGE);
		m->regs[i] = (struct tlm_region){ .base = p, .len = len,
						  .name = region_names[i] };
		m->lr[i].npages = len / ps;
		m->lr[i].nwords = (m->lr[i].npages + 63) / 64;
		m->lr[i].slot = -1;
		m->n = i + 1;
	}
	return 0;
}

/* The tracker's own state: userfaultfd and pagemap (pagemap-scan), or a
 * bitmap and a SIGSEGV slot per region (mprotect). */
static int tracker_init(struct tlm_local *m)
{
	if (m->tracker == TLM_TRACK_PAGEMAP_SCAN) {
		m->uffd = uffd_open();
		if (m->uffd < 0)
			return m->uffd;
		m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (m->pagemap_fd < 0)
			return -errno;
		m->vec = calloc(SCAN_VEC_LEN, sizeof(*m->vec));
		return m->vec ? 0 : -ENOMEM;
	}
	for (unsigned i = 0; i < m->n; i++) {
		int slot;

		m->lr[i].bm = calloc(m->lr[i].nwords, sizeof(uint64_t));
		if (!m->lr[i].bm)
			return -ENOMEM;
		slot = slot_add(m->regs[i].base, m->regs[i].len, m->lr[i].bm);
		if (slot < 0)
			return slot;
		m->lr[i].slot = slot;
	}
	return 0;
}

int tlm_local_create(const size_t *sizes, unsigned n, enum tlm_tracker tracker,
		     struct tlm_local **out)
{
	struct tlm_local *m;
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	int err, t;

	if (!sizes || !out || n == 0 || n > TLM_MAX_REGIONS)
		return -EINVAL;
	t = pick_tracker(tracker);
	if (t < 0)
		return t;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->tracker = (enum tlm_tracker)t;
	m->page_size = ps;
	m->uffd = -1;
	m->pagemap_fd = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->gate_lock, NULL);
	pthread_cond_init(&m->gate_go, NULL);
	pthread_cond_init(&m->gate_idle, NULL);
	m->regs = calloc(n, sizeof(*m->regs));
	m->lr = calloc(n, sizeof(*m->lr));
	err = !m->regs || !m->lr ? -ENOMEM : map_regions(m, sizes, n, ps);
	if (!err)
		err = tracker_init(m);
	if (err) {
		tlm_local_destroy(m);
		return err;
	}
	m->src = (struct tlm_memsrc){ .ops = &local_ops, .ctx = m,
				      .page_size = (uint32_t)ps };
	tlm__info("memsrc: %u local region(s), tracker %s", n,
		  tlm_local_tracker_name(m));
	*out = m;
	return 0;
}

void tlm_local_destroy(struct tlm_local *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->tracking)
		stop_locked(m);
	pthread_mutex_unlock(&m->lock);
	/* Retire the slots before the mappings go: the addresses may be
	 * reused by someone else's mmap right after. */
	for (unsigned i = 0; i < m->n; i++)
		if (m->lr[i].slot >= 0)
			slot_del(m->lr[i].slot);
	for (unsigned i = 0; i < m->n; i++) {
		munmap(m->regs[i].base, m->regs[i].len);
		free(m->lr[i].bm);
	}
	if (m->pagemap_fd >= 0)
		close(m->pagemap_fd);
	if (m->uffd >= 0)
		close(m->uffd);
	free(m->vec);
	free(m->lr);
	free(m->regs);
	pthread_cond_destroy(&m->gate_idle);
	pthread_cond_destroy(&m->gate_go);
	pthread_mutex_destroy(&m->gate_lock);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

struct tlm_memsrc *tlm_local_memsrc(struct tlm_local *m)
{
	return &m->src;
}

const char *tlm_local_tracker_name(const struct tlm_local *m)
{
	return m->tracker == TLM_TRACK_PAGEMAP_SCAN ? "pagemap-scan" : "mprotect";
}

size_t tlm_local_tracker_bytes(const struct tlm_local *m)
{
	size_t bytes = 0;

	if (m->tracker == TLM_TRACK_PAGEMAP_SCAN)
		return SCAN_VEC_LEN * sizeof(struct pm_region);
	for (unsigned i = 0; i < m->n; i++)
		bytes += m->lr[i].nwords * sizeof(uint64_t);
	return bytes;
}
