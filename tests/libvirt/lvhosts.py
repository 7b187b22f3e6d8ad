#!/usr/bin/env python3
"""Two libvirt "hosts" on one machine, for migrating libvirt domains.

Each host is a libvirtd (and its virtlogd) in a network namespace of its own
(a veth pair, 198.18.x.1 <-> 198.18.x.2) and a mount namespace of its own: a
tmpfs on /run, private copies of /etc/libvirt and of /var/{lib,cache,log}/libvirt,
and WORK/host bound to WORK/<name>/hostdir, so one domain XML (its serial log
at WORK/host/serial.log) names a different file on each host. libvirtd listens
on TCP without authentication on the namespace's own address only, has its
own host_uuid (libvirt refuses to migrate to "the same host"), no cgroups
(cgroup_controllers = [ ]), runs QEMU as root without security drivers, and
has /run/tlm (mode 1777) for migration sockets.

    pair = HostPair(workdir, subnet=0)   # 198.18.0.1 and 198.18.0.2
    pair.start()                         # ~8 s: libvirt probes the emulator
    a, b = pair.a, pair.b
    a.virsh('list'); a.popen(['tlm', ...]); a.run([...])
    pair.stop()                          # kills everything in both namespaces

Needs root, ip, unshare, nsenter, libvirtd, virtlogd, virsh.
"""

import os
import shutil
import signal
import subprocess
import time
import uuid


class Host:
    def __init__(self, pair, name, netns, addr):
        self.pair = pair
        self.name = name
        self.netns = netns
        self.addr = addr
        self.dir = os.path.join(pair.work, name)
        self.hostdir = os.path.join(self.dir, 'hostdir')
        self.holder = None

    def _conf(self):
        for sub in ('etc', 'lib', 'cache', 'log/qemu', 'hostdir'):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        etc = os.path.join(self.dir, 'etc')
        shutil.copytree('/etc/libvirt', etc, dirs_exist_ok=True, symlinks=True)
        with open(os.path.join(etc, 'libvirtd.conf'), 'a') as f:
            f.write('\nlisten_tcp = 1\nlisten_tls = 0\nauth_tcp = "none"\n'
                    'listen_addr = "%s"\nhost_uuid = "%s"\n' % (self.addr, uuid.uuid4()))
        with open(os.path.join(etc, 'qemu.conf'), 'a') as f:
            f.write('\ncgroup_controllers = [ ]\nstdio_handler = "file"\n'
                    'user = "root"\ngroup = "root"\ndynamic_ownership = 0\n'
                    'security_driver = "none"\n')

    def start(self):
        self._conf()
        d = self.dir
        script = '\n'.join([
            'set -e',
            'mount -t tmpfs tmpfs /run',
            'mount --bind %s/etc /etc/libvirt' % d,
            'mount --bind %s/lib /var/lib/libvirt' % d,
            'mount --bind %s/cache /var/cache/libvirt' % d,
            'mount --bind %s/log /var/log/libvirt' % d,
            'mount --bind %s %s' % (self.hostdir, self.pair.hostmount),
            'mkdir -p /run/tlm /run/libvirt && chmod 1777 /run/tlm',
            'hostname %s' % self.name,
            'virtlogd -d',
            'libvirtd -d --listen',
            'exec sleep infinity',
        ])
        self.holder = subprocess.Popen(
            ['ip', 'netns', 'exec', self.netns, 'unshare', '--mount', '--uts',
             '--propagation', 'private', 'bash', '-c', script],
            stdin=subprocess.DEVNULL, stdout=open(os.path.join(d, 'holder.log'), 'w'),
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout=90):
        end = time.time() + timeout
        while time.time() < end:
            if self.holder.poll() is not None:
                raise RuntimeError('host %s: its namespace ended: %s' % (
                    self.name, open(os.path.join(self.dir, 'holder.log')).read()[-1500:]))
            r = self.run(['virsh', '-c', 'qemu:///system', 'version'], check=False)
            if r.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError('host %s: libvirtd did not answer within %d s: %s' % (
            self.name, timeout, open(os.path.join(self.dir, 'holder.log')).read()[-1500:]))

    def enter(self):
        return ['nsenter', '-t', str(self.holder.pid), '-m', '-n', '-u']

    def run(self, argv, check=True, timeout=120, **kw):
        r = subprocess.run(self.enter() + list(argv), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout, **kw)
        if check and r.returncode:
            raise RuntimeError('%s on %s: exit %d: %s' % (' '.join(argv), self.name,
                                                         r.returncode, r.stderr.strip()))
        return r

    def popen(self, argv, log):
        f = open(log, 'w')
        return subprocess.Popen(self.enter() + list(argv), stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT)

    def virsh(self, *args, check=True):
        return self.run(['virsh', '-c', 'qemu:///system'] + list(args), check=check)

    def domain_state(self, dom):
        r = self.virsh('domstate', dom, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def serial(self):
        return os.path.join(self.hostdir, 'serial.log')

    def pids(self):
        r = subprocess.run(['ip', 'netns', 'pids', self.netns], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]


class HostPair:
    def __init__(self, work, subnet=0):
        self.work = work
        tag = '%d' % (os.getpid() % 100000)
        self.hostmount = os.path.join(work, 'host')
        os.makedirs(self.hostmount, exist_ok=True)
        base = '198.18.%d.' % subnet
        self.a = Host(self, 'A', 'tlmlvA' + tag, base + '1')
        self.b = Host(self, 'B', 'tlmlvB' + tag, base + '2')
        self.veth = ('lva' + tag, 'lvb' + tag)

    def start(self):
        a, b = self.a, self.b
        sh = lambda *c: subprocess.run(c, check=True, capture_output=True)
        for h in (a, b):
            sh('ip', 'netns', 'add', h.netns)
            sh('ip', '-n', h.netns, 'link', 'set', 'lo', 'up')
        sh('ip', 'link', 'add', self.veth[0], 'type', 'veth', 'peer', 'name', self.veth[1])
        for h, v in ((a, self.veth[0]), (b, self.veth[1])):
            sh('ip', 'link', 'set', v, 'netns', h.netns)
            sh('ip', '-n', h.netns, 'addr', 'add', h.addr + '/30', 'dev', v)
            sh('ip', '-n', h.netns, 'link', 'set', v, 'up')
        for h in (a, b):
            h.start()
        for h in (a, b):
            h.wait_ready()

    def shape(self, rate):
        """Limit A -> B to rate (e.g. '200mbit'), so a migration takes a while."""
        subprocess.run(['ip', 'netns', 'exec', self.a.netns, 'tc', 'qdisc', 'add', 'dev',
                        self.veth[0], 'root', 'tbf', 'rate', rate, 'burst', '256kb',
                        'latency', '100ms'], check=True, capture_output=True)

    def stop(self):
        for h in (self.a, self.b):
            for _ in range(3):
                pids = h.pids()
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.3)
            if h.holder:
                try:
                    h.holder.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            subprocess.run(['ip', 'netns', 'del', h.netns], capture_output=True)
