"""The cluster harness: N `strom` processes on loopback (each controller + broker, random
ports, a temp dir each), which the tests can kill (-9), stop (SIGTERM), pause (SIGSTOP),
resume and restart, and whose state they wait on with deadlines, never with fixed sleeps.

With `netns=True` each node runs in its own network namespace instead (`ip netns`, one veth
per node on a bridge that the test process also sits on), so a node can be cut off from the
other nodes while the clients still reach it: `cut(node_id)` / `heal(node_id)`. This needs
root and iproute2; `Network.available()` says whether this machine has them.

Used by tests/cluster (pytest) and by the chaos soak (`python -m tests.harness.chaos`)."""

import os
import shutil
import signal
import socket
import subprocess
import time

STROM = os.environ.get(
    "STROM_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/debug/strom")
)


_handed_out = set()


def free_port():
    """A port free now, and never one this process handed out before: two calls can get the
    same port back from the kernel once the probe socket is closed (a node once got its
    metrics port equal to its controller port, and could not start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(what, check, timeout=30.0, interval=0.05):
    """Polls `check` until it returns a truthy value; raises with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the condition is not met yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


class ClusterNode:
    def __init__(self, cluster, node_id):
        self.cluster = cluster
        self.node_id = node_id
        net = cluster.network
        if net is None:
            self.host = "127.0.0.1"
            self.kafka_port = free_port()
            self.controller_port = free_port()
            self.metrics_port = free_port()
        else:
            # A namespace of its own: its own address, so the usual ports.
            self.host = net.address(node_id)
            self.kafka_port, self.controller_port, self.metrics_port = 9092, 9093, 9464
        self.dir = os.path.join(cluster.base_dir, f"node{node_id}")
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "strom.log")
        self.proc = None
        self.paused = False
        # An exit code a test expects (a node that stops itself on purpose): not an error.
        self.expected_exit = None
        # Extra environment for the process (e.g. FAILPOINTS, in a build with failpoints).
        self.env = {}

    @property
    def bootstrap(self):
        return f"{self.host}:{self.kafka_port}"

    @property
    def data_dir(self):
        return os.path.join(self.dir, "data")

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        assert not self.is_running(), f"node {self.node_id} is already running"
        h = self.host
        args = [
            STROM, "server",
            "--override", f"node.id={self.node_id}",
            "--override", f"listeners=PLAINTEXT://{h}:{self.kafka_port},CONTROLLER://{h}:{self.controller_port}",
            "--override", f"controller.quorum.voters={self.cluster.voters}",
            "--override", f"log.dirs={self.data_dir}",
            "--override", f"metrics.listener={h}:{self.metrics_port}",
        ]
        if self.cluster.network is not None:
            # `ip netns exec` execs the program: the child's pid is strom's, so signals reach it.
            args = ["ip", "netns", "exec", self.cluster.network.namespace(self.node_id)] + args
        for kv in self.cluster.extra:
            args += ["--override", kv]
        for kv in (self.cluster.per_node(self) if self.cluster.per_node else []):
            args += ["--override", kv]
        log = open(self.log_path, "ab")
        log.write(f"---- start {time.time():.3f}\n".encode())
        log.flush()
        # STROM_* variables are config keys to a node; STROM_BIN is ours, not its.
        env = {k: v for k, v in os.environ.items() if k != "STROM_BIN"}
        env.update(self.env)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.paused = False
        return self

    def mark(self, event):
        """Writes `---- <event> <time>` into the node's log, so a failure can be read in order."""
        with open(self.log_path, "ab") as log:
            log.write(f"---- {event} {time.time():.3f}\n".encode())

    def signal(self, sig):
        if self.is_running():
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL: no controlled shutdown, no flush."""
        if self.is_running():
            self.mark("kill")
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.paused = False

    def stop(self, timeout=20):
        """SIGTERM: a controlled shutdown."""
        if self.is_running():
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def pause(self):
        self.mark("pause")
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.mark("resume")
        self.signal(signal.SIGCONT)
        self.paused = False

    def restart(self):
        self.kill()
        return self.start()

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def partition_log_bytes(self, topic, partition):
        """The concatenated .log segments of one partition replica, in offset order."""
        d = os.path.join(self.data_dir, f"{topic}-{partition}")
        out = b""
        for name in sorted(f for f in os.listdir(d) if f.endswith(".log")):
            with open(os.path.join(d, name), "rb") as f:
                out += f.read()
        return out


class Cluster:
    """N nodes, each a controller (voter) and a broker."""

    def __init__(self, base_dir, n=3, extra=(), netns=False, per_node=None):
        self.base_dir = base_dir
        self.extra = list(extra)
        # per_node(node) -> ["key=value", …]: overrides that differ per node (its own ports).
        self.per_node = per_node
        self.network = Network(n) if netns else None
        self.nodes = {}
        for i in range(1, n + 1):
            self.nodes[i] = ClusterNode(self, i)
        self.voters = ",".join(f"{i}@{nd.host}:{nd.controller_port}" for i, nd in self.nodes.items())

    def node(self, node_id):
        return self.nodes[node_id]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values() if n.is_running() and not n.paused)

    def start(self, timeout=60):
        for n in self.nodes.values():
            n.start()
        self.wait_for_brokers(len(self.nodes), timeout=timeout)
        return self

    def stop(self):
        for n in self.nodes.values():
            n.kill()
        if self.network is not None:
            self.network.remove()

    def cut(self, node_id):
        """Cuts `node_id` off from every other node (both ways); clients still reach it."""
        self.node(node_id).mark("cut")
        self.network.cut(node_id)

    def heal(self, node_id):
        self.node(node_id).mark("heal")
        self.network.heal(node_id)

    def check_alive(self):
        for n in self.nodes.values():
            if (n.proc is not None and n.proc.poll() is not None
                    and n.proc.returncode not in (0, -9, -15, n.expected_exit)):
                raise AssertionError(f"node {n.node_id} exited with {n.proc.returncode}:\n{n.log_tail()}")

    def admin(self):
        from confluent_kafka.admin import AdminClient
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def metadata(self, timeout=3):
        self.check_alive()
        return self.admin().list_topics(timeout=timeout)

    def wait_for_brokers(self, count, timeout=60):
        wait_until(f"{count} live brokers", lambda: len(self.metadata().brokers) == count, timeout=timeout)

    def create_topic(self, name, partitions=1, rf=3, config=None, timeout=30):
        from confluent_kafka.admin import NewTopic
        admin = self.admin()  # kept alive until the future resolves
        fs = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
            operation_timeout=timeout,
        )
        fs[name].result(timeout=timeout)
        wait_until(f"{name} to have leaders", lambda: all(
            p.leader >= 0 for p in self.metadata().topics[name].partitions.values()
        ) and len(self.metadata().topics[name].partitions) == partitions, timeout=timeout)

    def partitions(self, topic):
        """{partition: (leader, replicas, isr)} from a fresh Metadata request."""
        t = self.metadata().topics[topic]
        if t.error is not None:
            raise AssertionError(f"metadata for {topic}: {t.error}")
        return {p.id: (p.leader, list(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}

    def leader_of(self, topic, partition):
        return self.partitions(topic)[partition][0]

    def wait_full_isr(self, topic, timeout=60):
        """Every partition led and its ISR full, as every running node answers: a node just
        resumed from a pause answers from its old image for a moment, and must not be the
        only one asked."""
        from confluent_kafka.admin import AdminClient

        def full():
            self.check_alive()
            for n in self.nodes.values():
                if not n.is_running() or n.paused:
                    continue
                t = AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(topic, timeout=3).topics[topic]
                if t.error is not None:
                    return False
                if not all(p.leader >= 0 and sorted(p.replicas) == sorted(p.isrs) for p in t.partitions.values()):
                    return False
            return True
        wait_until(f"every partition of {topic} to have a full ISR", full, timeout=timeout)


class Network:
    """One network namespace per node, each with a veth on a bridge in the test's own
    namespace: 10.213.X.1 is the test process (the clients), 10.213.X.(1+i) is node i.

    A cut is a pair of blackhole routes per other node (in the cut node's namespace and in
    the other's), so packets between them are dropped in both directions, as on a real
    partition: established connections stall until their timeouts rather than being reset.
    The clients' address is never blackholed."""

    @staticmethod
    def available():
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        try:
            probe = f"stromprobe{os.getpid()}"
            subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True)
            subprocess.run(["ip", "netns", "del", probe], check=True, capture_output=True)
            return True
        except (subprocess.CalledProcessError, OSError):
            return False

    def __init__(self, n):
        self.n = n
        self.tag = os.getpid() % 200 + 20  # the third octet and the names' suffix
        self.bridge = f"sbr{self.tag}"
        self.cuts = set()
        self._forward_rule = None
        self._create()

    def namespace(self, i):
        return f"strom{self.tag}n{i}"

    def address(self, i):
        return f"10.213.{self.tag}.{1 + i}"

    def _ip(self, *args, ns=None, check=True):
        cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def _create(self):
        self.remove()  # leftovers of an earlier run with the same tag
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"10.213.{self.tag}.1/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        # Docker sets the FORWARD policy to DROP and bridged packets pass through iptables
        # (br_netfilter): let node-to-node packets cross our bridge.
        if shutil.which("iptables"):
            rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
            if subprocess.run(["iptables", "-I"] + rule, capture_output=True).returncode == 0:
                self._forward_rule = rule
        for i in range(1, self.n + 1):
            ns, veth = self.namespace(i), f"sv{self.tag}n{i}"
            self._ip("netns", "add", ns)
            self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip("link", "set", veth, "master", self.bridge, "up")
            self._ip("addr", "add", f"{self.address(i)}/24", "dev", "eth0", ns=ns)
            self._ip("link", "set", "eth0", "up", ns=ns)
            self._ip("link", "set", "lo", "up", ns=ns)

    def _blackhole(self, verb, i):
        for j in range(1, self.n + 1):
            if j != i:
                self._ip("route", verb, "blackhole", f"{self.address(j)}/32", ns=self.namespace(i))
                self._ip("route", verb, "blackhole", f"{self.address(i)}/32", ns=self.namespace(j))

    def cut(self, i):
        assert i not in self.cuts, f"node {i} is already cut off"
        self._blackhole("add", i)
        self.cuts.add(i)

    def heal(self, i):
        self._blackhole("del", i)
        self.cuts.discard(i)

    def remove(self):
        for i in range(1, self.n + 1):
            self._ip("netns", "del", self.namespace(i), check=False)  # takes its veth along
        self._ip("link", "del", self.bridge, check=False)
        if self._forward_rule is not None:
            subprocess.run(["iptables", "-D"] + self._forward_rule, capture_output=True)
            self._forward_rule = None
