/* SPDX-License-Identifier: MIT */
/*
 * The QMP client and vmproc against a real QEMU (TCG, no disk): status
 * transitions with their events, a QMP error, migration capabilities and
 * parameters read back, serial tailing, a clean stop, and QEMU killed under
 * an open session.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qtest.h"

static void expect_status(struct tlm_qmp *q, const char *want, int want_running)
{
	char st[32];
	int running = -1;

	CHECK_RC(tlm_qmp_query_status(q, st, sizeof(st), &running), 0, q);
	CHECK(!strcmp(st, want) && running == want_running, "status %s running %d, want %s %d",
	      st, running, want, want_running);
}

static void caps_and_params(struct tlm_qmp *q)
{
	static const char *const names[] = { "multifd", "events", "pause-before-switchover" };
	static const bool vals[] = { true, true, true };
	struct json_object *p, *r, *c;
	struct tlm_qmp_migstat ms;
	int seen = 0;

	CHECK_RC(tlm_qmp_set_caps(q, names, vals, 3), 0, q);
	p = json_object_new_object();
	json_object_object_add(p, "multifd-channels", json_object_new_int(4));
	json_object_object_add(p, "max-bandwidth", json_object_new_int64(10LL << 30));
	CHECK_RC(tlm_qmp_set_params(q, p), 0, q);

	CHECK_RC(tlm_qmp_exec(q, "query-migrate-parameters", NULL, &r, 5000), 0, q);
	CHECK(qt_i64(r, "multifd-channels") == 4, "multifd-channels %lld",
	      (long long)qt_i64(r, "multifd-channels"));
	CHECK(qt_i64(r, "max-bandwidth") == 10LL << 30, "max-bandwidth %lld",
	      (long long)qt_i64(r, "max-bandwidth"));
	json_object_put(r);

	CHECK_RC(tlm_qmp_exec(q, "query-migrate-capabilities", NULL, &r, 5000), 0, q);
	CHECK(json_object_is_type(r, json_type_array), "capabilities not an array");
	for (size_t i = 0; i < json_object_array_length(r); i++) {
		c = json_object_array_get_idx(r, i);
		for (int k = 0; k < 3; k++)
			if (!strcmp(qt_str(c, "capability"), names[k])) {
				CHECK(json_object_get_boolean(json_object_object_get(c, "state")),
				      "%s is off", names[k]);
				seen++;
			}
	}
	json_object_put(r);
	CHECK(seen == 3, "saw %d of 3 capabilities", seen);

	/* A bad parameter value is a QMP error, not a dead connection. */
	p = json_object_new_object();
	json_object_object_add(p, "multifd-channels", json_object_new_int(0));
	CHECK_RC(tlm_qmp_set_params(q, p), -EREMOTEIO, q);
	CHECK(!strcmp(tlm_qmp_last_error_class(q), "GenericError"), "%s",
	      tlm_qmp_last_error(q));

	CHECK_RC(tlm_qmp_query_migrate(q, &ms), 0, q);
	CHECK(ms.status[0] == '\0' && ms.ram_total == 0, "fresh VM migrate status '%s'",
	      ms.status);
}

/* 1 while pid exists and is not a zombie. */
static int running(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* A process that started a VM dies by SIGKILL: PDEATHSIG must take QEMU
 * down with it. */
static void pdeathsig(void)
{
	struct { pid_t qemu; char dir[108]; } msg;
	pid_t helper;
	int pfd[2], i, alive;
	char path[160];

	CHECK(pipe(pfd) == 0, "pipe");
	helper = fork();
	CHECK(helper >= 0, "fork");
	if (helper == 0) {
		struct tlm_vmproc *vp = NULL;
		const char *const args[] = { "-machine", "pc", "-accel", "tcg", "-m", "64", NULL };
		struct tlm_vmproc_opts o = { .args = args, .timeout_ms = 30000 };

		close(pfd[0]);
		memset(&msg, 0, sizeof(msg));
		if (tlm_vmproc_start(&o, &vp) == 0) {
			msg.qemu = tlm_vmproc_pid(vp);
			snprintf(msg.dir, sizeof(msg.dir), "%s", tlm_vmproc_dir(vp));
		}
		if (write(pfd[1], &msg, sizeof(msg)) != (ssize_t)sizeof(msg))
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	CHECK(read(pfd[0], &msg, sizeof(msg)) == (ssize_t)sizeof(msg), "helper said nothing");
	close(pfd[0]);
	CHECK(msg.qemu > 0, "helper could not start a VM");
	CHECK(running(msg.qemu), "QEMU %d not running", (int)msg.qemu);
	kill(helper, SIGKILL);
	waitpid(helper, NULL, 0);
	for (i = 0; i < 2000 && running(msg.qemu); i++)
		usleep(10000);
	alive = running(msg.qemu);
	if (alive)
		kill(msg.qemu, SIGKILL);  /* do not leave it behind when failing */
	CHECK(!alive, "QEMU %d outlived its parent", (int)msg.qemu);
	waitpid(msg.qemu, NULL, WNOHANG);  /* in case we are a subreaper */
	/* The helper could not clean up after itself. */
	const char *files[] = { "qmp.sock", "serial.log", "qemu.log" };
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", msg.dir, files[i]);
		unlink(path);
	}
	rmdir(msg.dir);
	printf("ok QEMU %d died with the process that started it (PDEATHSIG)\n",
	       (int)msg.qemu);
}

int main(void)
{
	static const char *const paused[] = { "-S", NULL };
	struct tlm_vmproc *vp;
	struct tlm_qmp *q;
	struct json_object *ev, *r;
	char buf[256], dir[128];
	int rc, ws, fd;
	ssize_t n;
	double t0;

	tlm_set_log_fn(qt_log, NULL);
	qt_need_qemu();

	/* ---- a VM started with -S ---- */
	vp = qt_start_vm(paused);
	q = tlm_vmproc_qmp(vp);
	CHECK(q && tlm_vmproc_pid(vp) > 0 && tlm_vmproc_alive(vp) == 1, "vm not up");
	CHECK(tlm_qmp_version(q) >= 70200, "QEMU version %u", tlm_qmp_version(q));
	printf("ok QEMU %u.%u.%u up as pid %d, QMP at %s\n", tlm_qmp_version(q) / 10000,
	       tlm_qmp_version(q) / 100 % 100, tlm_qmp_version(q) % 100,
	       (int)tlm_vmproc_pid(vp), tlm_vmproc_qmp_path(vp));
	expect_status(q, "prelaunch", 0);
	CHECK_RC(tlm_qmp_exec(q, "cont", NULL, NULL, 5000), 0, q);
	CHECK_RC(tlm_qmp_wait_event(q, "RESUME", 10000, &ev), 0, q);
	CHECK(json_object_object_get_ex(ev, "timestamp", NULL), "event without timestamp");
	json_object_put(ev);
	expect_status(q, "running", 1);
	printf("ok prelaunch -> cont -> RESUME event -> running\n");

	/* The largest message QEMU has, spread over many reads. */
	CHECK_RC(tlm_qmp_exec(q, "query-qmp-schema", NULL, &r, 10000), 0, q);
	CHECK(json_object_is_type(r, json_type_array) && json_object_array_length(r) > 100,
	      "schema with %zu entries", json_object_array_length(r));
	printf("ok query-qmp-schema: %zu entries, %zu bytes of JSON\n",
	       json_object_array_length(r), strlen(json_object_to_json_string(r)));
	json_object_put(r);

	CHECK_RC(tlm_qmp_exec(q, "no-such-command", NULL, NULL, 5000), -EREMOTEIO, q);
	CHECK(!strcmp(tlm_qmp_last_error_class(q), "CommandNotFound"), "class '%s'",
	      tlm_qmp_last_error_class(q));
	CHECK(strstr(tlm_qmp_last_error(q), "CommandNotFound") &&
	      strstr(tlm_qmp_last_error(q), "no-such-command"), "'%s'", tlm_qmp_last_error(q));
	printf("ok unknown command -> -EREMOTEIO '%s'\n", tlm_qmp_last_error(q));
	expect_status(q, "running", 1);  /* the session survives a QMP error */

	/* QEMU sends STOP before the return of `stop`: exec must queue it, so
	 * a wait with timeout 0 finds it. */
	CHECK_RC(tlm_qmp_exec(q, "stop", NULL, NULL, 5000), 0, q);
	CHECK_RC(tlm_qmp_exec(q, "query-name", NULL, &r, 5000), 0, q);
	json_object_put(r);
	CHECK_RC(tlm_qmp_wait_event(q, "STOP", 0, NULL), 0, q);
	expect_status(q, "paused", 0);
	printf("ok stop -> STOP event (queued during exec) -> paused\n");

	caps_and_params(q);
	printf("ok multifd/events/pause-before-switchover on, multifd-channels 4, "
	       "max-bandwidth 10 GiB read back; bad value -> GenericError\n");

	/* serial_tail hands out only what is new. The guest has nothing to
	 * say without a disk, so write into the log as the serial would. */
	n = tlm_vmproc_serial_tail(vp, buf, sizeof(buf));
	CHECK(n >= 0, "serial_tail %zd", n);
	while (tlm_vmproc_serial_tail(vp, buf, sizeof(buf)) > 0)
		;
	fd = open(tlm_vmproc_serial_path(vp), O_WRONLY | O_APPEND | O_CLOEXEC);
	CHECK(fd >= 0, "open serial log: %s", strerror(errno));
	CHECK(write(fd, "hello\n", 6) == 6, "write");
	close(fd);
	n = tlm_vmproc_serial_tail(vp, buf, sizeof(buf));
	CHECK(n == 6 && !memcmp(buf, "hello\n", 6), "serial_tail gave %zd", n);
	CHECK(tlm_vmproc_serial_tail(vp, buf, sizeof(buf)) == 0, "serial_tail repeats");
	printf("ok serial_tail returns new output once\n");

	snprintf(dir, sizeof(dir), "%s", tlm_vmproc_dir(vp));
	rc = qt_stop_vm(vp, &ws);
	CHECK(rc == 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "stop %d status 0x%x", rc, ws);
	CHECK(access(dir, F_OK) && errno == ENOENT, "%s left behind", dir);
	printf("ok quit -> exit status 0, reaped, dir removed\n");

	/* ---- a running VM, killed under an open session ---- */
	vp = qt_start_vm(NULL);
	q = tlm_vmproc_qmp(vp);
	expect_status(q, "running", 1);
	CHECK(kill(tlm_vmproc_pid(vp), SIGKILL) == 0, "kill: %s", strerror(errno));
	t0 = qt_now();
	rc = tlm_qmp_exec(q, "query-status", NULL, NULL, 20000);
	CHECK(rc == -ECONNRESET || rc == -EPIPE, "exec after SIGKILL returned %d (%s)", rc,
	      strerror(-rc));
	printf("ok QEMU killed: next exec -> %s after %.3f s (timeout 20 s)\n", strerror(-rc),
	       qt_now() - t0);
	rc = tlm_qmp_exec(q, "query-status", NULL, NULL, 20000);
	CHECK(rc == -ECONNRESET || rc == -EPIPE, "second exec returned %d", rc);
	CHECK(tlm_qmp_wait_event(q, NULL, 20000, NULL) == rc, "wait_event on a dead handle");
	rc = qt_stop_vm(vp, &ws);
	CHECK(rc == 1 && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "stop %d status 0x%x",
	      rc, ws);
	printf("ok stop of a killed VM reaps it (SIGKILL status)\n");

	pdeathsig();

	/* A QEMU that refuses its arguments is reported, not waited for. */
	{
		static const char *const bad[] = { "-no-such-option", NULL };
		struct tlm_vmproc_opts o = { .args = bad, .timeout_ms = 20000 };

		vp = NULL;
		CHECK_RC(tlm_vmproc_start(&o, &vp), -ECHILD, NULL);
		CHECK(vp == NULL, "handle set on failure");
	}
	printf("ok bad QEMU arguments -> -ECHILD\nPASS\n");
	return 0;
}
