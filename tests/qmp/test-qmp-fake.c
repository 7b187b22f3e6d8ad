/* SPDX-License-Identifier: MIT */
/*
 * The QMP client against a scripted fake server (no QEMU needed): connect
 * errors, a server that never greets, id matching when a return comes late,
 * events queued during exec, QMP errors, replies split into single bytes,
 * bad JSON and a server that hangs up.
 */
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include "qtest.h"

enum conn_mode { SILENT, SCRIPT };

struct server {
	int lfd;
	enum conn_mode modes[4];
	unsigned nconn;
};

static void put_msg(int fd, struct json_object *o, bool bytewise)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	size_t n = strlen(s);

	if (bytewise) {
		for (size_t i = 0; i < n; i++)
			if (write(fd, s + i, 1) != 1)
				break;
	} else if (write(fd, s, n) != (ssize_t)n) {
		/* the client may be gone already; nothing to do */
	}
	if (write(fd, "\r\n", 2) != 2) {
	}
	json_object_put(o);
}

static struct json_object *reply(struct json_object *id, const char *which)
{
	struct json_object *o = json_object_new_object(), *r = json_object_new_object();

	if (which)
		json_object_object_add(r, "which", json_object_new_string(which));
	json_object_object_add(o, "return", r);
	json_object_object_add(o, "id", json_object_get(id));
	return o;
}

/* Serves one scripted connection; returns when the script says bye or the
 * client goes away. */
static void serve(int fd)
{
	json_tokener *tok = json_tokener_new();
	struct json_object *slow_id = NULL;
	char buf[4096];
	ssize_t n;

	put_msg(fd, json_tokener_parse("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, "
				       "\"minor\": 2, \"major\": 7}, \"package\": \"fake\"}, "
				       "\"capabilities\": [\"oob\"]}}"), false);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		size_t off = 0;

		while (off < (size_t)n) {
			struct json_object *req, *id;
			const char *cmd;

			req = json_tokener_parse_ex(tok, buf + off, (int)((size_t)n - off));
			if (!req) {
				if (json_tokener_get_error(tok) != json_tokener_continue)
					goto out;
				break;
			}
			off += json_tokener_get_parse_end(tok);
			json_tokener_reset(tok);
			cmd = qt_str(req, "execute");
			json_object_object_get_ex(req, "id", &id);
			if (!strcmp(cmd, "qmp_capabilities")) {
				put_msg(fd, reply(id, NULL), false);
			} else if (!strcmp(cmd, "slow")) {
				json_object_put(slow_id);
				slow_id = json_object_get(id);
			} else if (!strcmp(cmd, "next")) {
				/* the late return of "slow", an event, then ours */
				put_msg(fd, reply(slow_id, "stale"), false);
				put_msg(fd, json_tokener_parse("{\"timestamp\": {\"seconds\": 1, "
					"\"microseconds\": 2}, \"event\": \"FOO\", "
					"\"data\": {\"n\": 7}}"), false);
				put_msg(fd, reply(id, "next"), false);
			} else if (!strcmp(cmd, "fail")) {
				struct json_object *o = json_tokener_parse(
					"{\"error\": {\"class\": \"GenericError\", \"desc\": \"boom\"}}");
				json_object_object_add(o, "id", json_object_get(id));
				put_msg(fd, o, false);
			} else if (!strcmp(cmd, "split")) {
				struct json_object *o = reply(id, "split");
				json_object_object_add(json_object_object_get(o, "return"), "echo",
					json_object_get(json_object_object_get(req, "arguments")));
				put_msg(fd, o, true);
			} else if (!strcmp(cmd, "after")) {
				/* our return and an event in a single write */
				struct json_object *o = reply(id, "after");
				char two[512];
				int l = snprintf(two, sizeof(two), "%s\r\n%s\r\n",
					json_object_to_json_string(o),
					"{\"event\": \"BAZ\", \"data\": {}, \"timestamp\": "
					"{\"seconds\": 3, \"microseconds\": 4}}");
				if (write(fd, two, (size_t)l) != l) {
				}
				json_object_put(o);
			} else if (!strcmp(cmd, "garbage")) {
				if (write(fd, "]]]\r\n", 5) != 5) {
				}
			} else if (!strcmp(cmd, "bye")) {
				json_object_put(req);
				goto out;
			}
			json_object_put(req);
		}
	}
out:
	json_object_put(slow_id);
	json_tokener_free(tok);
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	char c;

	for (unsigned i = 0; i < s->nconn; i++) {
		int fd = accept(s->lfd, NULL, NULL);

		if (fd < 0)
			break;
		if (s->modes[i] == SILENT) {
			/* Hold the connection, say nothing, until the client hangs up. */
			while (read(fd, &c, 1) > 0)
				;
		} else {
			serve(fd);
		}
		close(fd);
	}
	return NULL;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0, "socket: %s", strerror(errno));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind: %s", strerror(errno));
	CHECK(listen(fd, 4) == 0, "listen: %s", strerror(errno));
	return fd;
}

int main(void)
{
	char dir[] = "/tmp/tlm-qmpfake-XXXXXX", path[128], file[128], dead[128];
	struct tlm_qmp *q = NULL;
	struct json_object *ret, *ev;
	struct server srv = { .modes = { SILENT, SCRIPT, SCRIPT }, .nconn = 3 };
	pthread_t th;
	double t0, dt;
	int fd;

	tlm_set_log_fn(qt_log, NULL);
	CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/qmp.sock", dir);
	snprintf(file, sizeof(file), "%s/plain", dir);
	snprintf(dead, sizeof(dead), "%s/dead.sock", dir);

	/* No such path; a plain file; a socket nobody listens on any more. */
	CHECK_RC(tlm_qmp_connect(path, 1000, &q), -ENOENT, NULL);
	CHECK(q == NULL, "handle set on failure");
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "open: %s", strerror(errno));
	close(fd);
	CHECK_RC(tlm_qmp_connect(file, 1000, &q), -ECONNREFUSED, NULL);
	close(listen_unix(dead));
	CHECK_RC(tlm_qmp_connect(dead, 1000, &q), -ECONNREFUSED, NULL);
	printf("ok connect errors: ENOENT, ECONNREFUSED (file), ECONNREFUSED (stale socket)\n");

	srv.lfd = listen_unix(path);
	CHECK(pthread_create(&th, NULL, server_main, &srv) == 0, "pthread_create");

	/* 1: accepts, never greets. */
	t0 = qt_now();
	CHECK_RC(tlm_qmp_connect(path, 700, &q), -ETIMEDOUT, NULL);
	dt = qt_now() - t0;
	CHECK(dt >= 0.65, "gave up after %.3f s, before the 0.7 s timeout", dt);
	printf("ok silent server: -ETIMEDOUT after %.3f s (timeout 0.7 s)\n", dt);

	/* 2: the script. */
	CHECK_RC(tlm_qmp_connect(path, 5000, &q), 0, NULL);
	CHECK(tlm_qmp_version(q) == 70222, "version %u", tlm_qmp_version(q));
	CHECK(tlm_qmp_fd(q) >= 0, "fd");

	CHECK_RC(tlm_qmp_exec(q, "slow", NULL, &ret, 300), -ETIMEDOUT, q);
	CHECK(ret == NULL, "ret set on timeout");
	CHECK(strstr(tlm_qmp_last_error(q), "slow"), "last error '%s'", tlm_qmp_last_error(q));
	CHECK_RC(tlm_qmp_exec(q, "next", NULL, &ret, 5000), 0, q);
	CHECK(!strcmp(qt_str(ret, "which"), "next"), "got the return of '%s'",
	      qt_str(ret, "which"));
	json_object_put(ret);
	printf("ok late return of a timed-out command dropped by id\n");

	CHECK_RC(tlm_qmp_wait_event(q, "BAR", 200, &ev), -ETIMEDOUT, q);
	CHECK(ev == NULL, "ev set on timeout");
	CHECK_RC(tlm_qmp_wait_event(q, "FOO", 0, &ev), 0, q);
	CHECK(qt_i64(json_object_object_get(ev, "data"), "n") == 7, "event data");
	json_object_put(ev);
	CHECK_RC(tlm_qmp_wait_event(q, NULL, 100, NULL), -ETIMEDOUT, q);
	printf("ok event that arrived during exec was queued and handed out\n");

	CHECK_RC(tlm_qmp_exec(q, "fail", NULL, NULL, 5000), -EREMOTEIO, q);
	CHECK(!strcmp(tlm_qmp_last_error_class(q), "GenericError"), "class '%s'",
	      tlm_qmp_last_error_class(q));
	CHECK(!strcmp(tlm_qmp_last_error(q), "GenericError: boom"), "error '%s'",
	      tlm_qmp_last_error(q));
	printf("ok QMP error -> -EREMOTEIO, '%s'\n", tlm_qmp_last_error(q));

	CHECK_RC(tlm_qmp_exec(q, "split", json_tokener_parse("{\"s\": \"a\\\"b}\"}"), &ret,
			      5000), 0, q);
	CHECK(!strcmp(qt_str(json_object_object_get(ret, "echo"), "s"), "a\"b}"),
	      "echo %s", json_object_to_json_string(ret));
	json_object_put(ret);
	printf("ok reply written one byte at a time\n");

	/* The event came in the same read as the return: it must be queued by
	 * the time exec returns, since the fd will not signal it again. */
	CHECK_RC(tlm_qmp_exec(q, "after", NULL, NULL, 5000), 0, q);
	CHECK(tlm_qmp_pending(q) == 1, "%d events pending", tlm_qmp_pending(q));
	{
		struct pollfd p = { .fd = tlm_qmp_fd(q), .events = POLLIN };

		CHECK(poll(&p, 1, 0) == 0, "fd readable although all was read");
	}
	CHECK_RC(tlm_qmp_wait_event(q, "BAZ", 0, NULL), 0, q);
	CHECK(tlm_qmp_pending(q) == 0, "%d events pending", tlm_qmp_pending(q));
	printf("ok event read together with a return is queued before exec returns\n");

	CHECK_RC(tlm_qmp_exec(q, "garbage", NULL, NULL, 5000), -EPROTO, q);
	CHECK_RC(tlm_qmp_exec(q, "next", json_object_new_object(), NULL, 5000), -EPROTO, q);
	printf("ok bad JSON -> -EPROTO, and the handle stays dead\n");
	tlm_qmp_close(q);

	/* 3: the server hangs up instead of answering. */
	CHECK_RC(tlm_qmp_connect(path, 5000, &q), 0, NULL);
	fd = tlm_qmp_exec(q, "bye", NULL, NULL, 5000);
	CHECK(fd == -ECONNRESET || fd == -EPIPE, "bye returned %d", fd);
	fd = tlm_qmp_exec(q, "next", NULL, NULL, 5000);
	CHECK(fd == -ECONNRESET || fd == -EPIPE, "exec after hang-up returned %d", fd);
	printf("ok hang-up -> %s, later calls fail at once\n", strerror(-fd));
	tlm_qmp_close(q);

	pthread_join(th, NULL);
	close(srv.lfd);
	unlink(path);
	unlink(file);
	unlink(dead);
	rmdir(dir);
	printf("PASS\n");
	return 0;
}
