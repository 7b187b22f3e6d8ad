/* SPDX-License-Identifier: MIT */
/*
 * Pre-shared keys: key files and their checks. A key file holds a random
 * key of 16..256 bytes as hex or base64 (tlm keygen writes 32 bytes as
 * hex); anything else, a passphrase above all, is refused with a pointer
 * to tlm keygen: the key is all that stands between a peer on the path
 * and the guest's memory.
 */
#include <ctype.h>
#include <stdbool.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tlm-internal.h"

static int hexval(char c);

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Hex of whole bytes: the byte count, or -1. */
static int from_hex(const uint8_t *s, size_t n, uint8_t *out, size_t cap)
{
	if (n % 2 || n / 2 > cap)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval((char)s[2 * i]), lo = hexval((char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (int)(n / 2);
}

/* Base64 (standard or URL alphabet, '=' padding optional): the byte
 * count, or -1. */
static int from_b64(const uint8_t *s, size_t n, uint8_t *out, size_t cap)
{
	uint32_t acc = 0;
	size_t bits = 0, k = 0;

	while (n && s[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((char)s[i]);

		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (k == cap)
				return -1;
			out[k++] = (uint8_t)(acc >> bits);
		}
	}
	return (int)k;
}

/* Does the key look like it came from a random source? Not a proof of
 * entropy, a net for the usual mistakes: a pattern that repeats (zeros,
 * "abab..."), or text (a passphrase) written as base64 or hex. */
static bool looks_random(const uint8_t *k, size_t n)
{
	size_t printable = 0;

	for (size_t period = 1; period <= n / 2; period++) {
		size_t i = period;

		while (i < n && k[i] == k[i - period])
			i++;
		if (i == n)
			return false;
	}
	for (size_t i = 0; i < n; i++)
		printable += k[i] >= 0x20 && k[i] < 0x7f;
	return printable < n;
}

static int parse_key(const char *path, const uint8_t *buf, size_t n, struct tlm_psk *out)
{
	uint8_t key[TLM_PSK_MAX];
	size_t a = 0;
	int k;

	while (a < n && isspace(buf[a]))
		a++;
	while (n > a && isspace(buf[n - 1]))
		n--;
	k = from_hex(buf + a, n - a, key, sizeof(key));
	if (k < 0)
		k = from_b64(buf + a, n - a, key, sizeof(key));
	if (k < 0) {
		tlm__err("pre-shared key %s: not a key in hex or base64; make one with: "
			 "tlm keygen %s", path, path);
		k = -TLM_EPSK;
	} else if (k < TLM_PSK_MIN) {
		tlm__err("pre-shared key %s: %d bytes of key, need at least %d (128 bits); "
			 "make one with: tlm keygen %s", path, k, TLM_PSK_MIN, path);
		k = -TLM_EPSK;
	} else if (!looks_random(key, (size_t)k)) {
		tlm__err("pre-shared key %s: not a random key (a repeating pattern, or text); "
			 "make one with: tlm keygen %s", path, path);
		k = -TLM_EPSK;
	} else {
		memcpy(out->key, key, (size_t)k);
		out->len = (size_t)k;
		k = 0;
	}
	memset(key, 0, sizeof(key));
	return k;
}

int tlm_psk_load(const char *path, struct tlm_psk *out)
{
	uint8_t buf[4 * TLM_PSK_MAX];
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
	if (n == sizeof(buf)) {
		tlm__err("pre-shared key %s: longer than any key; make one with: tlm keygen %s",
			 path, path);
		err = -TLM_EPSK;
		goto out;
	}
	err = parse_key(path, buf, n, out);
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
