/* SPDX-License-Identifier: MIT */
/*
 * Checks for the test programs, defined once. A failed check prints
 *   FAIL [who pid] file:line (function): condition[: message]
 * on stderr, then either ends the test (exit 1: the default, for tests
 * where nothing after a failure makes sense, such as lanes and processes)
 * or, in a file that defines CHECK_COUNTS before including this, counts
 * it in test_failures and goes on (self-tests of pure pieces, which
 * report every check and fail at the end).
 *
 *   CHECK(c)  CHECK(c, "fmt", ...)   c holds
 *   CHECK_OK(e)                      e (an int or a count) is not a
 *                                    negative errno; else its tlm_strerror
 *   FAIL("fmt", ...)                 always ends the test
 *
 * Hooks a file may define before including this: CHECK_WHO (an expression
 * naming this process, e.g. "server"), CHECK_ON_EXIT() (run before exit).
 */
#ifndef TLM_TESTS_CHECK_H
#define TLM_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tlm/tlm.h"

#ifndef CHECK_WHO
#define CHECK_WHO "test"
#endif
#ifndef CHECK_ON_EXIT
#define CHECK_ON_EXIT() ((void)0)
#endif

static int test_failures __attribute__((unused));

#define CHECK_WHERE_() \
	fprintf(stderr, "FAIL [%s %d] %s:%d (%s): ", CHECK_WHO, (int)getpid(), __FILE__, \
		__LINE__, __func__)

#define FAIL(...) do {                                                          \
	CHECK_WHERE_();                                                         \
	fprintf(stderr, __VA_ARGS__);                                           \
	fputc('\n', stderr);                                                    \
	CHECK_ON_EXIT();                                                        \
	exit(1);                                                                \
} while (0)

#ifdef CHECK_COUNTS
#define CHECK_END_() (test_failures++)
#else
#define CHECK_END_() do { CHECK_ON_EXIT(); exit(1); } while (0)
#endif

#define CHECK(c, ...) do {                                                      \
	if (!(c)) {                                                             \
		CHECK_WHERE_();                                                 \
		fputs(#c, stderr);                                              \
		__VA_OPT__(fprintf(stderr, ": " __VA_ARGS__);)                  \
		fputc('\n', stderr);                                            \
		CHECK_END_();                                                   \
	}                                                                       \
} while (0)

#define CHECK_OK(e) do {                                                        \
	long e_ = (long)(e);                                                    \
	CHECK(e_ >= 0, "%s: %s", #e, tlm_strerror((int)e_));                    \
} while (0)

#endif
