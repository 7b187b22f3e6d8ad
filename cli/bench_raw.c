/* SPDX-License-Identifier: MIT */
/*
 * The raw PMD blast of `tlm bench transport --transport dpdk`
 * (transport-dpdk/raw.c): built only with the dpdk transport;
 * bench_transport.c declares these weak.
 */
#include <errno.h>
#include <string.h>

#include "cli.h"
#include "transport-dpdk/raw.h"

int tlm_cli_raw_blast(const char *targs, const char *rx_targs, double seconds,
		      enum tlm_raw_mode mode, struct tlm__raw_result *r)
{
	struct tlm__raw_cfg c = { .seconds = seconds, .copies = mode != TLM_RAW_FRAMES,
				  .place = mode == TLM_RAW_PLACE };
	char eal[512], rx_eal[512], vtx[512], vrx[512];
	unsigned mtu, rx_mtu;
	int rc = tlm__dpdk_raw_end(targs, eal, sizeof(eal), vtx, sizeof(vtx), &mtu);

	/* the receiver's vdev; the blast runs both children with the
	 * sender's EAL arguments and mtu= */
	if (!rc)
		rc = tlm__dpdk_raw_end(rx_targs ? rx_targs : targs, rx_eal, sizeof(rx_eal), vrx,
				       sizeof(vrx), &rx_mtu);
	if (rc)
		return rc;
	/* a device both ends name alike is one device: not two ends of a path */
	if (!*vtx != !*vrx || (*vtx && !strcmp(vtx, vrx)))
		return -ENODEV;
	if (*vtx && c.place)
		return -EINVAL;
	c.mtu = mtu;
	c.eal_args = *eal ? eal : NULL;
	c.vdev_tx = *vtx ? vtx : NULL;
	c.vdev_rx = *vrx ? vrx : NULL;
	return tlm__dpdk_raw_blast(&c, r);
}

double tlm_cli_tsc_hz(void)
{
	return tlm__dpdk_tsc_hz();
}
