/* SPDX-License-Identifier: MIT */
/*
 * Which AEAD the connecting side proposes for its sealed lanes
 * (docs/security.md): AES-256-GCM where this CPU does it fast,
 * ChaCha20-Poly1305 where it does not.
 *
 * The CPU's flags do not settle it. Under an emulator (QEMU TCG, the
 * Soft-RoCE test VMs) a CPU that reports AES-NI and PCLMULQDQ runs them as
 * helper calls, and GHASH then costs hundreds of cycles per byte where
 * ChaCha20-Poly1305 costs tens (Poly1305 alone, what a MAC costs, is seven
 * times as fast as GHASH there). So once per process both are timed on the
 * same buffer, on this thread's CPU clock (another process's load counts
 * less), the best of PROBE_RUNS, as the mode will use them: encrypting for
 * encrypt, authenticating only (the data as associated data) for integrity.
 * AES-256-GCM is kept unless ChaCha20-Poly1305 is faster by the margin in
 * tlm__cipher_pick. Without AES-NI and PCLMULQDQ nothing is timed.
 * TLM_SEAL_CIPHER=aes or chacha forces one.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlm-internal.h"

#define PROBE_BYTES (32u << 10)
#define PROBE_RUNS  5

uint8_t tlm__cipher_pick(uint64_t aes_ns, uint64_t chacha_ns)
{
	/* ChaCha20-Poly1305 only when it is at least 1.5x as fast: where the
	 * two are close, AES-256-GCM stays the default everywhere. */
	if (aes_ns && chacha_ns && chacha_ns * 3 < aes_ns * 2)
		return TLM_CIPHER_CHACHA20POLY1305;
	return TLM_CIPHER_AES256GCM;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The best of PROBE_RUNS seals of PROBE_BYTES, encrypted or (mac) only
 * authenticated; 0 if the cipher failed. */
static uint64_t time_seal(const EVP_CIPHER *c, uint8_t *buf, bool mac)
{
	static const uint8_t key[32], iv[12];
	uint64_t best = 0;
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	uint8_t tag[16];
	int n;

	if (!x || EVP_EncryptInit_ex(x, c, NULL, key, iv) != 1)
		goto out;
	for (int r = 0; r < PROBE_RUNS; r++) {
		uint64_t t0 = cpu_ns(), t;

		if (EVP_EncryptInit_ex(x, NULL, NULL, NULL, iv) != 1 ||
		    EVP_EncryptUpdate(x, mac ? NULL : buf, &n, buf, PROBE_BYTES) != 1 ||
		    EVP_EncryptFinal_ex(x, buf, &n) != 1 ||
		    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, sizeof(tag), tag) != 1) {
			best = 0;
			goto out;
		}
		t = cpu_ns() - t0;
		if (!best || t < best)
			best = t ? t : 1;
	}
out:
	EVP_CIPHER_CTX_free(x);
	return best;
}

static uint8_t measured[2] = { TLM_CIPHER_AES256GCM, TLM_CIPHER_AES256GCM };

static void measure(void)
{
	uint8_t *buf = calloc(1, PROBE_BYTES);

	if (!buf)
		return;
	for (int mac = 0; mac < 2; mac++)
		measured[mac] = tlm__cipher_pick(time_seal(EVP_aes_256_gcm(), buf, mac),
						 time_seal(EVP_chacha20_poly1305(), buf, mac));
	free(buf);
}

uint8_t tlm__seal_cipher(uint8_t protect)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const char *e = getenv("TLM_SEAL_CIPHER");

	if (e && !strcmp(e, "chacha"))
		return TLM_CIPHER_CHACHA20POLY1305;
	if (e && !strcmp(e, "aes"))
		return TLM_CIPHER_AES256GCM;
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul"))
		return TLM_CIPHER_CHACHA20POLY1305;
#endif
	pthread_once(&once, measure);
	return measured[protect == TLM_PROTECT_INTEGRITY];
}
