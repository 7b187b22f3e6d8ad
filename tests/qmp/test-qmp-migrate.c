/* SPDX-License-Identifier: MIT */
/*
 * A real migration between two QEMUs started with vmproc, driven the way
 * the relay drives it (multifd, 4 channels, pause-before-switchover):
 *
 *   dst: (started with -incoming defer -S)
 *   both: migrate-set-capabilities multifd, events (+ pause-before-switchover
 *         on the source); migrate-set-parameters multifd-channels 4
 *         (+ max-bandwidth on the source)
 *   dst: migrate-incoming {uri: unix:PATH}
 *   src: migrate {uri: unix:PATH}
 *   src: query-migrate ... until "pre-switchover" (guest already stopped)
 *   src: migrate-continue {state: pre-switchover}
 *   src: query-migrate ... until "completed"
 *
 * Without a disk the guest is mostly zero pages, so both VMs get 16 MiB of
 * pseudo-random data loaded at 16 MiB (-device loader), different data on
 * each side. The destination was started with -S so it stays paused
 * afterwards: then guest RAM on both sides must be byte-identical (pmemsave
 * of all 64 MiB), after which `cont` must bring the destination to
 * "running".
 */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qtest.h"

#define RAM_MB 64
#define HOLD_MS 300
#define BLOB_ADDR (16u << 20)
#define BLOB_SIZE (16u << 20)

/* A BLOB_SIZE file of xorshift64 output from seed. */
static void make_blob(const char *path, uint64_t seed)
{
	uint64_t *b = malloc(BLOB_SIZE), x = seed;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	CHECK(b && fd >= 0, "blob %s: %s", path, strerror(errno));
	for (size_t i = 0; i < BLOB_SIZE / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[i] = x;
	}
	CHECK(write(fd, b, BLOB_SIZE) == (ssize_t)BLOB_SIZE, "write blob");
	close(fd);
	free(b);
}

static void expect_status(struct tlm_qmp *q, const char *who, const char *want)
{
	char st[32];

	CHECK_RC(tlm_qmp_query_status(q, st, sizeof(st), NULL), 0, q);
	CHECK(!strcmp(st, want), "%s status %s, want %s", who, st, want);
}

/* Polls query-status until it is no longer from (at most 30 s); the
 * status it found goes to st. */
static void wait_leave(struct tlm_qmp *q, const char *from, char *st, size_t len)
{
	for (int i = 0; i < 1500; i++) {
		CHECK_RC(tlm_qmp_query_status(q, st, len, NULL), 0, q);
		if (strcmp(st, from))
			return;
		usleep(20000);
	}
}

static void setup(struct tlm_qmp *q, bool source)
{
	const char *names[] = { "multifd", "events", "pause-before-switchover" };
	bool vals[] = { true, true, true };
	struct json_object *p = json_object_new_object();

	CHECK_RC(tlm_qmp_set_caps(q, names, vals, source ? 3 : 2), 0, q);
	json_object_object_add(p, "multifd-channels", json_object_new_int(4));
	if (source)
		json_object_object_add(p, "max-bandwidth", json_object_new_int64(10LL << 30));
	CHECK_RC(tlm_qmp_set_params(q, p), 0, q);
}

static void *dump_ram(struct tlm_qmp *q, const char *path)
{
	struct json_object *a = json_object_new_object();
	void *m;
	int fd;

	json_object_object_add(a, "val", json_object_new_int64(0));
	json_object_object_add(a, "size", json_object_new_int64(RAM_MB << 20));
	json_object_object_add(a, "filename", json_object_new_string(path));
	CHECK_RC(tlm_qmp_exec(q, "pmemsave", a, NULL, 30000), 0, q);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	m = mmap(NULL, RAM_MB << 20, PROT_READ, MAP_PRIVATE, fd, 0);
	CHECK(m != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	unlink(path);
	return m;
}

/* Drains the source's MIGRATION events into a "setup,active,..." list. */
static void event_trail(struct tlm_qmp *q, char *out, size_t len)
{
	struct json_object *ev;

	out[0] = '\0';
	while (tlm_qmp_wait_event(q, "MIGRATION", 0, &ev) == 0) {
		const char *s = qt_str(json_object_object_get(ev, "data"), "status");
		size_t l = strlen(out);

		snprintf(out + l, len - l, "%s%s", l ? "," : "", s);
		json_object_put(ev);
	}
}

int main(void)
{
	char tmp[] = "/tmp/tlm-qmpmig-XXXXXX", blob1[96], blob2[96], dev1[160], dev2[160];
	const char *src_args[] = { "-device", dev1, NULL };
	const char *dst_args[] = { "-incoming", "defer", "-S", "-device", dev2, NULL };
	static const char *const pre[] = { "pre-switchover", "failed", "cancelled", NULL };
	static const char *const done[] = { "completed", "failed", "cancelled", NULL };
	struct tlm_vmproc *src, *dst;
	struct tlm_qmp *qs, *qd;
	struct tlm_qmp_migstat ms;
	struct json_object *a;
	char uri[160], f1[160], f2[160], trail[256], st[32];
	unsigned char *m1, *m2;
	size_t diff = 0;

	tlm_set_log_fn(qt_log, NULL);
	qt_need_qemu();
	CHECK(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	snprintf(blob1, sizeof(blob1), "%s/src.bin", tmp);
	snprintf(blob2, sizeof(blob2), "%s/dst.bin", tmp);
	make_blob(blob1, 0x9e3779b97f4a7c15ull);
	make_blob(blob2, 0x2545f4914f6cdd1dull);
	snprintf(dev1, sizeof(dev1), "loader,file=%s,addr=%u,force-raw=on", blob1, BLOB_ADDR);
	snprintf(dev2, sizeof(dev2), "loader,file=%s,addr=%u,force-raw=on", blob2, BLOB_ADDR);
	src = qt_start_vm(src_args);
	dst = qt_start_vm(dst_args);
	unlink(blob1);
	unlink(blob2);
	rmdir(tmp);
	qs = tlm_vmproc_qmp(src);
	qd = tlm_vmproc_qmp(dst);
	expect_status(qs, "source", "running");
	expect_status(qd, "destination", "inmigrate");

	setup(qs, true);
	setup(qd, false);
	snprintf(uri, sizeof(uri), "unix:%s/mig.sock", tlm_vmproc_dir(dst));
	CHECK_RC(tlm_qmp_migrate_incoming(qd, uri), 0, qd);
	CHECK_RC(tlm_qmp_migrate(qs, uri), 0, qs);

	CHECK_RC(tlm_qmp_wait_migrate(qs, pre, 20, 60000, &ms), 0, qs);
	CHECK(!strcmp(ms.status, "pre-switchover"), "source went to %s (%s)", ms.status,
	      ms.error_desc);
	CHECK_RC(tlm_qmp_query_status(qs, st, sizeof(st), NULL), 0, qs);
	printf("ok pre-switchover: source runstate %s, total-time %lld ms, "
	       "transferred %llu, remaining %llu, total %llu, dirty-sync %llu, "
	       "downtime %lld, expected-downtime %lld\n", st,
	       (long long)ms.total_time_ms, (unsigned long long)ms.ram_transferred,
	       (unsigned long long)ms.ram_remaining, (unsigned long long)ms.ram_total,
	       (unsigned long long)ms.ram_dirty_sync_count, (long long)ms.downtime_ms,
	       (long long)ms.expected_downtime_ms);
	CHECK(ms.ram_total >= (uint64_t)RAM_MB << 20, "ram total %llu", (unsigned long long)ms.ram_total);

	/* This is where the relay drains its lanes. QEMU's "downtime" runs from
	 * the guest's stop, so the hold counts in it. */
	usleep(HOLD_MS * 1000);
	CHECK_RC(tlm_qmp_migrate_continue(qs), 0, qs);
	CHECK_RC(tlm_qmp_wait_migrate(qs, done, 20, 60000, &ms), 0, qs);
	CHECK(!strcmp(ms.status, "completed"), "source ended %s (%s)", ms.status,
	      ms.error_desc);
	CHECK(ms.downtime_ms >= HOLD_MS, "downtime %lld ms < %d ms hold",
	      (long long)ms.downtime_ms, HOLD_MS);
	event_trail(qs, trail, sizeof(trail));
	printf("ok completed: total-time %lld ms, downtime %lld ms, setup %lld ms, "
	       "transferred %llu, normal %llu pages, duplicate %llu, multifd %llu bytes, "
	       "mbps %.1f, dirty-sync %llu; MIGRATION events: %s\n",
	       (long long)ms.total_time_ms, (long long)ms.downtime_ms,
	       (long long)ms.setup_time_ms, (unsigned long long)ms.ram_transferred,
	       (unsigned long long)ms.ram_normal, (unsigned long long)ms.ram_duplicate,
	       (unsigned long long)ms.ram_multifd_bytes, ms.ram_mbps,
	       (unsigned long long)ms.ram_dirty_sync_count, trail);
	CHECK(strstr(trail, "pre-switchover") && strstr(trail, "completed"),
	      "event trail %s", trail);
	CHECK(ms.ram_normal >= BLOB_SIZE / 4096, "only %llu normal pages sent",
	      (unsigned long long)ms.ram_normal);
	CHECK(ms.ram_multifd_bytes >= ms.ram_normal * 4096, "multifd carried %llu bytes",
	      (unsigned long long)ms.ram_multifd_bytes);

	/* The destination finishes loading on its own schedule. */
	wait_leave(qd, "inmigrate", st, sizeof(st));
	CHECK(!strcmp(st, "paused"), "destination %s after migration", st);
	{
		struct tlm_qmp_migstat dms;

		CHECK_RC(tlm_qmp_query_migrate(qd, &dms), 0, qd);
		printf("ok destination: runstate %s, its query-migrate says '%s'\n", st,
		       dms.status);
	}
	expect_status(qs, "source", "postmigrate");

	snprintf(f1, sizeof(f1), "%s/ram.src", tlm_vmproc_dir(src));
	snprintf(f2, sizeof(f2), "%s/ram.dst", tlm_vmproc_dir(dst));
	m1 = dump_ram(qs, f1);
	m2 = dump_ram(qd, f2);
	/* Not vacuous: the blob is in the source's RAM, and it differed. */
	{
		uint64_t x = 0x9e3779b97f4a7c15ull, *w = (uint64_t *)(m1 + BLOB_ADDR);

		for (size_t i = 0; i < BLOB_SIZE / 8; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			CHECK(w[i] == x, "source blob word %zu", i);
		}
	}
	for (size_t i = 0; i < (size_t)RAM_MB << 20; i += 4096)
		diff += memcmp(m1 + i, m2 + i, 4096) != 0;
	munmap(m1, RAM_MB << 20);
	munmap(m2, RAM_MB << 20);
	CHECK(diff == 0, "%zu of %d pages differ between source and destination", diff,
	      RAM_MB * 256);
	printf("ok guest RAM identical on both sides (%d pages compared)\n", RAM_MB * 256);

	CHECK_RC(tlm_qmp_exec(qd, "cont", NULL, NULL, 10000), 0, qd);
	CHECK_RC(tlm_qmp_wait_event(qd, "RESUME", 10000, NULL), 0, qd);
	expect_status(qd, "destination", "running");
	printf("ok destination running after cont\n");

	CHECK(qt_stop_vm(src, NULL) == 0, "source did not quit cleanly");

	/* Abort at the pause: after migrate_cancel the source must run again
	 * (the relay's way out when a lane fails before switchover). */
	{
		static const char *const dst2_args[] = { "-incoming", "defer", NULL };
		static const char *const ended[] = { "cancelled", "failed", "completed", NULL };
		struct tlm_vmproc *dst2 = qt_start_vm(dst2_args);
		struct tlm_qmp *q2 = tlm_vmproc_qmp(dst2);
		const char *on[] = { "pause-before-switchover" };
		bool yes[] = { true };
		int rc, ws;

		CHECK_RC(tlm_qmp_set_caps(qd, on, yes, 1), 0, qd);
		setup(q2, false);
		snprintf(uri, sizeof(uri), "unix:%s/mig.sock", tlm_vmproc_dir(dst2));
		CHECK_RC(tlm_qmp_migrate_incoming(q2, uri), 0, q2);
		CHECK_RC(tlm_qmp_migrate(qd, uri), 0, qd);
		CHECK_RC(tlm_qmp_wait_migrate(qd, pre, 20, 60000, &ms), 0, qd);
		CHECK(!strcmp(ms.status, "pre-switchover"), "went to %s", ms.status);
		CHECK_RC(tlm_qmp_migrate_cancel(qd), 0, qd);
		CHECK_RC(tlm_qmp_wait_migrate(qd, ended, 20, 60000, &ms), 0, qd);
		CHECK(!strcmp(ms.status, "cancelled"), "cancel ended in %s", ms.status);
		wait_leave(qd, "finish-migrate", st, sizeof(st));
		CHECK(!strcmp(st, "running"), "source %s after cancel", st);
		/* A second continue is refused, not fatal to the session. */
		CHECK_RC(tlm_qmp_migrate_continue(qd), -EREMOTEIO, qd);
		rc = qt_stop_vm(dst2, &ws);
		printf("ok cancel at pre-switchover: source running again; migrate-continue "
		       "now -> '%s'; the destination %s (status 0x%x)\n", tlm_qmp_last_error(qd),
		       rc ? "had exited or was killed" : "quit", ws);
	}

	/* Migrate the guest once more, plainly (no pause), into a destination
	 * without -S: it must come up running by itself. */
	{
		static const char *const dst3_args[] = { "-incoming", "defer", NULL };
		struct tlm_vmproc *dst3 = qt_start_vm(dst3_args);
		struct tlm_qmp *q3 = tlm_vmproc_qmp(dst3);
		const char *off[] = { "pause-before-switchover" };
		bool no[] = { false };

		CHECK_RC(tlm_qmp_set_caps(qd, off, no, 1), 0, qd);
		setup(q3, false);
		snprintf(uri, sizeof(uri), "unix:%s/mig.sock", tlm_vmproc_dir(dst3));
		a = json_object_new_object();
		json_object_object_add(a, "uri", json_object_new_string(uri));
		CHECK_RC(tlm_qmp_exec(q3, "migrate-incoming", a, NULL, 10000), 0, q3);
		a = json_object_new_object();
		json_object_object_add(a, "uri", json_object_new_string(uri));
		CHECK_RC(tlm_qmp_exec(qd, "migrate", a, NULL, 10000), 0, qd);
		CHECK_RC(tlm_qmp_wait_migrate(qd, done, 20, 60000, &ms), 0, qd);
		CHECK(!strcmp(ms.status, "completed"), "plain migration %s (%s)", ms.status,
		      ms.error_desc);
		wait_leave(q3, "inmigrate", st, sizeof(st));
		CHECK(!strcmp(st, "running"), "plain destination %s", st);
		expect_status(qd, "plain source", "postmigrate");
		printf("ok migrated again without pause: total-time %lld ms, downtime %lld ms, "
		       "destination running by itself\n", (long long)ms.total_time_ms,
		       (long long)ms.downtime_ms);
		CHECK(qt_stop_vm(dst3, NULL) == 0, "plain destination did not quit cleanly");
	}
	CHECK(qt_stop_vm(dst, NULL) == 0, "destination did not quit cleanly");
	printf("PASS\n");
	return 0;
}
