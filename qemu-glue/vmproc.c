/* SPDX-License-Identifier: MIT */
/*
 * QEMU as a child process. Life of a vmproc:
 *   start: resolve the binary, make the dir, fork; the child sets
 *          PDEATHSIG, points stdin at /dev/null and stdout/stderr at
 *          qemu.log, closes every other fd (lane sockets must not leak into
 *          QEMU) and execs; the parent retries tlm_qmp_connect until QMP
 *          answers, QEMU exits, or the deadline passes.
 *   stop:  QMP quit -> wait -> SIGTERM -> wait -> SIGKILL -> blocking reap.
 * Everything the child runs between fork and exec is async-signal-safe, so
 * starting a VM from a multi-threaded program is fine.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tlm-internal.h"
#include "qmp.h"
#include "vmproc.h"

#define VM_DEFAULT_TIMEOUT_MS 20000
#define VM_MAX_ARGS 256
#define VM_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

struct tlm_vmproc {
	pid_t pid;
	bool reaped;
	int wstatus;
	bool own_dir, keep_dir;
	int serial_fd;
	struct tlm_qmp *qmp;
	/* The dir is bounded by the socket path limit (108) anyway. */
	char dir[VM_PATH_MAX];
	char qmp_path[VM_PATH_MAX];
	char serial_path[VM_PATH_MAX + 16];
	char log_path[VM_PATH_MAX + 16];
};

static void nap_ms(int ms)
{
	nanosleep(&(struct timespec){ .tv_sec = ms / 1000,
				      .tv_nsec = (long)(ms % 1000) * 1000000 }, NULL);
}

int tlm_vmproc_find_qemu(const char *name, char *buf, size_t len)
{
	const char *path = getenv("PATH"), *p, *end;

	if (!name)
		name = "qemu-system-x86_64";
	if (strchr(name, '/')) {
		if (access(name, X_OK))
			return -ENOENT;
		return snprintf(buf, len, "%s", name) < (int)len ? 0 : -ENAMETOOLONG;
	}
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p; p = *end ? end + 1 : end) {
		int n;

		end = strchrnul(p, ':');
		n = snprintf(buf, len, "%.*s/%s", (int)(end - p), p, name);
		if (n > 0 && (size_t)n < len && end > p && !access(buf, X_OK))
			return 0;
	}
	return -ENOENT;
}

/* Reaps the child if it has exited; 1 = reaped (now or before), 0 = runs. */
static int try_reap(struct tlm_vmproc *vp)
{
	pid_t r;

	if (vp->reaped)
		return 1;
	do
		r = waitpid(vp->pid, &vp->wstatus, WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == vp->pid || (r < 0 && errno == ECHILD)) {
		/* ECHILD: someone else reaped it (a SIGCHLD=SIG_IGN parent). */
		vp->reaped = true;
		return 1;
	}
	return 0;
}

static int wait_exit(struct tlm_vmproc *vp, int timeout_ms)
{
	uint64_t deadline = tlm__now_ms() + (uint64_t)timeout_ms;

	while (!try_reap(vp)) {
		if (!tlm__left_ms(deadline))
			return 0;
		nap_ms(10);
	}
	return 1;
}

static void reap_blocking(struct tlm_vmproc *vp)
{
	while (!vp->reaped) {
		pid_t r = waitpid(vp->pid, &vp->wstatus, 0);

		if (r == vp->pid || (r < 0 && errno != EINTR))
			vp->reaped = true;
	}
}

static void log_tail(const struct tlm_vmproc *vp)
{
	char buf[600];
	ssize_t n = 0;
	off_t sz;
	int fd = open(vp->log_path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	sz = lseek(fd, 0, SEEK_END);
	if (sz >= 0 && lseek(fd, sz > (off_t)sizeof(buf) - 1 ? sz - (off_t)sizeof(buf) + 1 : 0,
			     SEEK_SET) >= 0)
		n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	tlm__err("vmproc: qemu output: %s", buf);
}

static void remove_dir(struct tlm_vmproc *vp)
{
	DIR *d = opendir(vp->dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d)))
			if (e->d_type != DT_DIR)
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	if (rmdir(vp->dir))
		tlm__warn("vmproc: could not remove %s: %s", vp->dir, strerror(errno));
}

static void vp_free(struct tlm_vmproc *vp)
{
	tlm_qmp_close(vp->qmp);
	if (vp->serial_fd >= 0)
		close(vp->serial_fd);
	if (vp->own_dir && !vp->keep_dir)
		remove_dir(vp);
	free(vp);
}

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn))
child(const char *bin, char *const *argv, int logfd, pid_t parent)
{
	sigset_t none;
	int nullfd;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(127);
	nullfd = open("/dev/null", O_RDONLY);
	if (nullfd < 0 || dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
		_exit(127);
#ifdef SYS_close_range
	syscall(SYS_close_range, 3u, ~0u, 0u);
#endif
	execv(bin, argv);
	_exit(127);
}

/* vp's directory (o->dir, or a fresh one under $TMPDIR) and the paths of
 * its QMP socket, serial log and QEMU log in it. */
static int make_dir(struct tlm_vmproc *vp, const struct tlm_vmproc_opts *o)
{
	int err;

	if (o->dir) {
		if (snprintf(vp->dir, sizeof(vp->dir), "%s", o->dir) >= (int)sizeof(vp->dir))
			return -ENAMETOOLONG;
	} else {
		const char *tmp = getenv("TMPDIR");

		if (snprintf(vp->dir, sizeof(vp->dir), "%s/tlm-vm-XXXXXX",
			     tmp && *tmp ? tmp : "/tmp") >= (int)sizeof(vp->dir))
			return -ENAMETOOLONG;
		if (!mkdtemp(vp->dir)) {
			err = -errno;
			tlm__err("vmproc: mkdtemp %s: %s", vp->dir, strerror(errno));
			return err;
		}
		vp->own_dir = true;
	}
	if (snprintf(vp->qmp_path, sizeof(vp->qmp_path), "%s/qmp.sock", vp->dir) >=
	    (int)sizeof(vp->qmp_path)) {
		tlm__err("vmproc: %s/qmp.sock is too long for a unix socket", vp->dir);
		return -ENAMETOOLONG;
	}
	snprintf(vp->serial_path, sizeof(vp->serial_path), "%s/serial.log", vp->dir);
	snprintf(vp->log_path, sizeof(vp->log_path), "%s/qemu.log", vp->dir);
	return 0;
}

/* Until QEMU's QMP socket answers (vp->qmp), QEMU exits (-ECHILD) or the
 * deadline passes (-ETIMEDOUT, QEMU still running). */
static int wait_qmp(struct tlm_vmproc *vp, uint64_t deadline, int timeout_ms)
{
	for (;;) {
		int left = tlm__left_ms(deadline);

		if (try_reap(vp)) {
			tlm__err("vmproc: qemu exited during start-up (status 0x%x)", vp->wstatus);
			log_tail(vp);
			return -ECHILD;
		}
		if (!left) {
			tlm__err("vmproc: QMP of pid %d did not come up in %d ms", (int)vp->pid,
				 timeout_ms);
			return -ETIMEDOUT;
		}
		/* Only try once the socket exists, so start-up does not fill
		 * the log with ENOENT. */
		struct stat st;

		if (!stat(vp->qmp_path, &st) && S_ISSOCK(st.st_mode) &&
		    !tlm_qmp_connect(vp->qmp_path, left < 2000 ? left : 2000, &vp->qmp))
			return 0;
		nap_ms(20);
	}
}

int tlm_vmproc_start(const struct tlm_vmproc_opts *o, struct tlm_vmproc **out)
{
	int timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : VM_DEFAULT_TIMEOUT_MS;
	uint64_t deadline = tlm__now_ms() + (uint64_t)timeout_ms;
	char bin[PATH_MAX], qmparg[VM_PATH_MAX + 32], serarg[VM_PATH_MAX + 24];
	char *argv[VM_MAX_ARGS];
	struct tlm_vmproc *vp;
	unsigned na = 0, i;
	pid_t parent = getpid();
	int logfd, err;

	*out = NULL;
	err = tlm_vmproc_find_qemu(o->qemu, bin, sizeof(bin));
	if (err) {
		tlm__err("vmproc: %s not found", o->qemu ? o->qemu : "qemu-system-x86_64");
		return err;
	}
	vp = calloc(1, sizeof(*vp));
	if (!vp)
		return -ENOMEM;
	vp->pid = -1;
	vp->serial_fd = -1;
	vp->keep_dir = o->keep_dir;
	err = make_dir(vp, o);
	if (err)
		goto fail;
	snprintf(qmparg, sizeof(qmparg), "unix:%s,server=on,wait=off", vp->qmp_path);
	snprintf(serarg, sizeof(serarg), "file:%s", vp->serial_path);
	unlink(vp->qmp_path);   /* a stale socket from an earlier run */

	const char *fixed[] = { bin, "-qmp", qmparg, "-serial", serarg, "-display", "none",
				"-nodefaults", "-nic", "none" };
	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		argv[na++] = (char *)fixed[i];
	for (i = 0; o->args && o->args[i]; i++) {
		if (na == VM_MAX_ARGS - 1) {
			err = -E2BIG;
			goto fail;
		}
		argv[na++] = (char *)o->args[i];
	}
	argv[na] = NULL;

	logfd = open(vp->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (logfd < 0) {
		err = -errno;
		tlm__err("vmproc: %s: %s", vp->log_path, strerror(errno));
		goto fail;
	}
	vp->pid = fork();
	if (vp->pid == 0)
		child(bin, argv, logfd, parent);
	if (vp->pid < 0) {
		err = -errno;
		close(logfd);
		tlm__err("vmproc: fork: %s", strerror(-err));
		goto fail;
	}
	close(logfd);
	tlm__dbg("vmproc: started %s as pid %d in %s", bin, (int)vp->pid, vp->dir);

	err = wait_qmp(vp, deadline, timeout_ms);
	if (err == -ETIMEDOUT)
		goto fail_kill;
	if (err)
		goto fail;
	*out = vp;
	return 0;

fail_kill:
	kill(vp->pid, SIGKILL);
	reap_blocking(vp);
fail:
	vp_free(vp);
	return err;
}

int tlm_vmproc_stop(struct tlm_vmproc *vp, int timeout_ms, int *wstatus)
{
	bool signalled = false;
	int ret;

	if (!vp)
		return 0;
	if (!try_reap(vp) && vp->qmp) {
		/* QEMU may close the socket before its return arrives: ignore. */
		tlm_qmp_exec(vp->qmp, "quit", NULL, NULL, timeout_ms);
	}
	if (!wait_exit(vp, timeout_ms)) {
		tlm__warn("vmproc: pid %d ignored quit, sending SIGTERM", (int)vp->pid);
		kill(vp->pid, SIGTERM);
		signalled = true;
		if (!wait_exit(vp, timeout_ms)) {
			tlm__warn("vmproc: pid %d ignored SIGTERM, sending SIGKILL", (int)vp->pid);
			kill(vp->pid, SIGKILL);
		}
	}
	reap_blocking(vp);
	if (wstatus)
		*wstatus = vp->wstatus;
	ret = !signalled && WIFEXITED(vp->wstatus) && WEXITSTATUS(vp->wstatus) == 0 ? 0 : 1;
	vp_free(vp);
	return ret;
}

int tlm_vmproc_alive(struct tlm_vmproc *vp)
{
	return !try_reap(vp);
}

ssize_t tlm_vmproc_serial_tail(struct tlm_vmproc *vp, char *buf, size_t len)
{
	ssize_t n;

	if (vp->serial_fd < 0) {
		vp->serial_fd = open(vp->serial_path, O_RDONLY | O_CLOEXEC);
		if (vp->serial_fd < 0)
			return errno == ENOENT ? 0 : -errno;
	}
	/* The fd's offset remembers how far we have read. */
	do
		n = read(vp->serial_fd, buf, len);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

struct tlm_qmp *tlm_vmproc_qmp(struct tlm_vmproc *vp) { return vp->qmp; }
pid_t tlm_vmproc_pid(const struct tlm_vmproc *vp) { return vp->pid; }
const char *tlm_vmproc_dir(const struct tlm_vmproc *vp) { return vp->dir; }
const char *tlm_vmproc_qmp_path(const struct tlm_vmproc *vp) { return vp->qmp_path; }
const char *tlm_vmproc_serial_path(const struct tlm_vmproc *vp) { return vp->serial_path; }
