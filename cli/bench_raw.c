/* SPDX-License-Identifier: MIT */
/*
 * The raw PMD blast of `tlm bench transport --transport dpdk`
 * (transport-dpdk/raw.c): built only with the dpdk transport;
 * bench_transport.c declares these weak.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "transport-dpdk/raw.h"

/* The next item of transport args at *p as dpdk.c splits them: at commas
 * outside quotes, quotes dropped, a leading "--" dropped. Returns 1, 0 at
 * the end, or -EINVAL when the item does not fit. */
static int next_item(const char **pp, char *item, size_t cap)
{
	const char *p = *pp;
	size_t n = 0;
	char q = 0;

	while (*p == ',' || *p == ' ')
		p++;
	if (!*p)
		return 0;
	for (; *p && (q || *p != ','); p++) {
		if (!q && (*p == '"' || *p == '\'')) {
			q = *p;
		} else if (q && *p == q) {
			q = 0;
		} else {
			if (n + 1 >= cap)
				return -EINVAL;
			item[n++] = *p;
		}
	}
	item[n] = 0;
	if (!strncmp(item, "--", 2))
		memmove(item, item + 2, n - 1);
	*pp = p;
	return 1;
}

int tlm_cli_raw_blast(const char *targs, double seconds, enum tlm_raw_mode mode,
		      struct tlm__raw_result *r)
{
	static const char *const lane_keys[] = {
		"mtu=", "queues=", "dead_ms=", "zc=", "fault=", "drop=", "reorder=", "dup=",
		"window=", "spinners=",
	};
	struct tlm__raw_cfg c = { .mtu = TLM__DPDK_MEMIF_MTU, .seconds = seconds,
				  .copies = mode != TLM_RAW_FRAMES, .place = mode == TLM_RAW_PLACE };
	char item[512], eal[512] = "";
	const char *p = targs ? targs : "";
	size_t elen = 0;
	int rc;

	while ((rc = next_item(&p, item, sizeof(item))) > 0) {
		bool lane_key = false;

		if (!strncmp(item, "dpdk-args", 9) && (item[9] == '=' || item[9] == ' ')) {
			int n = snprintf(eal + elen, sizeof(eal) - elen, "%s%s", elen ? " " : "",
					 item + 10);

			if (n < 0 || (size_t)n >= sizeof(eal) - elen)
				return -EINVAL;
			elen += (size_t)n;
			continue;
		}
		for (size_t i = 0; i < sizeof(lane_keys) / sizeof(lane_keys[0]); i++)
			lane_key |= !strncmp(item, lane_keys[i], strlen(lane_keys[i]));
		/* port=, vdev=, ip=, devargs: not the embedded memif pair */
		if (!lane_key)
			return -ENODEV;
		if (!strncmp(item, "mtu=", 4))
			c.mtu = (unsigned)strtoul(item + 4, NULL, 10);
	}
	if (rc < 0)
		return rc;
	c.eal_args = elen ? eal : NULL;
	return tlm__dpdk_raw_blast(&c, r);
}

double tlm_cli_tsc_hz(void)
{
	return tlm__dpdk_tsc_hz();
}
