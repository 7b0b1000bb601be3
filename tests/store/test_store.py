"""The store against the real Redis: the Lua rendering of the transition table agrees with
gantry.state.TRANSITIONS for every pair of states, fenced writes raise Deposed, and no module
but the store evaluates scripts."""
from __future__ import annotations

import itertools
import pathlib
import re

import pytest

from gantry import keys, state
from gantry.state import Instance, InstanceState
from gantry.store import Deposed, Store

ROOT = pathlib.Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.timeout(30)


async def test_every_move_in_redis_is_the_tables_decision(aredis):
    r = aredis
    store = Store(r)
    allowed = refused = 0
    for current, target in itertools.product(InstanceState, InstanceState):
        inst = Instance(id=f"i-{current}-{target}", function="f", version=1, node="n1", state=current)
        await r.hset(keys.instance(inst.id), mapping=inst.to_hash())
        moved = await store.move_instance(inst.id, target, reason="x")
        assert moved is state.may_enter(current, target), (current, target)
        assert await store.instance_state(inst.id) == (target if moved else current)
        allowed, refused = allowed + moved, refused + (not moved)
    assert allowed and refused


async def test_expected_states_narrow_the_table(aredis):
    r = aredis
    store = Store(r)
    inst = Instance(id="i1", function="f", version=1, node="n1", state=state.READY)
    await r.hset(keys.instance(inst.id), mapping=inst.to_hash())
    # the table allows ready -> unhealthy, but the writer saw "starting": refused
    assert not await store.move_instance("i1", state.UNHEALTHY, (state.STARTING,))
    assert await store.move_instance("i1", None, (state.READY,), port=9) is True   # fields only
    assert (await store.get_instance("i1")).port == 9
    assert not await store.move_instance("gone", state.STOPPED)                     # no record: none made
    assert not await r.exists(keys.instance("gone"))


async def test_fenced_writes_raise_deposed_and_change_nothing(aredis):
    r = aredis
    store = Store(r)
    await r.set(keys.LEADER_EPOCH, 3)
    inst = Instance(id="i1", function="f", version=1, node="n1")
    await store.create_instance(3, inst, state.command("start", "i1", 3))
    for write in (lambda: store.create_instance(2, inst, b"x"),
                  lambda: store.command_instance(2, inst, b"x", state.DRAINING),
                  lambda: store.promote_version(2, "f", 2, 1, 0.0)):
        with pytest.raises(Deposed):
            await write()
    assert (await store.get_instance("i1")).state == state.PENDING
    assert await r.llen(keys.node_commands("n1")) == 1
    # the current epoch: a move the table refuses is False, not Deposed
    assert await store.command_instance(3, inst, b"x", state.PAUSED) is False
    assert await store.command_instance(3, inst, b"x", state.DRAINING) is True


async def test_scripts_survive_a_script_flush(aredis):
    """EVALSHA after Redis lost its script cache (a restart): the script is loaded again."""
    r = aredis
    store = Store(r)
    assert await store.acquire_leader("a", 3000) >= 1
    await r.script_flush()
    assert await store.acquire_leader("a", 3000) >= 1


def test_no_module_but_the_store_evaluates_scripts():
    offenders = []
    for path in sorted((ROOT / "platform" / "gantry").rglob("*.py")):
        if path.name == "store.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.(eval|evalsha)\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert offenders == []


async def test_a_spare_is_taken_once_for_its_version_fenced_and_withdrawn_only_while_offered(aredis):
    """keys.TAKE_SPARE / WITHDRAW_SPARE (worker/spares.py): the scheduler takes a node's spare
    of a function at a version once; a deposed leader takes nothing; the worker withdraws
    an offer only while nobody has taken it."""
    store = Store(aredis)
    await aredis.set(keys.LEADER_EPOCH, 3)
    await store.offer_spare("n1", "f", "2:f-abc")
    with pytest.raises(Deposed):
        await store.take_spare(2, "n1", "f", 2)
    assert await store.take_spare(3, "n1", "f", 1) is None          # another version: left
    assert await store.take_spare(3, "n2", "f", 2) is None          # another node's
    assert await store.take_spare(3, "n1", "f", 2) == "f-abc"
    assert await store.take_spare(3, "n1", "f", 2) is None          # once
    assert await store.withdraw_spare("n1", "f", "2:f-abc") is False   # taken: the instance's
    await store.offer_spare("n1", "f", "2:f-def")
    assert await store.withdraw_spare("n1", "f", "2:f-abc") is False   # not that offer
    assert await store.withdraw_spare("n1", "f", "2:f-def") is True
    assert await store.take_spare(3, "n1", "f", 2) is None
