/* SPDX-License-Identifier: MIT */
/*
 * The guardian: a process forked by a command that drives a QEMU through a
 * migration (the relay's source side, tlm checkpoint), which puts that QEMU
 * back if the command dies mid-way (a crash, SIGKILL, the OOM killer):
 * nobody else would cancel the migration or resume a guest it stopped.
 * guard.c.
 */
#ifndef TLM_QEMU_GUARD_H
#define TLM_QEMU_GUARD_H

#include <stdbool.h>
#include <sys/types.h>

#include "qmp.h"

struct tlm_guardian {
	pid_t pid;                     /* -1: none */
	int wr;                        /* our end of the socket to it */
};

struct tlm_guardian_cfg {
	const char *qmp_path;          /* the QEMU's QMP socket (it connects anew) */
	bool was_running;              /* the guest ran before: cont it */
	/* A migration QEMU completed is left alone (its destination may run
	 * the guest) unless this is set: the destination is a file. */
	bool resume_completed;
	const char *const *caps;       /* migration capabilities to put back */
	const bool *caps_on;           /* their saved values */
	unsigned n_caps;               /* 0: none */
	const char *who;               /* the command, for its log lines */
};

/* guard.c APIs: */
/* Fork the guardian; call before any thread or lane exists. 0 or -errno. */
int tlm_guardian_start(struct tlm_guardian *g, const struct tlm_guardian_cfg *cfg);
/* A copy of one of QEMU's channel sockets for the guardian to hold, so
 * that our death does not close it under a live migration; sock is g->wr
 * (or -1: none). */
void tlm_guardian_hold(int sock, int fd);
/* We have put the QEMU back ourselves (or never touched it): it exits. */
void tlm_guardian_done(struct tlm_guardian *g);
/* migrate_cancel, wait for the migration to end, cont if the guest ran. */
void tlm_guardian_rollback(struct tlm_qmp *q, bool was_running);

#endif
