/* SPDX-License-Identifier: MIT */
/*
 * HMAC-SHA256 challenge-response (OpenSSL libcrypto). Each side proves it
 * holds the pre-shared key over both nonces, the session id and the lane
 * number, with a label per direction so one side's proof can never be
 * replayed as the other's.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/random.h>

#include "tlm-internal.h"

int tlm__hmac(const struct tlm_psk *psk, const char *label, const uint8_t *sid,
	      uint16_t lane, const uint8_t *n1, const uint8_t *n2,
	      uint8_t mac[TLM_MAC_LEN])
{
	uint8_t msg[32 + TLM_SID_LEN + 2 + 2 * TLM_NONCE_LEN];
	size_t ll = strlen(label);
	unsigned int maclen = 0;
	size_t off = 0;

	if (ll > 32 || !psk || psk->len < TLM_PSK_MIN || psk->len > TLM_PSK_MAX)
		return -EINVAL;
	memcpy(msg, label, ll);
	off = ll;
	memcpy(msg + off, sid, TLM_SID_LEN);
	off += TLM_SID_LEN;
	tlm__put16(msg + off, lane);
	off += 2;
	memcpy(msg + off, n1, TLM_NONCE_LEN);
	off += TLM_NONCE_LEN;
	memcpy(msg + off, n2, TLM_NONCE_LEN);
	off += TLM_NONCE_LEN;
	if (!HMAC(EVP_sha256(), psk->key, (int)psk->len, msg, off, mac, &maclen) ||
	    maclen != TLM_MAC_LEN)
		return -EIO;
	return 0;
}

int tlm__random(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int tlm__ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}
