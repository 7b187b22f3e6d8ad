/* SPDX-License-Identifier: MIT */
/*
 * Between the in-process memory source (memsrc-local.c) and the workloads
 * that write into it (workload.c).
 */
#ifndef TLM_CORE_MEMSRC_INTERNAL_H
#define TLM_CORE_MEMSRC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tlm/memsrc.h"

/* memsrc-local.c APIs: the pause gate.
 *
 * Every writer brackets each page write with gate_enter/gate_exit; the
 * bracket is the unit pause() waits for. gate_enter blocks while the source
 * is paused; it returns 0 to go ahead (the caller must then call gate_exit),
 * or 1 if *stop became true while parked (no gate_exit then). gate_kick
 * wakes parked writers so they notice their stop flag. */
int tlm__local_gate_enter(struct tlm_local *m, const atomic_bool *stop);
void tlm__local_gate_exit(struct tlm_local *m);
void tlm__local_gate_kick(struct tlm_local *m);

/* workload.c APIs: */
/* 1 if a 4 KiB-or-larger page holds a consistent workload stamp for global
 * page gidx (or was never written: all zero), else 0. Meaningful only while
 * no writer is touching the page (e.g. after pause, or at the destination
 * after the final dirty set was applied). */
int tlm__workload_page_ok(const void *page, uint32_t page_size, uint64_t gidx);

#endif /* TLM_CORE_MEMSRC_INTERNAL_H */
