/* SPDX-License-Identifier: MIT */
/* The EAL's start and log capture (eal.c), for the lanes and the raw
 * blast (bench/lib/raw-dpdk.c) alike. Internal: only in a build with the dpdk transport. */
#ifndef TLM_DPDK_EAL_H
#define TLM_DPDK_EAL_H

#include <stddef.h>

/* rte_eal_init(argc, argv), with what it writes on stdout and stderr
 * (its usage text and getopt's complaints when an argument is bad) kept
 * off them, since the library never prints: error lines go to the log at
 * error level, the rest at debug. The two descriptors point elsewhere
 * while it runs, for the whole process: call it before other threads
 * print. Returns what rte_eal_init returns. */
int tlm__dpdk_eal_init(int argc, char **argv);

/* One line of EAL or PMD log output (a log stream's write), to our log at
 * debug level as "<who>: <line>"; held back while tlm__dpdk_eal_init has
 * the process's stdout and stderr (our log callback may print there, and
 * what it printed would come back as EAL output), then logged. */
void tlm__dpdk_log_line(const char *who, const char *buf, size_t n);

/* The first line this thread's EAL or PMD logged at error level or worse
 * since tlm__dpdk_clear_error ("" if none): why a probe failed. */
const char *tlm__dpdk_first_error(void);
void tlm__dpdk_clear_error(void);

#endif
