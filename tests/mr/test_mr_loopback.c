/* SPDX-License-Identifier: MIT */
/*
 * Runs examples/mr_parallel as server and client over a 4-entry loopback
 * config (free ports picked here; the last entry is ::1 when the machine
 * has IPv6 loopback) and checks both exit 0 and report every connection
 * verified. The server checks every byte against the pattern.
 *
 *   test_mr_loopback PATH-TO-mr_parallel [BYTES]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 4

static char dir[] = "/tmp/tlm-mr-lo-XXXXXX";

/* Bind port 0 on the loopback of the given family, report the port. The
 * sockets stay open until all are picked so the ports differ. */
static int pick_port(int family, int *sock)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int s = socket(family, SOCK_STREAM, 0);

	if (s < 0)
		return -1;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	}
	if (bind(s, (struct sockaddr *)&ss, len) < 0) {
		close(s);
		return -1;
	}
	len = sizeof(ss);
	if (getsockname(s, (struct sockaddr *)&ss, &len) < 0) {
		close(s);
		return -1;
	}
	*sock = s;
	return ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
				       : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static pid_t spawn(const char *prog, const char *role, const char *conf,
		   const char *bytes, const char *out)
{
	pid_t pid;

	fflush(stdout);   /* the child must not flush our buffered output */
	pid = fork();

	if (pid == 0) {
		FILE *f = freopen(out, "w", stdout);

		if (!f || dup2(fileno(stdout), 2) < 0)
			_exit(126);
		execl(prog, prog, role, conf, bytes, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Wait for pid up to deadline (seconds since epoch); kill it past that. */
static int wait_for(pid_t pid, time_t deadline)
{
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		if (time(NULL) > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -2;
		}
		nanosleep(&ts, NULL);
	}
}

static int count_in(const char *path, const char *needle)
{
	char line[512];
	int c = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, needle))
			c++;
	fclose(f);
	return c;
}

static void dump(const char *path)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  | %s", line);
	fclose(f);
}

/* short_client: the client sends half of what the server expects; then
 * both must fail (the server notices the short stream). */
static int run_once(const char *prog, const char *bytes, int short_client, int *retry)
{
	char conf[300], sout[300], cout[300];
	int socks[N], ports[N], i, v6, rs, rc, ok = 1;
	FILE *f;
	pid_t server, client;
	time_t deadline = time(NULL) + 50;

	*retry = 0;
	/* IPv6 loopback may be absent (disabled in some containers). */
	ports[N - 1] = pick_port(AF_INET6, &socks[N - 1]);
	v6 = ports[N - 1] > 0;
	for (i = 0; i < N - v6; i++) {
		ports[i] = pick_port(AF_INET, &socks[i]);
		if (ports[i] <= 0) {
			perror("pick port");
			return 1;
		}
	}
	snprintf(conf, sizeof(conf), "%s/lanes.conf", dir);
	snprintf(sout, sizeof(sout), "%s/server.out", dir);
	snprintf(cout, sizeof(cout), "%s/client.out", dir);
	f = fopen(conf, "w");
	if (!f)
		return 1;
	fprintf(f, "# test_mr_loopback: %d lanes\n\n", N);
	for (i = 0; i < N; i++)
		fprintf(f, "%s %d\n", (v6 && i == N - 1) ? "::1" : "127.0.0.1", ports[i]);
	fclose(f);
	for (i = 0; i < N; i++)
		close(socks[i]);
	if (!v6)
		printf("note: no IPv6 loopback, all entries IPv4\n");

	server = spawn(prog, "server", conf, bytes, sout);
	client = spawn(prog, "client", conf, short_client ? "1000" : bytes, cout);
	if (server < 0 || client < 0) {
		perror("fork");
		return 1;
	}
	rc = wait_for(client, deadline);
	rs = wait_for(server, deadline);
	/* Someone else grabbed one of the ports between pick and listen. */
	if (rs != 0 && count_in(sout, "in use") > 0) {
		*retry = 1;
		return 1;
	}
	printf("%sserver exit %d, client exit %d\n", short_client ? "short run: " : "", rs, rc);
	if (short_client) {
		if (rs == 1 && rc == 1 && count_in(sout, "FAILED") == N + 1 &&
		    count_in(cout, "FAILED") == N + 1)
			return 0;
		fprintf(stderr, "short stream not detected\n");
		dump(sout);
		dump(cout);
		return 1;
	}
	if (rs != 0 || rc != 0)
		ok = 0;
	if (count_in(sout, " verified") != N + 1 || count_in(sout, "all verified") != 1) {
		fprintf(stderr, "server did not verify all %d connections\n", N);
		ok = 0;
	}
	if (count_in(cout, " verified") != N + 1 || count_in(cout, "all verified") != 1) {
		fprintf(stderr, "client did not see all %d acknowledgements\n", N);
		ok = 0;
	}
	if (!ok) {
		fprintf(stderr, "server output:\n");
		dump(sout);
		fprintf(stderr, "client output:\n");
		dump(cout);
	} else {
		dump(sout);
	}
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *bytes = argc > 2 ? argv[2] : "16M";
	int attempt, rc = 1, retry;
	char cmd[300];

	if (argc < 2) {
		fprintf(stderr, "usage: test_mr_loopback PATH-TO-mr_parallel [BYTES]\n");
		return 2;
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	for (attempt = 0; attempt < 3; attempt++) {
		rc = run_once(argv[1], bytes, 0, &retry);
		if (!retry)
			break;
		fprintf(stderr, "port taken meanwhile, retrying\n");
	}
	for (attempt = 0; rc == 0 && attempt < 3; attempt++) {
		rc = run_once(argv[1], bytes, 1, &retry);
		if (!retry)
			break;
		fprintf(stderr, "port taken meanwhile, retrying\n");
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
	printf("test_mr_loopback: %s\n", rc ? "FAILED" : "passed");
	return rc;
}
