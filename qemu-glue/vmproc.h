/* SPDX-License-Identifier: MIT */
/*
 * Starting and stopping a QEMU process, for tests and for `tlm demo`.
 *
 * The VM runs as our child with
 *   -qmp unix:<dir>/qmp.sock,server=on,wait=off -serial file:<dir>/serial.log
 *   -display none -nodefaults -nic none
 * plus the caller's arguments; its stdout and stderr go to <dir>/qemu.log.
 * The child is set up with PR_SET_PDEATHSIG(SIGKILL), so a tlm that crashes
 * never leaves QEMU behind. Linux ties that signal to the *thread* that
 * forked, so start (and stop) a VM from a thread that outlives it.
 *
 * tlm_vmproc_start returns once QMP answers, with the QMP connection open
 * (QEMU serves one QMP client per -qmp socket; tlm_vmproc_qmp lends it).
 * tlm_vmproc_stop always reaps the child and frees the handle.
 */
#ifndef TLM_QEMU_VMPROC_H
#define TLM_QEMU_VMPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tlm_qmp;
struct tlm_vmproc;

struct tlm_vmproc_opts {
	const char *qemu;              /* binary; NULL = "qemu-system-x86_64" in PATH */
	const char *const *args;       /* extra arguments, NULL-terminated; may be NULL */
	const char *dir;               /* NULL = a fresh mkdtemp() dir under $TMPDIR or
					* /tmp, removed again by stop */
	int timeout_ms;                /* for QMP to come up; 0 = 20 s */
	bool keep_dir;                 /* do not remove a dir we created (debugging) */
};

/* -ENOENT: the QEMU binary is not found (nothing started). -ECHILD: QEMU
 * exited during start-up (the tail of qemu.log goes to tlm__log).
 * -ETIMEDOUT: QMP did not answer in time (QEMU is killed and reaped). */
int tlm_vmproc_start(const struct tlm_vmproc_opts *o, struct tlm_vmproc **out);

/* Asks QEMU to quit over QMP; if it is still there after timeout_ms sends
 * SIGTERM, then SIGKILL after another timeout_ms; always reaps it, removes
 * the dir if we made it, frees vp. Returns 0 if QEMU exited by itself with
 * status 0 (after quit), 1 if it had to be signalled or exited otherwise; the
 * raw wait status goes to *wstatus if not NULL. NULL vp: returns 0. */
int tlm_vmproc_stop(struct tlm_vmproc *vp, int timeout_ms, int *wstatus);

/* Borrowed; valid until stop. May be dead if QEMU went away. */
struct tlm_qmp *tlm_vmproc_qmp(struct tlm_vmproc *vp);
pid_t tlm_vmproc_pid(const struct tlm_vmproc *vp);
const char *tlm_vmproc_dir(const struct tlm_vmproc *vp);
const char *tlm_vmproc_qmp_path(const struct tlm_vmproc *vp);
const char *tlm_vmproc_serial_path(const struct tlm_vmproc *vp);

/* 1 while the process runs, 0 once it exited (then reaped, status kept). */
int tlm_vmproc_alive(struct tlm_vmproc *vp);

/* Serial output written since the previous call: up to len bytes into buf,
 * returns the count (0 = nothing new) or a negative errno. */
ssize_t tlm_vmproc_serial_tail(struct tlm_vmproc *vp, char *buf, size_t len);

/* Full path of the QEMU binary into buf. -ENOENT if it is not found: tests
 * call this to decide whether to skip. */
int tlm_vmproc_find_qemu(const char *name, char *buf, size_t len);

#endif /* TLM_QEMU_VMPROC_H */
