/* SPDX-License-Identifier: MIT */
/*
 * The replay build of a fuzz target (no libFuzzer): LLVMFuzzerTestOneInput
 * on every file named on the command line, as the unit suite runs each
 * corpus. Returns how many were replayed, or -1 if one cannot be read.
 */
#ifndef TLM_FUZZ_REPLAY_H
#define TLM_FUZZ_REPLAY_H

#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline int tlm_fuzz_replay(int argc, char **argv)
{
	static uint8_t buf[1 << 20];

	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		if (!f) {
			perror(argv[i]);
			return -1;
		}
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	return argc - 1;
}

#endif
