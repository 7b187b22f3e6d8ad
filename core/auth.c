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

/*
 * HKDF-SHA256 (RFC 5869) with one block of output: PRK = HMAC(salt, ikm),
 * OKM = HMAC(PRK, info || 0x01). ikm is the pre-shared key, salt both
 * nonces (client's first), info names the lane, the protection and the
 * direction, so every lane and direction of every session gets its own key.
 */
int tlm__seal_key(const struct tlm_psk *psk, const uint8_t *sid, uint16_t lane,
		  const uint8_t *nonce_c, const uint8_t *nonce_s, uint8_t protect,
		  uint8_t cipher, char dir, uint8_t key[32])
{
	static const char label[] = "tlm-seal v3";
	uint8_t salt[2 * TLM_NONCE_LEN], prk[32];
	uint8_t info[sizeof(label) + TLM_SID_LEN + 2 + 3 + 1];
	unsigned int n = 0;
	size_t off = 0;
	int err = 0;

	if (!psk || psk->len < TLM_PSK_MIN || psk->len > TLM_PSK_MAX)
		return -EINVAL;
	memcpy(salt, nonce_c, TLM_NONCE_LEN);
	memcpy(salt + TLM_NONCE_LEN, nonce_s, TLM_NONCE_LEN);
	memcpy(info, label, sizeof(label));
	off = sizeof(label);
	memcpy(info + off, sid, TLM_SID_LEN);
	off += TLM_SID_LEN;
	tlm__put16(info + off, lane);
	off += 2;
	info[off++] = protect;
	info[off++] = cipher;
	info[off++] = (uint8_t)dir;
	info[off++] = 1;
	if (!HMAC(EVP_sha256(), salt, sizeof(salt), psk->key, psk->len, prk, &n) || n != 32 ||
	    !HMAC(EVP_sha256(), prk, sizeof(prk), info, off, key, &n) || n != 32)
		err = -EIO;
	OPENSSL_cleanse(prk, sizeof(prk));
	return err;
}
