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
 * No device keys: the embedded default, a memif pair per UDP port (server
 * on the listening side, client on the connecting side, abstract socket
 * "/run/tlm-dpdk-<port>.sock"); a connect to a port this process listens on
 * loops through the server's port in software.
 */
#include "dpdk-internal.h"

/* Splits "k=v,k=v" where a value may be quoted ("..." or '...'). Keys the
 * transport does not know are passed on as devargs of the vdev. */
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

int tlm__dpdk_parse_args(const char *args, struct cfg *c)
{
	char tok[512], item[512];
	const char *p = args;
	char extra[512] = "";

	memset(c, 0, sizeof(*c));
	c->dead_ms = DEFAULT_DEAD_MS;
	c->queues = DEF_QUEUES;
	while (p && *p) {
		size_t n = 0;
		char q = 0;

		while (*p == ',' || *p == ' ')
			p++;
		if (!*p)
			break;
		while (*p && (q || *p != ',')) {
			if (!q && (*p == '"' || *p == '\'')) {
				q = *p++;
				continue;
			}
			if (q && *p == q) {
				q = 0;
				p++;
				continue;
			}
			if (n + 1 >= sizeof(tok))
				return -EINVAL;
			tok[n++] = *p++;
		}
		tok[n] = 0;
		snprintf(item, sizeof(item), "%s", tok);
		char *k = tok, *v;
		if (!strncmp(k, "--", 2))
			k += 2;
		/* dpdk-args=... or "--dpdk-args ...": EAL args may hold '=' */
		if (!strncmp(k, "dpdk-args", 9) && (k[9] == '=' || k[9] == ' ')) {
			if (append(c->eal, sizeof(c->eal), " ", k + 10))
				return -EINVAL;
			continue;
		}
		v = strchr(k, '=');
		if (!v) {
			tlm__err("dpdk: transport_args: '%s' is not key=value", tok);
			return -EINVAL;
		}
		*v++ = 0;
		if (!strcmp(k, "port")) {
			snprintf(c->dev, sizeof(c->dev), "%s", v);
		} else if (!strcmp(k, "vdev")) {
			if (append(c->vdev, sizeof(c->vdev), ",", v))
				goto bad;
		} else if (!strcmp(k, "ip")) {
			struct in_addr a;
			if (inet_pton(AF_INET, v, &a) != 1)
				goto bad;
			c->ip = ntohl(a.s_addr);
		} else if (!strcmp(k, "peer-mac")) {
			if (rte_ether_unformat_addr(v, &c->peer_mac))
				goto bad;
			c->peer_mac_set = true;
		} else if (!strcmp(k, "mtu")) {
			c->mtu = (uint32_t)strtoul(v, NULL, 10);
			if (c->mtu < 576 || c->mtu > 9000)
				goto bad;
		} else if (!strcmp(k, "queues")) {
			c->queues = (unsigned)strtoul(v, NULL, 10);
			if (c->queues < 1 || c->queues > MAX_QUEUES)
				goto bad;
		} else if (!strcmp(k, "window")) {
			char *end;
			unsigned long long w = strtoull(v, &end, 10);
			if (*end == 'K' || *end == 'k')
				w <<= 10, end++;
			else if (*end == 'M' || *end == 'm')
				w <<= 20, end++;
			if (*end || w < (16u << 10) || w > RING_BYTES)
				goto bad;
			c->window = (uint32_t)w;
		} else if (!strcmp(k, "spinners")) {
			c->spinners = (unsigned)strtoul(v, NULL, 10);
			if (c->spinners < 1 || c->spinners > 256)
				goto bad;
		} else if (!strcmp(k, "zc")) {
			if (!strcmp(v, "auto"))
				c->zc = ZC_AUTO;
			else if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "1"))
				c->zc = ZC_ON;
			else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "0"))
				c->zc = ZC_OFF;
			else
				goto bad;
		} else if (!strcmp(k, "dead_ms")) {
			c->dead_ms = atoi(v);
			if (c->dead_ms < 100)
				goto bad;
		} else if (!strcmp(k, "fault")) {
			/* fault=drop=P,reorder=P: the rest arrive as keys of
			 * their own; quoted, they are all in v */
			char *save = NULL;
			for (char *kv = strtok_r(v, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
				char *v2 = strchr(kv, '=');
				if (!v2)
					goto bad;
				*v2++ = 0;
				if (parse_fault_kv(&c->fault, kv, v2))
					goto bad;
			}
		} else if (!strcmp(k, "drop") || !strcmp(k, "reorder") || !strcmp(k, "dup")) {
			if (parse_fault_kv(&c->fault, k, v))
				goto bad;
		} else {
			v[-1] = '=';
			if (append(extra, sizeof(extra), ",", k))
				goto bad;
		}
	}
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
bad:
	tlm__err("dpdk: transport_args: '%s': bad or too long a value", item);
	return -EINVAL;
}
