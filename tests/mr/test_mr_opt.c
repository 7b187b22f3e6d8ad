/* SPDX-License-Identifier: MIT */
/* mr_get_opt() parsing: comments, blank lines, malformed lines, missing
 * file; plus the argument checks of the other mr_* calls. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mr.h>
#define CHECK_COUNTS
#include "tests/check.h"

static char dir[] = "/tmp/tlm-mr-opt-XXXXXX";

static const char *write_conf(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
	return path;
}

/* Expect NULL with errno err and *n == 0. */
static void expect_fail(const char *name, const char *text, int err)
{
	int n = 42;
	mr_addr_port *ap;

	errno = 0;
	ap = mr_get_opt(write_conf(name, text), &n);
	if (ap || errno != err || n != 0) {
		fprintf(stderr, "%s: expected NULL/errno %d, got %p/errno %d n=%d\n",
			name, err, (void *)ap, errno, n);
		test_failures++;
	}
	free(ap);
}

int main(void)
{
	mr_addr_port *ap;
	int n = -1;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}

	/* Comments, blank lines, tabs, CRLF, trailing comments, no final
	 * newline; longest accepted fields (15 characters). */
	ap = mr_get_opt(write_conf("good", "# lanes\n"
					   "\n"
					   "   \t\n"
					   "127.0.0.1 5001\n"
					   "\t10.0.0.2\t\t5002   # second lane\n"
					   "#192.168.1.1 6000\n"
					   "::1 5003\r\n"
					   "255.255.255.255 123456789012345"), &n);
	CHECK(ap != NULL);
	CHECK(n == 4);
	if (ap && n == 4) {
		CHECK(!strcmp(ap[0].addr, "127.0.0.1") && !strcmp(ap[0].port, "5001"));
		CHECK(!strcmp(ap[1].addr, "10.0.0.2") && !strcmp(ap[1].port, "5002"));
		CHECK(!strcmp(ap[2].addr, "::1") && !strcmp(ap[2].port, "5003"));
		CHECK(!strcmp(ap[3].addr, "255.255.255.255") &&
		      !strcmp(ap[3].port, "123456789012345"));
	}
	free(ap);

	/* Many entries: the array grows. */
	{
		char big[64 * 32] = "";
		int i;

		for (i = 0; i < 64; i++)
			snprintf(big + strlen(big), sizeof(big) - strlen(big),
				 "127.0.0.%d %d\n", i % 250 + 1, 7000 + i);
		ap = mr_get_opt(write_conf("many", big), &n);
		CHECK(ap && n == 64);
		if (ap && n == 64)
			CHECK(!strcmp(ap[63].addr, "127.0.0.64") && !strcmp(ap[63].port, "7063"));
		free(ap);
	}

	expect_fail("missing-port", "127.0.0.1 5001\n127.0.0.2\n", EINVAL);
	expect_fail("long-addr", "1234567890123456 80\n", EINVAL);
	expect_fail("long-port", "127.0.0.1 1234567890123456\n", EINVAL);
	expect_fail("extra-field", "127.0.0.1 5001 extra\n", EINVAL);
	expect_fail("empty", "", EINVAL);
	expect_fail("only-comments", "# nothing\n\n  # here\n", EINVAL);

	/* Missing file: fopen's errno comes through. */
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/does-not-exist", dir);
		n = 42;
		errno = 0;
		ap = mr_get_opt(path, &n);
		CHECK(ap == NULL && errno == ENOENT && n == 0);
		free(ap);
	}

	/* Argument checks of the rest of the API. */
	errno = 0;
	CHECK(mr_get_fd_list(0) == NULL && errno == EINVAL);
	errno = 0;
	mr_server_listen(NULL, NULL, 1);
	CHECK(errno == EINVAL);
	errno = 0;
	mr_client_connect(NULL, NULL, 1);
	CHECK(errno == EINVAL);
	errno = 0;
	CHECK(mr_server_accept(NULL, 1) == NULL && errno == EINVAL);

	/* An unknown service is reported, not printed (no DNS traffic). */
	{
		mr_addr_port bad = { "127.0.0.1", "no-such-svc" };
		int *fd = mr_get_fd_list(1);

		CHECK(fd != NULL);
		if (fd) {
			mr_client_connect(fd, &bad, 1);
			CHECK(errno != 0);
			close(fd[0]);
			free(fd);
		}
	}

	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: could not remove %s\n", dir);
	}
	if (test_failures) {
		fprintf(stderr, "test_mr_opt: %d failure(s)\n", test_failures);
		return 1;
	}
	printf("test_mr_opt: all checks passed\n");
	return 0;
}
