/* SPDX-License-Identifier: MIT */
/*
 * The library never prints. Messages go to the callback the application
 * installed (cli/ prints them); without one they are dropped.
 */
#include <stdio.h>

#include "tlm-internal.h"

static tlm_log_fn log_fn;
static void *log_arg;

void tlm_set_log_fn(tlm_log_fn fn, void *arg)
{
	log_arg = arg;
	__atomic_store_n(&log_fn, fn, __ATOMIC_RELEASE);
}

void tlm__log(int level, const char *fmt, ...)
{
	tlm_log_fn fn = __atomic_load_n(&log_fn, __ATOMIC_ACQUIRE);
	char buf[512];
	va_list ap;

	if (!fn)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fn(level, buf, log_arg);
}
