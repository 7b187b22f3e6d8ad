/* SPDX-License-Identifier: MIT */
/*
 * What the engine tests that inject faults share (test_engine_faults.c,
 * test_keepalive.c): a memory source that hands every call to an inner
 * one (the local memory source) but those the test hooks itself, and a
 * log callback that prints warnings and errors with the process id (the
 * tests run both ends, in two processes).
 *
 * The wrapper's ctx points at the test's own state, whose first member is
 * the inner source (struct tlm_memsrc *): the hooks keep what they count
 * beside it.
 */
#ifndef TLM_TESTS_ENGINE_MEMSRC_WRAP_H
#define TLM_TESTS_ENGINE_MEMSRC_WRAP_H

#include <stdio.h>
#include <unistd.h>

#include "tlm/memsrc.h"
#include "tlm/tlm.h"

static inline struct tlm_memsrc *wrap_inner(void *x)
{
	return *(struct tlm_memsrc **)x;
}

static inline int wrap_regions(void *x, const struct tlm_region **out, unsigned *n)
{
	return wrap_inner(x)->ops->regions(wrap_inner(x)->ctx, out, n);
}

static inline int wrap_start(void *x)
{
	return wrap_inner(x)->ops->start_tracking(wrap_inner(x)->ctx);
}

static inline int wrap_stop(void *x)
{
	return wrap_inner(x)->ops->stop_tracking(wrap_inner(x)->ctx);
}

static inline int wrap_dirty(void *x, unsigned r, uint64_t *bm)
{
	return wrap_inner(x)->ops->get_dirty(wrap_inner(x)->ctx, r, bm);
}

static inline int wrap_pause(void *x)
{
	return wrap_inner(x)->ops->pause(wrap_inner(x)->ctx);
}

static inline int wrap_resume(void *x)
{
	return wrap_inner(x)->ops->resume(wrap_inner(x)->ctx);
}

/* The wrapper's ops: the inner source's, but pause, resume and
 * device_state, which the test gives (wrap_pause, wrap_resume: the
 * inner's). */
#define WRAP_OPS(pause_fn, resume_fn, devstate_fn) { \
	.regions = wrap_regions, .start_tracking = wrap_start, .get_dirty = wrap_dirty, \
	.stop_tracking = wrap_stop, .pause = (pause_fn), .resume = (resume_fn), \
	.device_state = (devstate_fn), \
}

static inline void wrap_log_cb(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_WARN)
		fprintf(stderr, "  [%d] %s\n", (int)getpid(), msg);
}

#endif /* TLM_TESTS_ENGINE_MEMSRC_WRAP_H */
