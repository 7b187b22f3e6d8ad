/* SPDX-License-Identifier: MIT */
/* The raw PMD blast in a build without the dpdk transport: there is no
 * PMD to blast over (tlm-bench.h; raw-dpdk.c in a build with dpdk). */
#include <errno.h>
#include <string.h>

#include "tlm-bench.h"

int tlm_bench_raw_blast(const struct tlm_bench_raw_cfg *c, struct tlm_bench_raw_result *r)
{
	(void)c;
	memset(r, 0, sizeof(*r));
	return -EOPNOTSUPP;
}

int tlm_bench_raw_blasts(const char *targs, const char *rx_targs, double seconds,
			 struct tlm_bench_raws *out)
{
	(void)targs;
	(void)rx_targs;
	(void)seconds;
	memset(out, 0, sizeof(*out));
	return -EOPNOTSUPP;
}

double tlm_bench_tsc_hz(void)
{
	return 0;
}
