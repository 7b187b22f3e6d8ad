/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tlm-internal.h"

int tlm_psk_load(const char *path, struct tlm_psk *out)
{
	uint8_t buf[TLM_PSK_MAX + 64];
	struct stat st;
	size_t n = 0;
	int fd, err = 0;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		err = -errno;
		tlm__err("pre-shared key %s: %s", path, tlm_strerror(err));
		return err;
	}
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		tlm__err("pre-shared key %s: not a regular file", path);
		err = -TLM_EPSK;
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		tlm__err("pre-shared key %s: readable or writable by group/others "
			 "(mode %03o); run: chmod 600 %s", path,
			 (unsigned)(st.st_mode & 0777), path);
		err = -TLM_EPSK;
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == sizeof(buf))
			break;
	}
	while (n && isspace(buf[n - 1]))
		n--;
	if (n > TLM_PSK_MAX) {
		tlm__err("pre-shared key %s: longer than %d bytes", path, TLM_PSK_MAX);
		err = -TLM_EPSK;
		goto out;
	}
	if (n < TLM_PSK_MIN) {
		tlm__err("pre-shared key %s: %zu bytes, need at least %d "
			 "(e.g. 64 hex characters: openssl rand -hex 32 > %s)",
			 path, n, TLM_PSK_MIN, path);
		err = -TLM_EPSK;
		goto out;
	}
	memcpy(out->key, buf, n);
	out->len = n;
out:
	memset(buf, 0, sizeof(buf));
	close(fd);
	return err;
}

int tlm_psk_random(struct tlm_psk *out)
{
	memset(out, 0, sizeof(*out));
	out->len = 32;
	return tlm__random(out->key, out->len);
}

int tlm_psk_to_hex(const struct tlm_psk *psk, char *buf, size_t buflen)
{
	static const char hx[] = "0123456789abcdef";

	if (buflen < psk->len * 2 + 1)
		return -ENOSPC;
	for (size_t i = 0; i < psk->len; i++) {
		buf[2 * i] = hx[psk->key[i] >> 4];
		buf[2 * i + 1] = hx[psk->key[i] & 15];
	}
	buf[psk->len * 2] = 0;
	return (int)(psk->len * 2);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tlm_psk_from_hex(const char *hex, struct tlm_psk *out)
{
	size_t n = strlen(hex);

	memset(out, 0, sizeof(*out));
	if (n % 2 || n / 2 > TLM_PSK_MAX || n / 2 < TLM_PSK_MIN)
		return -TLM_EPSK;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -TLM_EPSK;
		out->key[i] = (uint8_t)(hi << 4 | lo);
	}
	out->len = n / 2;
	return 0;
}
