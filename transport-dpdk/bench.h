/* SPDX-License-Identifier: MIT */
/*
 * What the benchmark library's raw PMD blast (bench/lib/raw-dpdk.c) takes
 * from the dpdk transport, so that the blast runs as the lanes would: the
 * EAL arguments, vdev and mtu a transport-args string gives (args.c), the
 * default mtus; with eal.h (the EAL's start and its log capture) and
 * extbuf.h (frames pointing into pages they do not own). Internal: only in
 * a build with the dpdk transport.
 */
#ifndef TLM_DPDK_BENCH_H
#define TLM_DPDK_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* mtu= when none is given: the embedded memif pair is shared memory, with
 * no wire to hold frames to 1500 bytes, so its frames carry two whole
 * pages (9216-byte buffers); a device port keeps Ethernet's 1500. */
#define TLM__DPDK_MEMIF_MTU 9000
#define TLM__DPDK_PORT_MTU  1500

/* One end of a raw blast from dpdk transport args, read as the lanes read
 * them: the EAL arguments (dpdk-args=), the mtu (mtu= or its default), the
 * vdev with its devargs ("" on the embedded memif) and the end's IPv4
 * address (ip=, host order; 0 without one). -ENODEV for port= (a probed
 * device, not ours to make), -EINVAL for args the lanes refuse. */
int tlm__dpdk_raw_end(const char *targs, char *eal, size_t ecap, char *vdev, size_t vcap,
		      unsigned *mtu, uint32_t *ip);

#endif
