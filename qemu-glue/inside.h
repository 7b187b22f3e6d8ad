/* SPDX-License-Identifier: MIT */
/*
 * Driving a QEMU built with tlm's patch series (qemu-glue/qemu-7.2/): its
 * RAM migration runs the tlm engine itself, CHK and PS streams on lanes of
 * their own, started with QMP `migrate uri=tlm:...` on the source and
 * `migrate-incoming uri=tlm:...` on the destination. tlm only drives and
 * reports; the QEMUs talk to each other directly.
 */
#ifndef TLM_QEMU_INSIDE_H
#define TLM_QEMU_INSIDE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"
#include "tlm/tlm.h"

/* 1 if the QEMU behind q runs the tlm engine (its query-migrate has the
 * `tlm` section in its schema), 0 if it is a stock QEMU, or an error. */
int tlm_inside_detect(struct tlm_qmp *q);

/* query-migrate with the engine's section, flattened. */
struct tlm_inside_stat {
	struct tlm_qmp_migstat mig;
	bool has_tlm;
	char transport[16], policy[16];
	unsigned chk_lanes, ps_lanes;
	uint64_t epochs, chk_pages, ps_pages, chk_bytes, ps_bytes, zero_pages;
	bool zero_copy;
	unsigned n_lanes;
	uint64_t lane_bytes[TLM_MAX_LANES];
	int64_t engine_downtime_ms;   /* -1: not reported */
};
int tlm_inside_query(struct tlm_qmp *q, struct tlm_inside_stat *st);

struct tlm_inside_opts {
	struct tlm_qmp *qmp;
	const char *host, *port;   /* source: the destination's; dest: where to listen */
	const char *transport;     /* tcp, rdma, dpdk */
	const char *transport_args;/* may be NULL or "" */
	const char *psk_path;      /* the key file, readable by QEMU */
	int protect;               /* enum tlm_protect (URI protect=, when not encrypt) */
	unsigned chk_lanes, ps_lanes;  /* source only */
	const char *policy;        /* source only: tlm, precopy, stop-copy, frs, mp */
	unsigned epoch_ms;         /* source only; 0 = the engine's default */
	int timeout_ms;            /* the whole migration */
	int peer_timeout_ms;       /* URI timeout-ms: the engine's silent-peer
				    * timer and per-step waits; 0 = its default */
	void (*progress)(const struct tlm_inside_stat *st, void *arg);
	void *progress_arg;
	volatile sig_atomic_t *cancel;  /* non-zero: migrate_cancel (source) */
};

struct tlm_inside_result {
	bool completed;
	struct tlm_inside_stat st;
	char error[256];
	char vm_status[32];        /* query-status at the end */
	uint64_t wall_ms;
};

/* Builds the tlm: URI into out. -EINVAL (with why) for values a URI cannot
 * carry ('&', '?', '#' or spaces in a path or the transport args). */
int tlm_inside_uri(const struct tlm_inside_opts *o, bool source, char *out, size_t cap,
		   char *why, size_t whylen);

/* Source: migrate, follow it to its end. 0 when completed; otherwise
 * r->error says why and the source VM runs again (QEMU resumes it). */
int tlm_inside_migrate(const struct tlm_inside_opts *o, struct tlm_inside_result *r);

/* Destination (QEMU started with -incoming defer): migrate-incoming, then
 * wait until the VM runs here. 0 when it does. */
int tlm_inside_receive(const struct tlm_inside_opts *o, struct tlm_inside_result *r);

#endif /* TLM_QEMU_INSIDE_H */
