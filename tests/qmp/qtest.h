/* SPDX-License-Identifier: MIT */
/* Shared bits of the qmp suite: checks that stop every VM before failing. */
#ifndef TLM_TESTS_QMP_QTEST_H
#define TLM_TESTS_QMP_QTEST_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "tlm/tlm.h"
#include "qmp.h"
#include "vmproc.h"

#define QT_MAX_VMS 4
static struct tlm_vmproc *qt_vms[QT_MAX_VMS];

static inline void qt_stop_all(void)
{
	for (int i = 0; i < QT_MAX_VMS; i++) {
		tlm_vmproc_stop(qt_vms[i], 2000, NULL);
		qt_vms[i] = NULL;
	}
}

/* tests/check.h's CHECK, with every VM stopped before the test ends. */
#define CHECK_ON_EXIT() qt_stop_all()
#include "tests/check.h"

#define CHECK_RC(expr, want, q) do {                                            \
	int rc_ = (expr);                                                       \
	CHECK(rc_ == (want), "%s returned %d (%s), want %d; last error: %s",    \
	      #expr, rc_, strerror(-rc_), (want), (q) ? tlm_qmp_last_error(q) : ""); \
} while (0)

static inline void qt_log(int level, const char *msg, void *arg)
{
	(void)arg;
	if (level <= TLM_LOG_WARN || getenv("TLM_DEBUG"))
		fprintf(stderr, "  [tlm %d] %s\n", level, msg);
}

static inline double qt_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Exits 77 when there is no QEMU to test with. */
static inline void qt_need_qemu(void)
{
	char path[4096];

	if (tlm_vmproc_find_qemu(NULL, path, sizeof(path))) {
		printf("SKIP: qemu-system-x86_64 not found in PATH\n");
		exit(77);
	}
}

/* Starts a small TCG VM (no disk: SeaBIOS idles, enough for QMP) with the
 * extra arguments in extra (NULL-terminated, may be NULL). */
static inline struct tlm_vmproc *qt_start_vm(const char *const *extra)
{
	const char *args[32] = { "-machine", "pc", "-accel", "tcg", "-m", "64" };
	struct tlm_vmproc_opts o = { .args = args, .timeout_ms = 30000 };
	struct tlm_vmproc *vp = NULL;
	int n = 6, rc, slot;

	for (int i = 0; extra && extra[i] && n < 31; i++)
		args[n++] = extra[i];
	for (slot = 0; slot < QT_MAX_VMS && qt_vms[slot]; slot++)
		;
	CHECK(slot < QT_MAX_VMS, "too many VMs");
	rc = tlm_vmproc_start(&o, &vp);
	CHECK(rc == 0 && vp, "tlm_vmproc_start: %s", strerror(-rc));
	qt_vms[slot] = vp;
	return vp;
}

/* Stops vp and forgets it; returns tlm_vmproc_stop's result. */
static inline int qt_stop_vm(struct tlm_vmproc *vp, int *wstatus)
{
	for (int i = 0; i < QT_MAX_VMS; i++)
		if (qt_vms[i] == vp)
			qt_vms[i] = NULL;
	return tlm_vmproc_stop(vp, 5000, wstatus);
}

/* A json_object member as an int64 / string (0 / "" when absent). */
static inline int64_t qt_i64(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static inline const char *qt_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

#endif
