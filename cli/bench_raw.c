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

/* One end's transport args: the EAL arguments (dpdk-args=), mtu= if
 * given (else 0), and its vdev with the devargs dpdk.c would pass it
 * ("" on the embedded memif). -ENODEV for port= (a probed device). */
static int end_args(const char *targs, char *eal, size_t ecap, char *vdev, size_t vcap,
		    unsigned *mtu)
{
	static const char *const lane_keys[] = {
		"mtu=", "queues=", "dead_ms=", "zc=", "fault=", "drop=", "reorder=", "dup=",
		"window=", "spinners=", "ip=", "peer-mac=",
	};
	char item[512], devargs[512] = "";
	const char *p = targs ? targs : "";
	size_t elen = 0, dlen = 0;
	int rc;

	*eal = *vdev = 0;
	*mtu = 0;
	while ((rc = next_item(&p, item, sizeof(item))) > 0) {
		bool lane_key = false;
		char *dst = devargs;
		size_t *len = &dlen, cap = sizeof(devargs);
		const char *v = item;
		int n;

		if (!strncmp(item, "dpdk-args", 9) && (item[9] == '=' || item[9] == ' ')) {
			dst = eal;
			len = &elen;
			cap = ecap;
			v = item + 10;
		} else if (!strncmp(item, "port=", 5)) {
			return -ENODEV;
		} else if (!strncmp(item, "vdev=", 5)) {
			n = snprintf(vdev, vcap, "%s", item + 5);
			if (n < 0 || (size_t)n >= vcap)
				return -EINVAL;
			continue;
		} else {
			for (size_t i = 0; i < sizeof(lane_keys) / sizeof(lane_keys[0]); i++)
				lane_key |= !strncmp(item, lane_keys[i], strlen(lane_keys[i]));
			if (!strncmp(item, "mtu=", 4))
				*mtu = (unsigned)strtoul(item + 4, NULL, 10);
			if (lane_key)
				continue;
		}
		/* EAL words joined by spaces, devargs (iface=, ...) by commas */
		n = snprintf(dst + *len, cap - *len, "%s%s", *len ? (dst == eal ? " " : ",") : "", v);
		if (n < 0 || (size_t)n >= cap - *len)
			return -EINVAL;
		*len += (size_t)n;
	}
	if (rc < 0)
		return rc;
	if (dlen && !*vdev)
		return -ENODEV;   /* devargs of a device that is not ours to make */
	if (*vdev && dlen) {
		size_t v = strlen(vdev);
		int n = snprintf(vdev + v, vcap - v, ",%s", devargs);
		if (n < 0 || (size_t)n >= vcap - v)
			return -EINVAL;
	}
	return 0;
}

int tlm_cli_raw_blast(const char *targs, const char *rx_targs, double seconds,
		      enum tlm_raw_mode mode, struct tlm__raw_result *r)
{
	struct tlm__raw_cfg c = { .seconds = seconds, .copies = mode != TLM_RAW_FRAMES,
				  .place = mode == TLM_RAW_PLACE };
	char eal[512], rx_eal[512], vtx[512], vrx[512];
	unsigned mtu, rx_mtu;
	int rc = end_args(targs, eal, sizeof(eal), vtx, sizeof(vtx), &mtu);

	/* the receiver's vdev; the blast runs both children with the
	 * sender's EAL arguments and mtu= */
	if (!rc)
		rc = end_args(rx_targs ? rx_targs : targs, rx_eal, sizeof(rx_eal), vrx, sizeof(vrx),
			      &rx_mtu);
	if (rc)
		return rc;
	/* a device both ends name alike is one device: not two ends of a path */
	if (!*vtx != !*vrx || (*vtx && !strcmp(vtx, vrx)))
		return -ENODEV;
	if (*vtx && c.place)
		return -EINVAL;
	c.mtu = mtu ? mtu : *vtx ? TLM__DPDK_PORT_MTU : TLM__DPDK_MEMIF_MTU;
	c.eal_args = *eal ? eal : NULL;
	c.vdev_tx = *vtx ? vtx : NULL;
	c.vdev_rx = *vrx ? vrx : NULL;
	return tlm__dpdk_raw_blast(&c, r);
}

double tlm_cli_tsc_hz(void)
{
	return tlm__dpdk_tsc_hz();
}
