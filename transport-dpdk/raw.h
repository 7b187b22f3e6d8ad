/* SPDX-License-Identifier: MIT */
/* The raw PMD blast (raw.c): what a DPDK lane's path carries with no
 * protocol at all, for benchmarks to hold the lanes against. Internal:
 * only in a build with the dpdk transport. */
#ifndef TLM_DPDK_RAW_H
#define TLM_DPDK_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* mtu= when none is given: the embedded memif pair is shared memory, with
 * no wire to hold frames to 1500 bytes, so its frames carry two whole
 * pages (9216-byte buffers); a device port keeps Ethernet's 1500. */
#define TLM__DPDK_MEMIF_MTU 9000
#define TLM__DPDK_PORT_MTU  1500

struct tlm__raw_cfg {
	unsigned mtu;           /* the lanes' mtu=: frames of mtu + 14 bytes */
	double seconds;         /* how long the sender blasts */
	const char *eal_args;   /* NULL: --no-huge --no-pci -m 512, as the lanes */
	const char *vdev_tx;    /* NULL: the memif pair; else "NAME,k=v..." for */
	const char *vdev_rx;    /* each end's own vdev (e.g. net_af_packet on
				 * the two ends of a veth pair); not with place */
	bool copies;            /* move page bytes: the sender copies them from
				 * source memory into each frame, the receiver
				 * out of it into destination memory */
	bool place;             /* with copies: one pass over the page per side,
				 * the least a zero-copy lane could do: the
				 * sender attaches source pages to its frames
				 * (rte_pktmbuf_attach_extbuf; the PMD's copy
				 * is the only one), the receiver is the memif
				 * client in zero-copy mode (no PMD copy) and
				 * copies the payload out to destination */
};

struct tlm__raw_result {
	uint32_t frame_bytes;   /* Ethernet frame, mtu + 14 */
	uint32_t payload;       /* lane stream bytes such a frame would carry */
	uint64_t frames_tx, frames_rx;
	double seconds;         /* receiver: first frame to last */
	double cpu_tx, cpu_rx;  /* process CPU seconds, each side, while blasting */
	double Bps;             /* frames_rx * payload / seconds */
	double tsc_hz;
	char pmd[32];           /* the driver: net_memif, net_af_packet, ... */
};

/*
 * Over net_memif (or vdev_tx to vdev_rx) between two fresh processes, one
 * tx_bursts frames of
 * frame_bytes (headers written, no payload copy), the other rx_bursts and
 * counts them. With copies, the payload is page data: copied in from a
 * 64-page source, copied out to a 64-page destination, as the least any
 * page transfer does (no protocol; the destination is checked against
 * the source once, after the timed part: a mismatch fails the blast);
 * with place, one pass over it per side instead of two. Each child starts
 * its own EAL: call this before the calling process starts one (a child
 * of an EAL process cannot start another).
 * Blocks for about seconds + 1 s; removes the children's EAL runtime
 * directories. Returns 0 or a negative errno.
 */
int tlm__dpdk_raw_blast(const struct tlm__raw_cfg *c, struct tlm__raw_result *r);

/* One end of a raw blast from dpdk transport args, read as the lanes read
 * them: the EAL arguments (dpdk-args=), the mtu (mtu= or its default) and
 * the vdev with its devargs ("" on the embedded memif). -ENODEV for port=
 * (a probed device, not ours to make), -EINVAL for args the lanes refuse. */
int tlm__dpdk_raw_end(const char *targs, char *eal, size_t ecap, char *vdev, size_t vcap,
		      unsigned *mtu);

/* TSC ticks per second: the EAL's figure once one started in this
 * process, else measured over 50 ms. */
double tlm__dpdk_tsc_hz(void);

#endif
