/* SPDX-License-Identifier: MIT */
/* `tlm keygen FILE`: a fresh random 256-bit pre-shared key, as hex, in a
 * file only its owner can read. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: tlm keygen [--force] FILE\n"
"\n"
"Writes a fresh random 256-bit pre-shared key, as 64 hex characters, to FILE\n"
"with mode 600 (owner only). Copy the file to the other host by a channel\n"
"you trust and give both ends --psk FILE. Refuses to replace an existing\n"
"file unless --force.\n");
}

int tlm_cli_keygen(int argc, char **argv)
{
	char hex[2 * TLM_PSK_MAX + 2];
	const char *path = NULL;
	bool force = false;
	struct tlm_psk k;
	int fd, n, err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--force")) {
			force = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			tlm_cli_err("keygen: unknown option %s", argv[i]);
			usage(stderr);
			return 2;
		} else if (path) {
			tlm_cli_err("keygen: one FILE only");
			return 2;
		} else {
			path = argv[i];
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	err = tlm_psk_random(&k);
	n = err ? err : tlm_psk_to_hex(&k, hex, sizeof(hex) - 1);
	memset(&k, 0, sizeof(k));
	if (n < 0) {
		tlm_cli_err("keygen: no random key: %s", tlm_strerror(n));
		return 1;
	}
	hex[n++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (force ? O_TRUNC : O_EXCL),
		  0600);
	if (fd < 0) {
		tlm_cli_err("keygen: %s: %s%s", path, strerror(errno),
			    errno == EEXIST ? " (--force replaces it)" : "");
		memset(hex, 0, sizeof(hex));
		return 1;
	}
	/* An existing file (--force) keeps its mode otherwise. */
	err = fchmod(fd, 0600) < 0 || write(fd, hex, (size_t)n) != n || fsync(fd) < 0;
	memset(hex, 0, sizeof(hex));
	if (close(fd) < 0 || err) {
		tlm_cli_err("keygen: %s: %s", path, strerror(errno));
		unlink(path);
		return 1;
	}
	return 0;
}
