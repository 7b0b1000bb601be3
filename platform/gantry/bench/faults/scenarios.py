"""The faults, each injected at a fixed time into a platform under a steady open-loop load,
and for each, which failed answers the platform documents for that fault ("planned"); every
other failure is unplanned.  An injector runs on the main thread (``Fault``: the stack, the
clock and the facts it records, in seconds after the load began) while the load runs on its
own thread, and records what the platform did: when it noticed, took over, came back."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ... import keys, state
from .load import Record
from .stack import FaultStack

REFRESH_S = 1.0   # the gateway's full cache refresh: how late it may still route by an old view


@dataclass
class Fault:
    stack: FaultStack
    function: str
    spec: dict
    image: str
    t0: float                  # time.monotonic() when the load began
    fault_at: float
    facts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.r = self.stack.redis_client()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, key: str) -> float:
        self.facts[key] = round(self.now(), 3)
        return self.facts[key]

    def sleep_until(self, at: float) -> None:
        time.sleep(max(0.0, at - self.now()))

    def poll(self, key: str, predicate: Callable[[], object], timeout: float, every: float = 0.05) -> bool:
        """Mark KEY when PREDICATE first holds (a Redis error counts as not yet); False if it
        never did within TIMEOUT (recorded as ``KEY: null``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    self.mark(key)
                    return True
            except Exception:  # noqa: BLE001 - Redis down or restarting
                pass
            time.sleep(every)
        self.facts[key] = None
        return False

    # -- what Redis says -----------------------------------------------------------------------
    def states(self) -> dict[str, str]:
        ids = [i.decode() for i in self.r.smembers(keys.function_instances(self.function))]
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.instance(i), "state")
        return {i: s.decode() for i, s in zip(ids, pipe.execute()) if s is not None}

    def ready(self) -> list[str]:
        return sorted(i for i, s in self.states().items() if s == state.READY)

    def node_alive(self) -> bool:
        return bool(self.r.exists(keys.node_alive(self.stack.node_id)))

    def epoch(self) -> int | None:
        raw = self.r.get(keys.LEADER_EPOCH)
        return int(raw) if raw is not None else None

    def container_of(self, instance_id: str) -> str:
        [c] = self.stack.docker.api.containers(all=True, filters={"label": [f"gantry.instance={instance_id}"]})
        return c["Id"]

    def close(self) -> None:
        self.r.close()


# -- the injectors -----------------------------------------------------------------------------

def kill_container(f: Fault) -> None:
    f.sleep_until(f.fault_at)
    before = f.ready()
    [inst, *_] = before
    f.facts["instance"] = inst
    cid = f.container_of(inst)
    f.mark("fault")
    f.stack.docker.api.kill(cid, signal="SIGKILL")
    f.poll("detected", lambda: f.states().get(inst) != state.READY, 30)
    f.poll("replacement_ready", lambda: set(f.ready()) - set(before), 60)


def worker_down(seconds: float) -> Callable[[Fault], None]:
    def inject(f: Fault) -> None:
        f.sleep_until(f.fault_at)
        f.facts["ready_before"] = f.ready()
        f.mark("fault")
        f.stack.kill("worker")
        f.poll("node_suspect", lambda: not f.node_alive(), seconds)
        f.sleep_until(f.fault_at + seconds)
        f.mark("worker_restarted")
        f.stack.restart("worker")
        f.poll("node_back", f.node_alive, 30)
        f.facts["ready_after"] = f.ready()
        f.facts["same_instances"] = f.facts["ready_after"] == f.facts["ready_before"]
    inject.__name__ = f"worker_down_{seconds:g}s"
    return inject


def kill_leader(f: Fault) -> None:
    f.sleep_until(f.fault_at)
    old = f.stack.leader()
    f.facts.update(leader_before=old, epoch_before=f.epoch())
    f.mark("fault")
    f.stack.kill(old)
    f.poll("takeover", lambda: f.stack.leader() not in (old, None), 30)
    f.facts.update(leader_after=f.stack.leader(), epoch_after=f.epoch())


def redis_down(seconds: float) -> Callable[[Fault], None]:
    def inject(f: Fault) -> None:
        f.sleep_until(f.fault_at)
        f.mark("fault")
        f.stack.redis.kill()
        time.sleep(seconds)
        f.stack.redis.start()
        f.mark("redis_back")
        f.facts["data_kept"] = bool(f.r.exists(keys.function(f.function)))
        if not f.facts["data_kept"]:
            redeploy(f)
        f.poll("serving_again", f.ready, 30)
    inject.__name__ = f"redis_down_{seconds:g}s"
    return inject


def redeploy(f: Fault) -> None:
    """What the operator does once Redis came back empty, at once (the best case): what
    ``gantry up`` does on its start (store the admin key's hash if none is stored), then the
    deploy again, retried until the gateway has reread the key."""
    status, body = f.stack.admin("GET", f"/v1/functions/{f.function}")
    f.facts["admin_api_after_loss"] = f"{status} {(body or {}).get('error', {}).get('code', '')}".strip()
    f.facts["admin_key_stored_again"] = f.stack.seed_admin_key(only_if_absent=True)
    f.mark("key_restored")
    tries = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tries += 1
        status, body = f.stack.admin("POST", "/v1/functions", {"spec": f.spec, "image": f.image})
        if status == 201:
            f.mark("redeployed")
            break
        time.sleep(0.2)
    f.facts["redeploy_tries"] = tries
    f.poll("ready_again", f.ready, 90)


def freeze_leader(seconds: float) -> Callable[[Fault], None]:
    def inject(f: Fault) -> None:
        f.sleep_until(f.fault_at)
        old = f.stack.leader()
        f.facts.update(leader_before=old, epoch_before=f.epoch())
        f.mark("fault")
        f.stack.freeze(old)
        f.poll("takeover", lambda: f.stack.leader() not in (old, None), seconds)
        f.facts["epoch_during"] = f.epoch()
        f.sleep_until(f.fault_at + seconds)
        f.stack.thaw(old)
        f.mark("resumed")
        time.sleep(3.0)                       # a lease period: time to try to act and be refused
        f.facts.update(leader_after=f.stack.leader(), epoch_after=f.epoch())
    inject.__name__ = f"freeze_leader_{seconds:g}s"
    return inject


def pause_container(seconds: float) -> Callable[[Fault], None]:
    def inject(f: Fault) -> None:
        f.sleep_until(f.fault_at)
        [inst, *_] = f.ready()
        f.facts.update(instance=inst, function_timeout_s=float(f.spec["limits"]["timeout"]))
        cid = f.container_of(inst)
        f.mark("fault")
        f.stack.docker.api.pause(cid)
        f.poll("marked_not_ready", lambda: f.states().get(inst) != state.READY, seconds)
        f.sleep_until(f.fault_at + seconds)
        f.stack.docker.api.unpause(cid)
        f.mark("unpaused")
        f.poll("ready_again", lambda: f.states().get(inst) == state.READY, 30)
        f.facts["states_after"] = f.states()
    inject.__name__ = f"pause_container_{seconds:g}s"
    return inject


# -- planned failures ------------------------------------------------------------------------

def nothing_planned(rec: Record, facts: dict) -> str | None:
    return None


def outcome_unknown_at_the_kill(rec: Record, facts: dict) -> str | None:
    """The documented answer for a request the killed container had taken: 502
    function_outcome_unknown, not retried.  Planned for a request answered after the kill and
    sent before the gateway can have learned of it (the instance left `ready` in Redis, plus
    one full cache refresh)."""
    fault, detected = facts.get("fault"), facts.get("detected")
    if fault is None or rec.status != 502 or rec.code != "function_outcome_unknown":
        return None
    if rec.done >= fault and rec.sent <= (detected if detected is not None else math.inf) + REFRESH_S:
        return "taken by the killed container: 502 function_outcome_unknown (at most once, not retried)"
    return None


def lost_with_the_data(rec: Record, facts: dict) -> str | None:
    """Redis came back empty: the admin key and the deployment are gone until the operator
    stores the key again and redeploys.  Planned: what a request answered after Redis came
    back and sent before the redeploy was accepted gets (401 for the key, 429 once its address
    has sent too many wrong keys, 404 for the function, 503), and 502 function_outcome_unknown
    for one the old container had taken when the worker swept it as an orphan.  A request sent
    after the redeploy should be served once the new instance is ready (a cold start): its
    failure is not planned."""
    if facts.get("data_kept") is not False or rec.done < facts.get("redis_back", math.inf):
        return None
    if rec.sent > (facts.get("redeployed") or math.inf):
        return None
    if rec.status in (401, 404, 429, 503) or (rec.status == 502 and rec.code == "function_outcome_unknown"):
        return f"sent while the deployment was lost with Redis's data: {rec.status} {rec.code}"
    return None


def timed_out_while_frozen(rec: Record, facts: dict) -> str | None:
    """A request inside the frozen container for longer than the function's timeout gets the
    documented 504 ``timeout`` (the platform cannot tell a frozen handler from a slow one)."""
    limit = facts.get("function_timeout_s")
    if rec.status == 504 and rec.code == "timeout" and limit is not None and facts.get("fault") is not None \
            and rec.sent <= facts.get("unpaused", math.inf) and rec.done - rec.sent >= limit:
        return "in the frozen container longer than the function's timeout: 504 timeout (it ran once)"
    return None


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    seconds: float                      # load length
    fault_at: float                     # seconds after the load began
    inject: Callable[[Fault], None]
    planned: Callable[[Record, dict], str | None] = nothing_planned
    aof: bool = True
    standby: bool = False
    promise: str = ""                   # what the platform documents for this fault


FAULT_AT = 8.0
KILL_CONTAINER = Scenario("kill_container", "kill -9 of the function's container", 30, FAULT_AT, kill_container,
                          outcome_unknown_at_the_kill,
                          promise="requests it had taken: 502 function_outcome_unknown, never retried; the rest "
                                  "wait for the replacement")


def full() -> list[Scenario]:
    return [
        KILL_CONTAINER,
        Scenario("worker_20s", "worker agent SIGKILLed for 20 s, then restarted", 40, FAULT_AT, worker_down(20),
                 promise="node suspect, not dead (dead after 60 s): nothing reaped, containers adopted, 0 failures"),
        Scenario("worker_45s", "worker agent SIGKILLed for 45 s, then restarted", 65, FAULT_AT, worker_down(45),
                 promise="as for 20 s: under the 60 s dead-node threshold, 0 failures"),
        Scenario("kill_scheduler", "leader scheduler SIGKILLed (standby running)", 30, FAULT_AT, kill_leader,
                 standby=True, promise="the standby takes over after the lease (3 s); traffic never needs "
                                       "the scheduler: 0 failures"),
        Scenario("redis_aof_5s", "Redis killed for 5 s, append-only file", 30, FAULT_AT, redis_down(5),
                 promise="cached ready instances keep serving; nothing lost: 0 failures"),
        Scenario("redis_nopersist_5s", "Redis killed for 5 s, no persistence", 40, FAULT_AT, redis_down(5),
                 lost_with_the_data, aof=False,
                 promise="Redis comes back empty: key and deployment lost until redeployed; workers accept the "
                         "new epoch series"),
        Scenario("freeze_leader_10s", "SIGSTOP of the leader scheduler for 10 s, then SIGCONT", 35, FAULT_AT,
                 freeze_leader(10), standby=True,
                 promise="the standby takes over; the thawed leader stands down, its writes fenced: 0 failures"),
        Scenario("pause_container_10s", "docker pause of the only instance for 10 s", 35, FAULT_AT,
                 pause_container(10), timed_out_while_frozen,
                 promise="requests wait (up to the function's timeout + 5 s) and are answered after the thaw"),
    ]


def quick() -> list[Scenario]:
    return [replace(KILL_CONTAINER, seconds=16, fault_at=5.0)]
