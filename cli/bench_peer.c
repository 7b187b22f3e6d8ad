/* SPDX-License-Identifier: MIT */
/*
 * What `tlm bench transport` compares itself with, and where it runs:
 *
 *   --peer ib_write_bw   perftest's ib_write_bw on the same RDMA device, with
 *                        as many QPs as lanes and the page size as message
 *                        size, run here right after our own run: the RDMA
 *                        stack's raw WRITE bandwidth, with no checking.
 *   --in-vm              run the whole command inside the Soft-RoCE VM of
 *                        tests/vm/run-in-vm.sh (for hosts without an RDMA
 *                        device): the same binary, over rxe0 at 198.18.0.1.
 */
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

#define IB_PORT 18555   /* ib_write_bw's TCP port for exchanging QP numbers */

/* The interface that holds addr, or -ENOENT. */
static int ifname_of(const char *addr, char *ifname, size_t cap)
{
	struct ifaddrs *ifa, *i;
	int rc = -ENOENT;

	if (getifaddrs(&ifa) < 0)
		return -errno;
	for (i = ifa; i; i = i->ifa_next) {
		char host[NI_MAXHOST];

		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET &&
				     i->ifa_addr->sa_family != AF_INET6))
			continue;
		if (getnameinfo(i->ifa_addr, i->ifa_addr->sa_family == AF_INET ?
				sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6),
				host, sizeof(host), NULL, 0, NI_NUMERICHOST))
			continue;
		if (!strcmp(host, addr)) {
			snprintf(ifname, cap, "%s", i->ifa_name);
			rc = 0;
			break;
		}
	}
	freeifaddrs(ifa);
	return rc;
}

/* dev=NAME from the transport arguments, else the RDMA device whose port 1
 * sits on the interface holding addr (/sys/class/infiniband). */
int tlm_cli_rdma_dev_for(const char *addr, const char *targs, char *dev, size_t cap)
{
	char ifname[64], path[PATH_MAX], buf[64];
	const char *p = targs ? strstr(targs, "dev=") : NULL;
	struct dirent *de;
	DIR *dir;
	FILE *f;

	if (p && (p == targs || p[-1] == ',')) {
		size_t n = strcspn(p + 4, ",");

		snprintf(dev, cap, "%.*s", (int)n, p + 4);
		return 0;
	}
	if (ifname_of(addr, ifname, sizeof(ifname)))
		return -ENOENT;
	dir = opendir("/sys/class/infiniband");
	while (dir && (de = readdir(dir))) {
		bool hit = false;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/gid_attrs/ndevs/0",
			 de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			buf[strcspn(buf, "\n")] = 0;
			hit = !strcmp(buf, ifname);
		}
		fclose(f);
		if (hit) {
			snprintf(dev, cap, "%s", de->d_name);
			closedir(dir);
			return 0;
		}
	}
	if (dir)
		closedir(dir);
	return -ENOENT;
}

/* Run argv with stdout into out (a file), stderr too; returns the pid. */
static pid_t spawn(char *const argv[], int out)
{
	pid_t pid = fork();

	if (pid == 0) {
		dup2(out, 1);
		dup2(out, 2);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* Exit status of pid, killing it if it runs past deadline_ms. */
static int wait_status(pid_t pid, uint64_t deadline_ms)
{
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0 && errno != EINTR)
			return -1;
		if (tlm_cli_now_ms() > deadline_ms)
			kill(pid, SIGKILL);
		usleep(20000);
	}
}

static void print_output(const char *who, FILE *f)
{
	char line[256];

	rewind(f);
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  %s: %s", who, line);
}

/* The "BW average[MB/sec]" column of ib_write_bw's result row (perftest's
 * MB is 2^20 bytes). */
static int parse_ib(FILE *f, double *mibps)
{
	char line[512];
	bool hdr = false;

	rewind(f);
	while (fgets(line, sizeof(line), f)) {
		double a, b, c, d;

		if (strstr(line, "BW average[MB/sec]")) {
			hdr = true;
			continue;
		}
		if (hdr && sscanf(line, " %lf %lf %lf %lf", &a, &b, &c, &d) == 4) {
			*mibps = d;
			return 0;
		}
	}
	return -EPROTO;
}

int tlm_cli_ib_write_bw(const char *dev, const char *addr, unsigned qps, uint32_t size,
			uint64_t bytes, double *Bps)
{
	char q[16], s[16], n[32], port[16];
	uint64_t iters = bytes / size / qps;
	char *srv[] = { "ib_write_bw", "-d", (char *)dev, "-q", q, "-s", s, "-n", n, "-F",
			"-p", port, NULL };
	char *cli[] = { "ib_write_bw", "-d", (char *)dev, "-q", q, "-s", s, "-n", n, "-F",
			"-p", port, (char *)addr, NULL };
	FILE *so = tmpfile(), *co = tmpfile();
	/* Generous: TCG VMs run perftest slowly too. */
	uint64_t deadline = tlm_cli_now_ms() + 600000;
	double mibps = 0;
	pid_t sp, cp;
	int rc = -EIO, cst = -1, sst = -1;

	if (!so || !co) {
		rc = -errno;
		goto out;
	}
	if (iters < 5)
		iters = 5;
	snprintf(q, sizeof(q), "%u", qps);
	snprintf(s, sizeof(s), "%u", size);
	snprintf(n, sizeof(n), "%llu", (unsigned long long)iters);
	snprintf(port, sizeof(port), "%d", IB_PORT + (int)(getpid() % 1000));
	sp = spawn(srv, fileno(so));
	if (sp < 0) {
		rc = -errno;
		goto out;
	}
	/* The server needs a moment to listen; a refused client is retried. */
	for (int tries = 0; tries < 20; tries++) {
		usleep(tries ? 500000 : 300000);
		if (ftruncate(fileno(co), 0) < 0)
			break;
		rewind(co);
		cp = spawn(cli, fileno(co));
		if (cp < 0)
			break;
		cst = wait_status(cp, deadline);
		if (cst == 0)
			break;
		if (waitpid(sp, &sst, WNOHANG) == sp) {   /* the server gave up */
			sst = WIFEXITED(sst) ? WEXITSTATUS(sst) : 128 + WTERMSIG(sst);
			break;
		}
	}
	if (sst == -1) {
		if (cst != 0)
			kill(sp, SIGTERM);
		sst = wait_status(sp, deadline);
	}
	if (sst != 0 || cst != 0) {
		tlm_cli_err("ib_write_bw failed (client exit %d, server exit %d); their output:",
			    cst, sst);
		print_output("server", so);
		print_output("client", co);
		rc = cst == 127 ? -ENOENT : -EIO;
		goto out;
	}
	rc = parse_ib(co, &mibps);
	if (rc)
		tlm_cli_err("cannot read ib_write_bw's result");
	*Bps = mibps * 1048576.0;
out:
	if (so)
		fclose(so);
	if (co)
		fclose(co);
	return rc;
}

/*
 * --in-vm: the same command inside the Soft-RoCE VM. The runner is found
 * through TLM_VM_RUNNER or in the source tree this binary was built from;
 * the VM sees the host's root read-only, so the binary runs there as is.
 * Returns only on failure, having said why.
 */
void tlm_cli_reexec_in_vm(const char *cmd, int argc, char **argv, const char *flag,
			  const char *vm_addr, bool add_addr)
{
	const char *runner = getenv("TLM_VM_RUNNER");
	char self[PATH_MAX], def[PATH_MAX];
	char **nv = calloc((size_t)argc + 16, sizeof(char *));
	int k = 0;
	ssize_t n;

	if (!nv) {
		tlm_cli_err("%s: out of memory", flag);
		return;
	}
	if (!runner) {
		snprintf(def, sizeof(def), "%s/tests/vm/run-in-vm.sh", TLM_SOURCE_DIR);
		runner = def;
	}
	if (access(runner, X_OK)) {
		tlm_cli_err("%s needs the VM runner %s (tests/vm/run-in-vm.sh of the source tree; "
			    "or set TLM_VM_RUNNER)", flag, runner);
		free(nv);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		tlm_cli_err("%s: cannot find this program (/proc/self/exe): %s", flag,
			    strerror(errno));
		free(nv);
		return;
	}
	self[n] = 0;
	nv[k++] = (char *)runner;
	nv[k++] = "--timeout";
	nv[k++] = "1800";
	nv[k++] = "--";
	nv[k++] = self;
	nv[k++] = (char *)cmd;
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], flag))
			nv[k++] = argv[i];
	if (add_addr) {
		nv[k++] = "--local-addr";
		nv[k++] = (char *)vm_addr;
	}
	nv[k] = NULL;
	fflush(NULL);
	execv(runner, nv);
	tlm_cli_err("cannot run %s: %s", runner, strerror(errno));
	free(nv);
}
