#!/usr/bin/env python3
"""mychat's fault suite: a real 3-node nats-server cluster, PostgreSQL and two mychat
nodes on loopback, five faults under steady command and chat load, and an independent reader.

Run through `scripts/chaos` (installs the Python packages and builds mychat first).

Layout (every port a free loopback port):
  nats-1..3   nats-server -c nats-cluster.conf (the project's nats.conf + cluster block + accounts);
              mychat creates EVENTS, the chat shards and the presence bucket with 3 replicas
  postgres    one PostgreSQL 15 cluster
  node A      mychat serve api | admin | gateway | projectors   (four processes)
  node B      mychat serve api | gateway | projectors           (three processes)
The two projector processes compete for each projection's advisory lock: one is active, the other
a hot standby.

Load (bounded, loopback only): commands `POST /api/order/create` with a fresh `Idempotency-Key`,
alternating between the two API nodes (about 10 a second, at most 8 in flight, 5 s timeout), and
chat messages on three sessions, each sent on a WebSocket to one of the gateways (about 4 a second
per session), each waiting for its `ack`.

Scenarios, one after another, each with load before, during and after the fault:
  1. SIGKILL the EVENTS stream leader, restart it;
  2. SIGKILL every process of node B while requests are in flight, restart them;
  3. SIGKILL the active projector process mid-batch, restart it;
  4. restart PostgreSQL (fast shutdown, start again);
  5. SIGSTOP the EVENTS stream leader for 10 s (past the election timeout), SIGCONT.

The independent reader (this file: nats-py and psycopg, none of mychat's code) then checks, after
every scenario:
  - every command answered 2xx has exactly one commit in EVENTS (header `Mychat-Command-Id` ends
    with its key), and its order is in the `orders` read model;
  - every command answered 5xx / timed out / cut off has zero or one commit, and a retry with the
    same `Idempotency-Key` settles it (2xx or a clear 4xx), after which the count is exactly one
    for a 2xx;
  - every chat message acked to a socket is in the chat streams exactly once (header
    `Nats-Msg-Id`);
  - the read models converge to a fresh replay (`mychat audit replay` at the last EVENTS sequence,
    then `mychat audit diff` against the live schema finds no difference);
  - `mychat finance reconcile` exits 0.
The last line is JSON: {"chaos":"done","scenarios":5,"acked":…,"lost":0,"duplicated":0,"diverged":0}
"""

import asyncio
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, ".tools", "py"))

import httpx  # noqa: E402
import nats  # noqa: E402
import psycopg  # noqa: E402
import websockets  # noqa: E402
from nats.js.api import DeliverPolicy  # noqa: E402

BIN = os.environ.get("MYCHAT_BIN", os.path.join(ROOT, "target", "debug", "mychat"))
NATS_BIN = os.environ.get("NATS_SERVER_BIN", os.path.join(ROOT, ".tools", "bin", "nats-server"))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER = "mychat"
COUNSELOR_PASSWORD = "counselor123"
SECRETS = {
    "MYCHAT_NATS_PASSWORD": "chaos-mychat-" + uuid.uuid4().hex,
    "NATS_OPS_PASSWORD": "chaos-ops-" + uuid.uuid4().hex,
    "NATS_SYS_PASSWORD": "chaos-sys-" + uuid.uuid4().hex,
}


def log(*args):
    print(f"[chaos {time.strftime('%H:%M:%S')}]", *args, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}; see {proc.log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout} s")


class Proc:
    """A child process with a log file; started, signalled and restarted by name."""

    def __init__(self, name, argv, env, logdir, user=None, port=None):
        self.name, self.argv, self.env, self.user, self.port = name, argv, env, user, port
        self.log = os.path.join(logdir, f"{name}.log")
        self.p = None

    def start(self):
        out = open(self.log, "ab")
        kwargs = {}
        if self.user:
            kwargs["user"] = self.user
            kwargs["group"] = self.user
        self.p = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out,
                                  stdin=subprocess.DEVNULL, **kwargs)
        if self.port:
            wait_port(self.port, proc=self)

    def poll(self):
        return self.p.poll() if self.p else 0

    @property
    def returncode(self):
        return self.p.returncode if self.p else None

    @property
    def pid(self):
        return self.p.pid

    def send(self, sig):
        if self.p and self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def kill(self):
        self.send(signal.SIGKILL)
        if self.p:
            self.p.wait()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if not self.p or self.p.poll() is not None:
            return
        self.send(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Env:
    """The whole deployment: 3 nats-servers, PostgreSQL, node A and node B."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.logs = os.path.join(tmp, "logs")
        os.makedirs(self.logs)
        self.nats_ports = [free_port() for _ in range(3)]
        self.route_ports = [free_port() for _ in range(3)]
        self.pg_port = free_port()
        self.nats = []
        base = dict(os.environ)
        base.update(SECRETS)
        for i in range(3):
            env = dict(base)
            env.update({
                "NATS_SERVER_NAME": f"nats-{i + 1}",
                "NATS_CLUSTER_LISTEN": f"127.0.0.1:{self.route_ports[i]}",
            })
            for j in range(3):
                env[f"NATS_ROUTE_{j + 1}"] = f"nats-route://127.0.0.1:{self.route_ports[j]}"
            store = os.path.join(tmp, f"nats-{i + 1}")
            os.makedirs(store)
            self.nats.append(Proc(
                f"nats-{i + 1}",
                [NATS_BIN, "-c", os.path.join(ROOT, "nats-cluster.conf"), "-a", "127.0.0.1",
                 "-p", str(self.nats_ports[i]), "-sd", store],
                env, self.logs, port=self.nats_ports[i]))
        # PostgreSQL (as the `postgres` user when running as root).
        self.pg_data = os.path.join(tmp, "pg")
        self.pg_user = None
        if os.geteuid() == 0:
            self.pg_user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(tmp, 0o755)
            os.chown(self.logs, pw.pw_uid, pw.pw_gid)
        self.pg = Proc("postgres", [os.path.join(PG_BIN, "postgres"), "-D", self.pg_data,
                                    "-p", str(self.pg_port), "-c", "listen_addresses=127.0.0.1",
                                    "-c", "max_connections=300", "-c", "unix_socket_directories="],
                       dict(os.environ), self.logs, user=self.pg_user, port=self.pg_port)
        self.database_url = f"postgres://{PG_USER}@127.0.0.1:{self.pg_port}/mychat"
        self.jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
        self.ports = {k: free_port() for k in
                      ["api_a", "admin_a", "ws_a", "m_a", "api_b", "ws_b", "m_b", "m_up",
                       "up_api", "up_admin", "up_ws"]}
        self.parts = {}

    def nats_urls(self, order):
        return ",".join(f"nats://127.0.0.1:{self.nats_ports[i]}" for i in order)

    def mychat_env(self, node, order, extra=None):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("MYCHAT_"):
                del env[k]
        data = os.path.join(self.tmp, f"node-{node}")
        os.makedirs(data, exist_ok=True)
        env.update({
            "MYCHAT_NATS_URL": self.nats_urls(order),
            "MYCHAT_NATS_USER": "mychat",
            "MYCHAT_NATS_PASSWORD": SECRETS["MYCHAT_NATS_PASSWORD"],
            "MYCHAT_STREAM_REPLICAS": "3",
            "MYCHAT_DATABASE_URL": self.database_url,
            "MYCHAT_DATA_DIR": data,
            "MYCHAT_LOG_FORMAT": "json",
            "MYCHAT_JWT_SECRET": self.jwt_secret,
            "MYCHAT_SANDBOX_SECRET": "chaos-sandbox-secret",
            # The load pays with the sandbox provider; `serve api` fails closed without it.
            "MYCHAT_PAYMENTS__SANDBOX": "true",
            "MYCHAT_PUBLIC_URL": f"http://127.0.0.1:{self.ports['api_a']}",
            "RUST_LOG": "info,sqlx=warn,async_nats=warn,tower_http=warn",
        })
        env.update(extra or {})
        return env

    def part(self, name, node, order, args, port, extra=None):
        p = Proc(name, [BIN] + args, self.mychat_env(node, order, extra), self.logs, port=port)
        self.parts[name] = p
        return p

    def start_infra(self):
        for n in self.nats:
            n.start()
        # initdb
        os.makedirs(self.pg_data)
        if self.pg_user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.pg_data, pw.pw_uid, pw.pw_gid)
        subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", self.pg_data, "-U", PG_USER,
                        "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, stdout=subprocess.DEVNULL, user=self.pg_user,
                       group=self.pg_user)
        self.pg.start()
        for _ in range(100):
            r = subprocess.run([os.path.join(PG_BIN, "createdb"), "-h", "127.0.0.1", "-p",
                                str(self.pg_port), "-U", PG_USER, "mychat"],
                               capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.2)

    def start_mychat(self):
        p = self.ports
        # One `mychat up` against the cluster: migrations, streams (R3) and the demo data; stopped.
        seed = Proc("seed-up", [BIN, "up"], self.mychat_env("seed", [0, 1, 2], {
            "MYCHAT_USER_ADDR": f"127.0.0.1:{p['up_api']}",
            "MYCHAT_ADMIN_ADDR": f"127.0.0.1:{p['up_admin']}",
            "MYCHAT_WS_ADDR": f"127.0.0.1:{p['up_ws']}",
            "MYCHAT_METRICS_ADDR": f"127.0.0.1:{p['m_up']}",
        }), self.logs, port=p["up_api"])
        try:
            seed.start()
        finally:
            seed.stop()
        a, b = [0, 1, 2], [1, 2, 0]
        m_a = {"MYCHAT_METRICS_ADDR": f"127.0.0.1:{p['m_a']}"}
        m_b = {"MYCHAT_METRICS_ADDR": f"127.0.0.1:{p['m_b']}"}
        # Projectors of node A first: they take the advisory locks (node B's are the standby).
        self.part("a-projectors", "a", a, ["serve", "projectors"], p["m_a"], m_a).start()
        self.part("a-api", "a", a, ["serve", "api", "--addr", f"127.0.0.1:{p['api_a']}"],
                  p["api_a"], m_a).start()
        self.part("a-admin", "a", a, ["serve", "admin", "--addr", f"127.0.0.1:{p['admin_a']}"],
                  p["admin_a"], m_a).start()
        self.part("a-gateway", "a", a, ["serve", "gateway", "--addr", f"127.0.0.1:{p['ws_a']}"],
                  p["ws_a"], m_a).start()
        self.part("b-projectors", "b", b, ["serve", "projectors"], p["m_b"], m_b).start()
        self.part("b-api", "b", b, ["serve", "api", "--addr", f"127.0.0.1:{p['api_b']}"],
                  p["api_b"], m_b).start()
        self.part("b-gateway", "b", b, ["serve", "gateway", "--addr", f"127.0.0.1:{p['ws_b']}"],
                  p["ws_b"], m_b).start()

    def mychat_cmd(self, args, timeout=180):
        env = self.mychat_env("ops", [0, 1, 2])
        return subprocess.run([BIN] + args, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def stop_all(self):
        for p in list(self.parts.values()):
            p.stop()
        self.pg.stop(signal.SIGINT)
        for n in self.nats:
            n.send(signal.SIGCONT)
            n.stop()


# ---------------------------------------------------------------------------------------------
# The independent reader: nats-py and psycopg only.


class Reader:
    def __init__(self, env):
        self.env = env

    async def connect(self):
        return await nats.connect(
            servers=[f"nats://127.0.0.1:{p}" for p in self.env.nats_ports],
            user="ops", password=SECRETS["NATS_OPS_PASSWORD"], connect_timeout=5,
            max_reconnect_attempts=-1, allow_reconnect=True)

    async def stream_leader(self, stream="EVENTS"):
        nc = await self.connect()
        try:
            js = nc.jetstream()
            for _ in range(100):
                try:
                    info = await js.stream_info(stream)
                    if info.cluster and info.cluster.leader:
                        return info.cluster.leader, info.config.num_replicas
                except Exception:
                    pass
                await asyncio.sleep(0.2)
            raise RuntimeError(f"{stream} has no leader")
        finally:
            await nc.close()

    async def chat_streams(self):
        """The chat streams (the shards `CHAT_1`..`CHAT_N`, and a legacy `CHAT` if any), read
        from the server, not from mychat's code."""
        nc = await self.connect()
        try:
            infos = await nc.jetstream().streams_info()
            return sorted(i.config.name for i in infos if i.config.name.startswith("CHAT"))
        finally:
            await nc.close()

    async def last_seq(self, stream):
        nc = await self.connect()
        try:
            return (await nc.jetstream().stream_info(stream)).state.last_seq
        finally:
            await nc.close()

    async def header_counts(self, stream, subject, header):
        """Reads the whole stream from sequence 1 and counts the records per `header` value: a
        one-record message's header, and in a pack (a message with `Mychat-Pack`: a JSON array of
        `{subject, kind, dedup_id, record}`) each entry's `dedup_id` (what the one-record format
        puts in `Nats-Msg-Id`)."""
        nc = await self.connect()
        counts = {}
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            last = info.state.last_seq
            if info.state.messages == 0:
                return counts, last
            done = asyncio.Event()

            async def on_msg(msg):
                headers = msg.headers or {}
                if "Mychat-Pack" in headers and header == "Nats-Msg-Id":
                    values = [entry["dedup_id"] for entry in json.loads(msg.data)]
                else:
                    values = [headers[header]] if header in headers else []
                for value in values:
                    counts[value] = counts.get(value, 0) + 1
                if msg.metadata.sequence.stream >= last:
                    done.set()

            sub = await js.subscribe(subject, stream=stream, ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL, cb=on_msg,
                                     idle_heartbeat=2.0)
            await asyncio.wait_for(done.wait(), 120)
            await sub.unsubscribe()
            return counts, last
        finally:
            await nc.close()

    async def privileges_denied(self):
        """The services' NATS user may not delete or purge a stream, delete a stored message,
        nor read the system account: returns the operations that were (wrongly) allowed."""
        nc = await nats.connect(
            servers=[f"nats://127.0.0.1:{p}" for p in self.env.nats_ports],
            user="mychat", password=SECRETS["MYCHAT_NATS_PASSWORD"], connect_timeout=5,
            error_cb=quiet)
        allowed = []
        try:
            js = nc.jetstream(timeout=2)
            for name, op in [
                ("delete EVENTS", lambda: js.delete_stream("EVENTS")),
                ("purge CHAT_1", lambda: js.purge_stream("CHAT_1")),
                ("delete EVENTS message 1", lambda: js.delete_msg("EVENTS", 1)),
            ]:
                try:
                    await op()
                    allowed.append(name)
                except Exception:
                    pass
            try:
                await nc.request("$SYS.REQ.SERVER.PING", b"", timeout=1)
                allowed.append("system account request")
            except Exception:
                pass
        finally:
            await nc.close()
        return allowed

    def query(self, sql, params=()):
        with psycopg.connect(self.env.database_url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------------------------------------
# Load.


class Load:
    def __init__(self, env):
        self.env = env
        self.apis = [f"http://127.0.0.1:{env.ports['api_a']}",
                     f"http://127.0.0.1:{env.ports['api_b']}"]
        self.gateways = [f"ws://127.0.0.1:{env.ports['ws_a']}",
                         f"ws://127.0.0.1:{env.ports['ws_b']}"]
        self.users = []  # (user_id, token)
        self.counselor_id = None
        self.sessions = []  # (session_id, user_id, token, gateway index)
        self.commands = {}  # key -> {"user": id, "token": t, "body": b, "status": s, "order_id"}
        self.acked = {}  # Nats-Msg-Id -> scenario
        self.unacked = 0  # messages given up on after 20 sends (none acked)
        self.retried = 0  # resends after an error frame or a timeout
        self.resent_duplicates = 0  # acks that said `duplicate`: a resend of a stored message
        self.running = False

    async def call(self, client, method, url, token=None, body=None, key=None, timeout=10.0):
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        r = await client.request(method, url, json=body, headers=headers, timeout=timeout)
        return r.status_code, (r.json() if r.content else {})

    async def ok(self, client, method, url, token=None, body=None):
        status, b = await self.call(client, method, url, token, body)
        if status // 100 != 2 or b.get("code") != 200:
            raise RuntimeError(f"{method} {url} -> {status} {b}")
        return b.get("data")

    async def setup(self):
        api = self.apis[0]
        async with httpx.AsyncClient() as c:
            counselors = []
            for n in (1, 2, 3):
                data = await self.ok(c, "POST", f"{api}/api/login", body={
                    "username": f"counselor{n}", "password": COUNSELOR_PASSWORD})
                counselors.append(data["user"]["counselor_id"])
            self.counselor_id = counselors[0]
            for i in range(3):
                name = f"chaos_{uuid.uuid4().hex[:10]}"
                reg = await self.ok(c, "POST", f"{api}/api/register",
                                    body={"username": name, "password": "chaos-password-1"})
                login = await self.ok(c, "POST", f"{api}/api/login",
                                      body={"username": name, "password": "chaos-password-1"})
                self.users.append((reg["user_id"], login["token"]))
            # One paid session per user, each with another counselor: 120 minutes prepaid.
            for i, (uid, token) in enumerate(self.users):
                order = await self.ok(c, "POST", f"{api}/api/order/create", token, {
                    "counselor_id": counselors[i], "duration": 120,
                    "schedule_time": schedule(), "notes": "chaos chat"})
                pay = await self.ok(c, "POST", f"{api}/api/payment/create", token, {
                    "order_id": order["order_id"], "payment_method": "sandbox",
                    "trade_type": "NATIVE"})
                r = await c.get(pay["pay_url"], timeout=10)
                assert r.status_code == 200, r.text
                for _ in range(200):
                    o = await self.ok(c, "GET", f"{api}/api/order/{order['order_id']}", token)
                    if o["status"] == 1:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the chat order was not paid")
                started = await self.ok(c, "POST", f"{api}/api/chat/start/{order['order_id']}",
                                        token, {})
                self.sessions.append((started["session_id"], uid, token, i % 2))

    # -- commands ---------------------------------------------------------------------------

    async def command_loop(self, scenario, stop):
        sem = asyncio.Semaphore(8)
        n = 0
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as c:
            tasks = set()
            while not stop.is_set():
                n += 1
                await sem.acquire()
                t = asyncio.create_task(self.one_command(c, scenario, n % 2, sem))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                await asyncio.sleep(0.1)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def one_command(self, c, scenario, node, sem):
        try:
            uid, token = random.choice(self.users)
            key = f"chaos-{uuid.uuid4().hex}"
            body = {"counselor_id": self.counselor_id, "duration": 30,
                    "schedule_time": schedule(), "notes": f"chaos {scenario}"}
            cmd = {"user": uid, "token": token, "body": body, "scenario": scenario,
                   "status": None, "order_id": None, "retries": 0}
            self.commands[key] = cmd
            try:
                status, b = await self.call(c, "POST", f"{self.apis[node]}/api/order/create",
                                            token, body, key, timeout=5.0)
                cmd["status"] = status
                if status // 100 == 2:
                    cmd["order_id"] = b["data"]["order_id"]
            except Exception as e:  # timeout, connection reset, refused: uncertain
                cmd["status"] = f"error:{type(e).__name__}"
        finally:
            sem.release()

    async def settle(self, scenario):
        """Retries every uncertain command (5xx, timeout, cut off) with the same Idempotency-Key
        until it gets an answer that is not a 5xx. Returns how many were uncertain."""
        pending = [k for k, v in self.commands.items()
                   if v["scenario"] == scenario and not is_settled(v["status"])]
        async with httpx.AsyncClient() as c:
            for key in pending:
                cmd = self.commands[key]
                cmd["first_status"] = cmd["status"]
                deadline = time.time() + 120
                attempt = 0
                while time.time() < deadline:
                    attempt += 1
                    cmd["retries"] += 1
                    try:
                        status, b = await self.call(
                            c, "POST", f"{self.apis[attempt % 2]}/api/order/create",
                            cmd["token"], cmd["body"], key, timeout=10.0)
                    except Exception as e:
                        status, b = f"error:{type(e).__name__}", {}
                    cmd["status"] = status
                    if isinstance(status, int) and status // 100 == 2:
                        cmd["order_id"] = b["data"]["order_id"]
                    # 409: the first attempt is still running (or its key still held): again.
                    if is_settled(status) and status != 409:
                        break
                    await asyncio.sleep(0.5)
        return len(pending)

    # -- chat --------------------------------------------------------------------------------

    async def send_one(self, ws, scenario, session_id, uid):
        """Sends one message and waits for its ack; on an `error` frame or a timeout it resends
        with the same `client_msg_id` (as the contract tells clients to), up to 20 times. A
        broken socket raises: the caller reconnects and starts a new message."""
        mid = f"chaos-{scenario}-{uuid.uuid4().hex[:12]}"
        frame = json.dumps({"type": "message", "payload": {
            "content_type": "text", "content": f"chaos message {mid}", "client_msg_id": mid}})
        for _ in range(20):
            await ws.send(frame)
            try:
                ack = await wait_frame(ws, "ack", 5,
                                       lambda f: f["data"].get("client_msg_id") == mid)
            except asyncio.TimeoutError:
                ack = None
            if ack is not None:
                self.acked[f"{session_id}:{uid}:{mid}"] = scenario
                if ack["data"].get("duplicate"):
                    self.resent_duplicates += 1
                return
            self.retried += 1
            await asyncio.sleep(0.25)
        self.unacked += 1

    async def chat_loop(self, scenario, stop, index):
        session_id, uid, token, gw = self.sessions[index]
        while not stop.is_set():
            url = f"{self.gateways[gw]}/ws/chat/{session_id}?token={token}"
            try:
                async with websockets.connect(url, open_timeout=5, close_timeout=1,
                                              max_size=2**22) as ws:
                    await wait_frame(ws, "join_success", 10)
                    while not stop.is_set():
                        await self.send_one(ws, scenario, session_id, uid)
                        await asyncio.sleep(0.25)
            except Exception:
                gw = 1 - gw  # reconnect elsewhere, as a client behind a load balancer would
                await asyncio.sleep(0.5)


async def quiet(_error):
    """An error callback that drops the expected permission violations."""


def is_settled(status):
    return isinstance(status, int) and status < 500


def schedule():
    t = datetime.now(timezone(timedelta(hours=8))) + timedelta(hours=1)
    return t.strftime("%Y-%m-%dT%H:%M:%S+08:00")


async def wait_frame(ws, kind, timeout, match=lambda f: True):
    """The next frame of `kind` that matches; None on an `error` frame; TimeoutError."""
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            raise asyncio.TimeoutError()
        raw = await asyncio.wait_for(ws.recv(), left)
        try:
            f = json.loads(raw)
        except ValueError:
            continue
        if f.get("type") == kind and match(f):
            return f
        if f.get("type") == "error" and kind == "ack":
            return None


# ---------------------------------------------------------------------------------------------
# Faults.


def nats_index(env, name):
    return int(name.split("-")[1]) - 1


async def fault_kill_leader(env, reader):
    leader, replicas = await reader.stream_leader()
    i = nats_index(env, leader)
    log(f"  EVENTS (R{replicas}) leader is {leader}: SIGKILL")
    env.nats[i].kill()
    await asyncio.sleep(4)
    new, _ = await reader.stream_leader()
    log(f"  new EVENTS leader {new}; restarting {leader}")
    env.nats[i].start()
    return {"killed": leader, "new_leader": new}


async def fault_kill_node_b(env, reader):
    log("  SIGKILL node B (api, gateway, projectors) with requests in flight")
    for name in ["b-api", "b-gateway", "b-projectors"]:
        env.parts[name].send(signal.SIGKILL)
    for name in ["b-api", "b-gateway", "b-projectors"]:
        env.parts[name].kill()
    await asyncio.sleep(3)
    log("  restarting node B")
    for name in ["b-projectors", "b-api", "b-gateway"]:
        env.parts[name].start()
    return {}


async def active_projector(env, reader):
    rows = reader.query(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    return rows[0][0]


async def fault_kill_projector(env, reader):
    # The active projector holds the advisory locks; node A's started first. Kill whichever holds
    # them: the process whose Postgres sessions hold the granted advisory locks.
    locks = reader.query(
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted")
    victim = "a-projectors"
    ports = {r[0] for r in locks}
    owner = owners_of_ports(ports)
    for name in ["a-projectors", "b-projectors"]:
        if env.parts[name].pid in owner:
            victim = name
            break
    log(f"  {len(locks)} advisory locks held; SIGKILL {victim} (pid {env.parts[victim].pid})")
    env.parts[victim].kill()
    await asyncio.sleep(3)
    log(f"  restarting {victim} (now the standby)")
    env.parts[victim].start()
    return {"killed": victim, "locks": len(locks)}


def owners_of_ports(ports):
    """pids owning local TCP ports (from /proc/net/tcp and /proc/*/fd)."""
    inodes = set()
    for path in ["/proc/net/tcp", "/proc/net/tcp6"]:
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    port = int(parts[1].split(":")[1], 16)
                    if port in ports:
                        inodes.add(parts[9])
        except OSError:
            pass
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(pid))
                    break
        except OSError:
            continue
    return pids


async def fault_restart_postgres(env, reader):
    log("  PostgreSQL: fast shutdown (SIGINT), start again")
    env.pg.stop(signal.SIGINT)
    await asyncio.sleep(2)
    env.pg.start()
    return {}


async def fault_pause_leader(env, reader):
    leader, _ = await reader.stream_leader()
    i = nats_index(env, leader)
    log(f"  EVENTS leader is {leader}: SIGSTOP for 10 s")
    env.nats[i].send(signal.SIGSTOP)
    await asyncio.sleep(10)
    env.nats[i].send(signal.SIGCONT)
    await asyncio.sleep(1)
    new, _ = await reader.stream_leader()
    log(f"  SIGCONT {leader}; EVENTS leader now {new}")
    return {"paused": leader, "leader_after": new}


SCENARIOS = [
    ("kill the EVENTS stream leader (SIGKILL) and restart it", fault_kill_leader),
    ("kill a whole mychat node (B) mid-request", fault_kill_node_b),
    ("SIGKILL the active projector mid-batch", fault_kill_projector),
    ("restart PostgreSQL", fault_restart_postgres),
    ("pause a NATS node (the EVENTS leader, SIGSTOP) past the election timeout", fault_pause_leader),
]


# ---------------------------------------------------------------------------------------------
# Checks.


async def check(env, reader, load, scenario, totals):
    uncertain = await load.settle(scenario)
    cmds = {k: v for k, v in load.commands.items() if v["scenario"] == scenario}
    counts, last_ev = await reader.header_counts("EVENTS", "ev.>", "Mychat-Command-Id")
    by_key = {}
    for cid, n in counts.items():
        key = cid.rsplit(":", 1)[-1]
        if key.startswith("chaos-"):
            by_key[key] = by_key.get(key, 0) + n
    lost = dup = 0
    ok2xx = 0
    refused = 0
    for key, cmd in cmds.items():
        n = by_key.get(key, 0)
        s = cmd["status"]
        if isinstance(s, int) and s // 100 == 2:
            ok2xx += 1
            if n == 0:
                lost += 1
                log(f"  LOST: command {key} answered {s} has no commit")
            elif n > 1:
                dup += 1
                log(f"  DUPLICATED: command {key} has {n} commits")
        elif is_settled(s):
            refused += 1
            if n > 1:
                dup += 1
                log(f"  DUPLICATED: command {key} ({s}) has {n} commits")
        else:
            lost += 1
            log(f"  UNSETTLED: command {key} still {s} after {cmd['retries']} retries")
    # Chat: every acked message exactly once across the chat streams (a dedup id is scoped to
    # its session, and a session lives in one stream).
    chat_counts = {}
    for stream in await reader.chat_streams():
        counts, _ = await reader.header_counts(stream, "chat.>", "Nats-Msg-Id")
        for k, v in counts.items():
            chat_counts[k] = chat_counts.get(k, 0) + v
    acked = [m for m, sc in load.acked.items() if sc == scenario]
    chat_lost = sum(1 for m in acked if chat_counts.get(m, 0) == 0)
    chat_dup = sum(1 for m in acked if chat_counts.get(m, 0) > 1)
    lost += chat_lost
    dup += chat_dup
    # Read models: every 2xx order in `orders`, once (waiting for the projectors to catch up).
    want = {cmd["order_id"] for cmd in cmds.values() if cmd["order_id"] is not None}
    diverged = 0
    missing = want
    for _ in range(300):
        rows = reader.query("SELECT id FROM orders WHERE id = ANY(%s)", (list(want),))
        missing = want - {r[0] for r in rows}
        if not missing:
            break
        await asyncio.sleep(0.2)
    if missing:
        diverged += 1
        log(f"  DIVERGED: {len(missing)} acknowledged orders missing from the orders read model")
    # Wait until the projectors are quiet: `orders` (every EVENTS commit) at the end of EVENTS,
    # each chat stream's `chat_messages` projection at the end of its stream (`chat_messages`
    # for a legacy `CHAT`, `chat_messages_<k>` for `CHAT_<k>`), and no checkpoint moving for 2 s.
    before = None
    streams = await reader.chat_streams()
    for _ in range(120):
        last_ev = await reader.last_seq("EVENTS")
        last_chat = {s: await reader.last_seq(s) for s in streams}
        rows = dict(reader.query("SELECT name, position FROM projection_checkpoints"))
        chat_done = all(
            rows.get("chat_messages" if s == "CHAT" else "chat_messages_" + s.split("_")[1], 0)
            >= last or last == 0
            for s, last in last_chat.items())
        if rows.get("orders", 0) >= last_ev and chat_done and rows == before:
            break
        before = rows
        await asyncio.sleep(1)
    else:
        diverged += 1
        log(f"  DIVERGED: projections not caught up: {rows} vs EVENTS {last_ev}, chat {last_chat}")
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    replay = env.mychat_cmd(["audit", "replay", "--at", at])
    schema = replay.stdout.strip().splitlines()[-1] if replay.stdout.strip() else ""
    if replay.returncode != 0 or not schema:
        diverged += 1
        log(f"  DIVERGED: replay failed: {replay.stderr[-2000:]}")
    else:
        diff = env.mychat_cmd(["audit", "diff", schema])
        if diff.returncode != 0:
            diverged += 1
            log(f"  DIVERGED: {schema} vs public:\n{diff.stdout[-3000:]}{diff.stderr[-1000:]}")
    rec = env.mychat_cmd(["finance", "reconcile"])
    if rec.returncode != 0:
        diverged += 1
        log(f"  DIVERGED: finance reconcile exit {rec.returncode}:\n"
            f"{rec.stdout[-3000:]}{rec.stderr[-1000:]}")
    statuses = {}
    for cmd in cmds.values():
        first = cmd.get("first_status", cmd["status"])
        statuses[str(first)] = statuses.get(str(first), 0) + 1
    result = {"commands": len(cmds), "command_2xx": ok2xx, "refused_4xx": refused,
              "uncertain": uncertain, "first_answers": statuses, "chat_acked": len(acked),
              "events_last_seq": last_ev, "chat_last_seq": last_chat,
              "lost": lost, "duplicated": dup, "diverged": diverged}
    totals["acked"] += ok2xx + len(acked)
    totals["lost"] += lost
    totals["duplicated"] += dup
    totals["diverged"] += diverged
    return result


async def run_scenario(env, reader, load, n, title, fault, totals):
    log(f"scenario {n}: {title}")
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load.command_loop(n, stop))]
    tasks += [asyncio.create_task(load.chat_loop(n, stop, i)) for i in range(len(load.sessions))]
    await asyncio.sleep(4)
    detail = await fault(env, reader)
    await asyncio.sleep(6)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    # The restarted parts must be up before the checks.
    for p in env.parts.values():
        if p.poll() is not None:
            raise RuntimeError(f"{p.name} exited ({p.returncode}); see {p.log}")
    result = await check(env, reader, load, n, totals)
    result.update(detail)
    log(f"scenario {n} result: {json.dumps(result, ensure_ascii=False)}")
    return result


async def main():
    started = time.time()
    # Free ports are picked, then bound by the children: another process may take one in
    # between (a shared machine). Such a start is retried on fresh ports.
    for attempt in range(1, 4):
        tmp = tempfile.mkdtemp(prefix="mychat-chaos-")
        env = Env(tmp)
        try:
            log(f"workdir {tmp}")
            env.start_infra()
            env.start_mychat()
            break
        except RuntimeError as e:
            log(f"start failed (attempt {attempt}): {e}")
            env.stop_all()
            if attempt == 3:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    totals = {"acked": 0, "lost": 0, "duplicated": 0, "diverged": 0}
    results = []
    load = None
    ok = False
    try:
        log(f"nats cluster on {env.nats_ports} (routes {env.route_ports}), postgres on {env.pg_port}")
        reader = Reader(env)
        leader, replicas = await reader.stream_leader()
        log(f"mychat nodes up; EVENTS R{replicas}, leader {leader}")
        if replicas != 3:
            raise RuntimeError(f"EVENTS has {replicas} replicas, not 3")
        allowed = await reader.privileges_denied()
        if allowed:
            raise RuntimeError(f"the mychat NATS user may: {allowed}")
        log("least privilege: the mychat user may not delete/purge streams, delete messages, "
            "or reach $SYS")
        load = Load(env)
        await load.setup()
        log(f"{len(load.users)} users, {len(load.sessions)} chat sessions")
        for n, (title, fault) in enumerate(SCENARIOS, start=1):
            results.append(await run_scenario(env, reader, load, n, title, fault, totals))
        ok = totals["lost"] == 0 and totals["duplicated"] == 0 and totals["diverged"] == 0
    finally:
        env.stop_all()
        if ok and not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"logs kept in {tmp}/logs")
    summary = {"chaos": "done", "scenarios": len(results), "acked": totals["acked"],
               "lost": totals["lost"], "duplicated": totals["duplicated"],
               "diverged": totals["diverged"],
               "commands": sum(r["commands"] for r in results),
               "uncertain": sum(r["uncertain"] for r in results),
               "chat_acked": sum(r["chat_acked"] for r in results),
               "chat_unacked": load.unacked if load else 0,
               "chat_resends": load.retried if load else 0,
               "seconds": round(time.time() - started)}
    print(json.dumps(summary), flush=True)
    return 0 if ok and len(results) == len(SCENARIOS) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
