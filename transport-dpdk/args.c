/* SPDX-License-Identifier: MIT */
/*
 * transport_args for DPDK lanes (comma-separated key=value; values may be
 * quoted), into a struct cfg:
 *   dpdk-args="..."   EAL arguments (first lane of the process only)
 *   port=NAME|PCI     use an already probed port
 *   vdev=NAME,k=v...  create this vdev; keys we do not know (role=,
 *                     socket=, iface=, ...) go to it as devargs
 *   ip=A.B.C.D        our address: turns on ARP and IP filtering (af_packet,
 *                     NICs); without it the port is point-to-point (memif)
 *   peer-mac=MAC      static peer MAC instead of ARP (connecting side)
 *   mtu=N             576..9000 (default: 9000 on the embedded memif, in
 *                     9216-byte buffers, two whole pages a frame; 1500 on
 *                     a device port)
 *   window=N[K|M]     unacked bytes a lane keeps in flight, 16K..2M
 *                     (default WINDOW_PKTS full packets, at most 2M: more
 *                     than a LAN's round trip at 100 Gb/s, few enough that
 *                     the packets kept for re-sends stay in cache and
 *                     memif's 1024-slot rings do not overflow)
 *   spinners=N        callers that may spin-poll at once on the port
 *                     (default: the cores this process may use, half of
 *                     them on memif; set by whoever opens the port first)
 *   queues=N          queue pairs, 1..16 (default 16; ignored by the
 *                     embedded memif server, which offers 16)
 *   dead_ms=N         keepalive silence that fails a lane (default 3000)
 *   zc=auto|on|off    LIVE pages by reference, without crc (NOSUM), and
 *                     NOSUM accepted: auto = on memif only (zc.c)
 *   fault=drop=P,reorder=P,dup=P   fault injection on what we send
 *   flow_refuse=N     test knob: the port's N-th lane rule is refused as
 *                     if by the PMD, after the port accepted steering
 *                     (set by whoever opens the port first)
 *   start_delay_ms=N  test knob: a port this opens starts N ms later, as
 *                     the EAL and a port do under TCG on a loaded host
 * No device keys: the embedded default, a memif pair per UDP port (server
 * on the listening side, client on the connecting side, abstract socket
 * "/run/tlm-dpdk-<port>.sock"); a connect to a port this process listens on
 * loops through the server's port in software.
 */
#include "dpdk-internal.h"

/* drop=P, reorder=P or dup=P, 0 <= P <= 1. */
static int parse_fault_kv(struct fault *f, const char *k, const char *v)
{
	char *end;
	double d = strtod(v, &end);

	if (end == v || *end || !(d >= 0 && d <= 1))
		return -EINVAL;
	if (!strcmp(k, "drop"))
		f->drop = d;
	else if (!strcmp(k, "reorder"))
		f->reorder = d;
	else if (!strcmp(k, "dup"))
		f->dup = d;
	else
		return -EINVAL;
	return 0;
}

static int append(char *dst, size_t cap, const char *sep, const char *s)
{
	size_t n = strlen(dst);
	int r = snprintf(dst + n, cap - n, "%s%s", n ? sep : "", s);

	return r < 0 || (size_t)r >= cap - n ? -EINVAL : 0;
}

/* window=N[K|M] */
/* zc=auto|on|off (yes/no, 1/0) */
static int parse_zc(const char *v, int *zc)
{
	if (!strcmp(v, "auto"))
		*zc = ZC_AUTO;
	else if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "1"))
		*zc = ZC_ON;
	else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "0"))
		*zc = ZC_OFF;
	else
		return -EINVAL;
	return 0;
}

static int parse_window(const char *v, uint32_t *out)
{
	char *end;
	unsigned long long w = strtoull(v, &end, 10);

	if (*end == 'K' || *end == 'k')
		w <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		w <<= 20, end++;
	if (*end || w < (16u << 10) || w > RING_BYTES)
		return -EINVAL;
	*out = (uint32_t)w;
	return 0;
}

/* fault=drop=P,reorder=P: the rest arrive as keys of their own (drop=,
 * ...); quoted, they are all in v. */
static int parse_fault(struct fault *f, char *v)
{
	char *save = NULL;

	for (char *kv = strtok_r(v, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v2 = tlm__kv_split(kv);
		if (!v2 || parse_fault_kv(f, kv, v2))
			return -EINVAL;
	}
	return 0;
}

/* A number in [lo, hi]. */
static int parse_num(const char *v, unsigned long lo, unsigned long hi, unsigned *out)
{
	unsigned long n = strtoul(v, NULL, 10);

	if (n < lo || n > hi)
		return -EINVAL;
	*out = (unsigned)n;
	return 0;
}

/* One key of ours with its value: 0, -EINVAL, or 1 if the key is not
 * ours (a devargs key). */
static int parse_key(struct cfg *c, const char *k, char *v)
{
	struct in_addr a;

	if (!strcmp(k, "port")) {
		snprintf(c->dev, sizeof(c->dev), "%s", v);
		return 0;
	}
	if (!strcmp(k, "vdev"))
		return append(c->vdev, sizeof(c->vdev), ",", v);
	if (!strcmp(k, "ip")) {
		if (inet_pton(AF_INET, v, &a) != 1)
			return -EINVAL;
		c->ip = ntohl(a.s_addr);
		return 0;
	}
	if (!strcmp(k, "peer-mac")) {
		if (rte_ether_unformat_addr(v, &c->peer_mac))
			return -EINVAL;
		c->peer_mac_set = true;
		return 0;
	}
	if (!strcmp(k, "mtu"))
		return parse_num(v, 576, 9000, &c->mtu);
	if (!strcmp(k, "queues"))
		return parse_num(v, 1, MAX_QUEUES, &c->queues);
	if (!strcmp(k, "spinners"))
		return parse_num(v, 1, 256, &c->spinners);
	if (!strcmp(k, "window"))
		return parse_window(v, &c->window);
	if (!strcmp(k, "zc"))
		return parse_zc(v, &c->zc);
	if (!strcmp(k, "dead_ms")) {
		c->dead_ms = atoi(v);
		return c->dead_ms < 100 ? -EINVAL : 0;
	}
	if (!strcmp(k, "flow_refuse"))
		return parse_num(v, 1, 1u << 16, &c->flow_refuse);
	if (!strcmp(k, "start_delay_ms"))
		return parse_num(v, 1, 600000, &c->start_delay_ms);
	if (!strcmp(k, "fault"))
		return parse_fault(&c->fault, v);
	if (!strcmp(k, "drop") || !strcmp(k, "reorder") || !strcmp(k, "dup"))
		return parse_fault_kv(&c->fault, k, v);
	return 1;
}

/* Keys we do not know go to the vdev as its devargs; the port's name is
 * the vdev's; mtu= has a default per kind of port. */
static int finish(struct cfg *c, const char *extra)
{
	if (extra[0]) {
		if (!c->vdev[0]) {
			tlm__err("dpdk: transport_args: device args '%s' without vdev=", extra);
			return -EINVAL;
		}
		if (append(c->vdev, sizeof(c->vdev), ",", extra))
			return -EINVAL;
	}
	if (c->vdev[0] && !c->dev[0]) {
		size_t k = strcspn(c->vdev, ",");
		snprintf(c->dev, sizeof(c->dev), "%.*s", (int)k, c->vdev);
	}
	if (!c->mtu)
		c->mtu = c->dev[0] ? TLM__DPDK_PORT_MTU : TLM__DPDK_MEMIF_MTU;
	return 0;
}

int tlm__dpdk_parse_args(const char *args, struct cfg *c)
{
	char item[512], whole[512], extra[512] = "";
	const char *p = args;
	int r;

	memset(c, 0, sizeof(*c));
	c->dead_ms = DEFAULT_DEAD_MS;
	c->queues = DEF_QUEUES;
	while ((r = tlm__kv_next(&p, item, sizeof(item))) > 0) {
		/* dpdk-args=... or "--dpdk-args ...": EAL args may hold '=' */
		if (!strncmp(item, "dpdk-args", 9) && (item[9] == '=' || item[9] == ' ')) {
			if (append(c->eal, sizeof(c->eal), " ", item + 10))
				return -EINVAL;
			continue;
		}
		snprintf(whole, sizeof(whole), "%s", item);
		char *v = tlm__kv_split(item);
		if (!v) {
			tlm__err("dpdk: transport_args: '%s' is not key=value", whole);
			return -EINVAL;
		}
		r = parse_key(c, item, v);
		if (r == 1)
			r = append(extra, sizeof(extra), ",", whole);
		if (r) {
			tlm__err("dpdk: transport_args: '%s': bad or too long a value", whole);
			return -EINVAL;
		}
	}
	return r < 0 ? r : finish(c, extra);
}

int tlm__dpdk_raw_end(const char *targs, char *eal, size_t ecap, char *vdev, size_t vcap,
		      unsigned *mtu, uint32_t *ip)
{
	struct cfg c;
	int r = tlm__dpdk_parse_args(targs, &c);

	if (r)
		return r;
	if (c.dev[0] && !c.vdev[0])
		return -ENODEV;   /* port=: a probed device, not ours to make */
	if ((size_t)snprintf(eal, ecap, "%s", c.eal) >= ecap ||
	    (size_t)snprintf(vdev, vcap, "%s", c.vdev) >= vcap)
		return -EINVAL;
	*mtu = c.mtu;
	*ip = c.ip;
	return 0;
}
