/* SPDX-License-Identifier: MIT */
/*
 * Between the in-process memory source (memsrc-local.c) and the workloads
 * that write into it (bench/lib/workload.c): the pause gate.
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

#endif /* TLM_CORE_MEMSRC_INTERNAL_H */
