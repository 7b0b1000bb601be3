"""Every Redis key Gantry uses, and every Lua script, in one place (as arq does).

Values are msgpack unless a comment says otherwise.  Multi-key changes are Lua scripts
(or WATCH/MULTI), never read-modify-write in Python.  Each script's header names its
KEYS[n] and ARGV[n].  Sections belong to components; add to the section you own.
"""
from __future__ import annotations

from .state import TRANSITIONS

PREFIX = "gantry:"

# --- hot path: shared rate limits (gantry.hotpath) --------------------------------------
# A limit shared by gateway replicas is decided locally and reconciled off the request path
# (gantry.hotpath.shared_limit).  The "{rl}" hash tag keeps every such counter in one Redis
# Cluster slot, so one script call can report all of a replica's limits.


def shared_limit(name: str) -> str:
    """STRING int: requests admitted under shared limit NAME by all replicas together
    (cumulative; INCRBY by each replica's new admissions, PEXPIRE refreshed on each report)."""
    return PREFIX + "{rl}:" + name


# KEYS[i]: shared_limit(name_i) for each limit this replica reports
# ARGV[1]: ttl in milliseconds; ARGV[i + 1]: admissions under KEYS[i] since the last report
# Returns: the totals after the increments, in KEYS order
SHARED_LIMIT_REPORT = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return out
"""


# --- control plane: functions, instances, nodes, leader (gantry.state) ------------------
# Records are Redis HASHes whose fields are plain strings (so one field can change without
# a read-modify-write); blobs inside them (a spec) are msgpack.

FUNCTIONS = PREFIX + "functions"                 # SET of function names
EVENTS = PREFIX + "events"                       # pub/sub channel: "fn:NAME", "inst:NAME", "demand:NAME", "node:ID"
NODES = PREFIX + "nodes"                         # SET of node ids ever registered (pruned by the scheduler)
LEADER = PREFIX + "leader"                       # STRING holder id, SET NX PX: the scheduler lease
LEADER_EPOCH = PREFIX + "leader:epoch"           # STRING int, INCR on each acquisition (fencing token)
# STRING: a random id written once, when absent.  It changes only when Redis lost its data,
# and with it LEADER_EPOCH starts again at 1: a new series of epochs that a worker must accept.
GENERATION = PREFIX + "generation"
ADMIN_KEY_HASH = PREFIX + "admin:keyhash"        # STRING sha256 hex of the admin API key


def function(name: str) -> str:
    """HASH: name, latest (int), active (int), updated (float)."""
    return f"{PREFIX}fn:{name}"


def function_version(name: str, version: int) -> str:
    """HASH: image, spec (msgpack of FunctionSpec.to_dict()), created (float)."""
    return f"{PREFIX}fn:{name}:v:{version}"


def function_instances(name: str) -> str:
    """SET of instance ids of the function (every version)."""
    return f"{PREFIX}fn:{name}:instances"


def function_load(name: str) -> str:
    """HASH gateway id -> msgpack [inflight, waiting, last_request_wall_time, reported_wall_time]."""
    return f"{PREFIX}fn:{name}:load"


def function_logs(name: str) -> str:
    """STREAM of log lines: fields instance, line (capped with MAXLEN ~)."""
    return f"{PREFIX}fn:{name}:logs"


def instance(instance_id: str) -> str:
    """HASH: id, function, version, node, state, host, port, cpu, memory, created, epoch, reason,
    paused_at (fields of state.Instance)."""
    return f"{PREFIX}inst:{instance_id}"


def node(node_id: str) -> str:
    """HASH: id, host (address the gateway dials), cpu (millicores), memory (bytes), gpus, started,
    cpu_allocatable (millicores placement may reserve), used_cpu, used_memory, tenant (the tenant
    the node is labelled for, GANTRY_NODE_TENANT; "" for none), gpu_inventory (JSON list of
    state.GpuDevice.to_wire()), cpu_work (0: takes no CPU-only instances) (fields of state.Node)."""
    return f"{PREFIX}node:{node_id}"


def node_alive(node_id: str) -> str:
    """STRING with a TTL, refreshed by the worker's heartbeat: the node is alive while it exists."""
    return f"{PREFIX}node:{node_id}:alive"


def node_alloc(node_id: str) -> str:
    """HASH cpu (millicores), memory (bytes), and "gpu:UUID" (bytes of that GPU leased, absent
    when none; a whole GPU leases all of it): what the scheduler has placed there."""
    return f"{PREFIX}node:{node_id}:alloc"


def node_instances(node_id: str) -> str:
    """SET of instance ids placed on the node."""
    return f"{PREFIX}node:{node_id}:instances"


def node_commands(node_id: str) -> str:
    """LIST of msgpack commands for the node's worker (LPUSH by the scheduler, BRPOP by the worker)."""
    return f"{PREFIX}node:{node_id}:cmds"


def _take_for_tenant(used: int, gpus: str) -> str:
    """The Lua that counts a reserved instance in its tenant's usage (KEYS[USED]) when the
    script has one (``tenant``, set by ``_quota_and_fit``): one instance, its cpu, mem and GPUS."""
    return f"""if tenant then
  redis.call('HINCRBY', KEYS[{used}], 'instances', 1)
  redis.call('HINCRBY', KEYS[{used}], 'cpu', cpu)
  redis.call('HINCRBY', KEYS[{used}], 'memory', mem)
  redis.call('HINCRBY', KEYS[{used}], 'gpus', {gpus})
end
"""


def _quota_and_fit(node: int, alloc: int, alive: int, used: int, quota: int, gpus: str) -> str:
    """The Lua both reserve scripts start with (``cpu`` and ``mem`` set before it): with a
    tenant (KEYS[QUOTA] given), {resource, used, limit} when its quota refuses one more instance
    of cpu, mem and GPUS; then 0 when the node is dead (KEYS[ALIVE] gone) or its free CPU or
    memory (KEYS[NODE] capacity less KEYS[ALLOC]) do not fit.  Sets ``tenant``."""
    return f"""
local tenant = #KEYS >= {quota}
if tenant then
  local want = {{instances = 1, cpu = cpu, memory = mem, gpus = {gpus}}}
  for _, r in ipairs({{'instances', 'cpu', 'memory', 'gpus'}}) do
    local limit = redis.call('HGET', KEYS[{quota}], r)
    if limit and want[r] > 0 then
      local used = tonumber(redis.call('HGET', KEYS[{used}], r) or '0')
      if used + want[r] > tonumber(limit) then return {{r, used, tonumber(limit)}} end
    end
  end
end
if redis.call('EXISTS', KEYS[{alive}]) == 0 then return 0 end
local cap_cpu = tonumber(redis.call('HGET', KEYS[{node}], 'cpu_allocatable') or '0')
if cap_cpu == 0 then cap_cpu = tonumber(redis.call('HGET', KEYS[{node}], 'cpu') or '0') end
local cap_mem = tonumber(redis.call('HGET', KEYS[{node}], 'memory') or '0')
local used_cpu = tonumber(redis.call('HGET', KEYS[{alloc}], 'cpu') or '0')
local used_mem = tonumber(redis.call('HGET', KEYS[{alloc}], 'memory') or '0')
if used_cpu + cpu > cap_cpu or used_mem + mem > cap_mem then return 0 end
"""


# KEYS[1] node hash, KEYS[2] node alloc hash, KEYS[3] node alive key, and for a tenant's
# instance KEYS[4] tenant_used hash, KEYS[5] tenant_quota hash ("quotas" section below)
# ARGV[1] cpu millicores wanted, ARGV[2] memory bytes wanted, ARGV[3] GPUs wanted (default 0)
# Reserve capacity on a live node atomically and, with KEYS[4], the tenant's usage (one
# instance, the cpu, memory and GPUs) in the same step: both or neither.  The quota is
# checked first (no node could take what it refuses).  Returns 1 if reserved, 0 if it does
# not fit or the node is dead, {resource, used, limit} when the tenant's quota refuses.
RESERVE_CAPACITY = """
local cpu, mem, gpus = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3] or '0')""" + _quota_and_fit(node=1, alloc=2, alive=3, used=4, quota=5, gpus="gpus") + """
redis.call('HINCRBY', KEYS[2], 'cpu', cpu)
redis.call('HINCRBY', KEYS[2], 'memory', mem)
""" + _take_for_tenant(used=4, gpus="gpus") + """return 1
"""

# KEYS[1] node alloc hash, KEYS[2] instance hash, KEYS[3] tenant_used hash (optional)
# ARGV[1] "node" (default): give back the node's capacity and the tenant's usage; "tenant":
# the tenant's usage only (a dead node's alloc record was dropped whole by FORGET_NODE).
# Give back what the instance reserved, once: the instance's 'released' field guards against
# a double release.  The tenant's usage goes back only for a record that took it (its
# 'tenant' field is set; instances placed before quotas existed took none).
# Returns 1 if released now, 0 if already released.
RELEASE_CAPACITY = """
if redis.call('HSETNX', KEYS[2], 'released', '1') == 0 then return 0 end
local f = redis.call('HMGET', KEYS[2], 'cpu', 'memory', 'gpus', 'tenant', 'gpu_lease')
local cpu, mem, gpus = tonumber(f[1] or '0'), tonumber(f[2] or '0'), tonumber(f[3] or '0')
-- Lua's -0 reaches Redis as "-0", which HINCRBY refuses: zero is skipped
local function give(key, field, n) if n ~= 0 then redis.call('HINCRBY', key, field, -n) end end
if ARGV[1] ~= 'tenant' then
  give(KEYS[1], 'cpu', cpu)
  give(KEYS[1], 'memory', mem)
  -- its GPU lease (RESERVE_GPU_CAPACITY): "UUID=BYTES,..."; a GPU nobody leases has no field
  for uuid, n in string.gmatch(f[5] or '', '([^,=]+)=(%d+)') do
    if n ~= '0' and redis.call('HINCRBY', KEYS[1], 'gpu:' .. uuid, '-' .. n) <= 0 then
      redis.call('HDEL', KEYS[1], 'gpu:' .. uuid)
    end
  end
end
if #KEYS >= 3 and f[4] and f[4] ~= '' then
  give(KEYS[3], 'instances', 1)
  give(KEYS[3], 'cpu', cpu)
  give(KEYS[3], 'memory', mem)
  give(KEYS[3], 'gpus', gpus)
end
return 1
"""

# KEYS[1] LEADER, KEYS[2] LEADER_EPOCH
# ARGV[1] holder id, ARGV[2] lease ms
# Acquire the lease if free (bumping the epoch) or renew it if we hold it.
# Returns the epoch held (> 0), or 0 if someone else holds the lease.
ACQUIRE_LEADER = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS[1] GENERATION, KEYS[2] LEADER_EPOCH
# ARGV[1] a fresh random id, written as the generation if there is none
# Returns {generation, leader epoch}: what a receiver of fenced commands compares against.
FENCE_FLOOR = """
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1])
  g = ARGV[1]
end
return {g, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

# KEYS[1] LEADER   ARGV[1] holder id.  Release the lease only if we still hold it.
RELEASE_LEADER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# --- instance states (gantry.state.TRANSITIONS) -------------------------------------------
# Every change of an instance's state, the worker's and the scheduler's alike, is checked in
# Redis against the one transition table in gantry.state, rendered into Lua here, so a move
# the table does not list (a health result read before the scheduler set "draining" turning
# the instance back to "ready", say) is refused where it would be written.


def _lua_transitions() -> str:
    rows = ", ".join(f"{to}={{{', '.join(f'{s}=true' for s in sorted(froms))}}}"
                     for to, froms in sorted(TRANSITIONS.items()))
    return f"local ALLOWED = {{{rows}}}\n"


# may_enter(current, target, expected): target '' keeps the state (only the expected check
# applies); expected '' means any state the table allows into target, else a space-separated
# list the current state must also be in (a writer that read the state compares against it).
_STATE_CHECK = _lua_transitions() + """
local function may_enter(current, target, expected)
  if expected ~= '' then
    local found = false
    for s in string.gmatch(expected, '%S+') do
      if s == current then found = true end
    end
    if not found then return false end
  end
  if target == '' then return true end
  local from = ALLOWED[target]
  return from ~= nil and from[current] == true
end
"""

# KEYS[1] instance hash, KEYS[2] EVENTS channel
# ARGV[1] target state ('' : fields only), ARGV[2] expected current states (see may_enter),
# ARGV[3..] field, value, ...
# The worker's compare-and-set: move the instance (and set fields) only while its record
# exists and the move is allowed, so a reaped record is never resurrected half-empty and a
# stale observation never undoes a newer decision.  Announces "inst:FUNCTION".
# Returns 1 if updated, 0 if the record is gone or the move is not allowed.
MOVE_INSTANCE = _STATE_CHECK + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not may_enter(redis.call('HGET', KEYS[1], 'state') or '', ARGV[1], ARGV[2]) then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[1]) end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
redis.call('PUBLISH', KEYS[2], 'inst:' .. (redis.call('HGET', KEYS[1], 'function') or ''))
return 1
"""


# --- scheduler (gantry.scheduler) --------------------------------------------------------
# The scheduler's writes that make a worker act are fenced: refused when the sender's epoch
# (ARGV[1]) is below LEADER_EPOCH (KEYS[1]), so a deposed leader changes nothing.  Every
# fenced script returns 0 for a stale epoch and nothing else (gantry.store raises Deposed
# on it).  Each is one script so a record never exists without its command (or the command
# without it).
_FENCED = """
if tonumber(ARGV[1]) < tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
"""

# KEYS[1] LEADER_EPOCH, KEYS[2] instance hash, KEYS[3] function instances set,
# KEYS[4] node instances set, KEYS[5] node commands list
# ARGV[1] epoch, ARGV[2] instance id, ARGV[3] msgpack "start" command, ARGV[4..] field, value, ...
# Create a placed instance's record (fields of state.Instance.to_hash()), add it to the
# function's and node's sets, and queue its start command, all or nothing.
# Returns 1 if created, 0 if the epoch is stale.
CREATE_INSTANCE = _FENCED + """
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('LPUSH', KEYS[5], ARGV[3])
return 1
"""

# KEYS[1] LEADER_EPOCH, KEYS[2] instance hash, KEYS[3] node commands list, KEYS[4] EVENTS
# ARGV[1] epoch, ARGV[2] target state ('' : keep it), ARGV[3] expected current states (see
# may_enter), ARGV[4] msgpack command, ARGV[5..] field, value, ... to set first (may be none)
# Move the instance (announced as "inst:FUNCTION") and queue a command for its worker
# (stop, remove, start again, pause, unpause), only while the record exists and the move
# is allowed.  Returns 1 if done, 0 if the epoch is stale, -1 if the record is gone or the
# move is not allowed.
COMMAND_INSTANCE = _FENCED + _STATE_CHECK + """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if not may_enter(redis.call('HGET', KEYS[2], 'state') or '', ARGV[2], ARGV[3]) then return -1 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], 'state', ARGV[2]) end
if #ARGV > 4 then redis.call('HSET', KEYS[2], unpack(ARGV, 5)) end
if ARGV[2] ~= '' or #ARGV > 4 then
  redis.call('PUBLISH', KEYS[4], 'inst:' .. (redis.call('HGET', KEYS[2], 'function') or ''))
end
redis.call('LPUSH', KEYS[3], ARGV[4])
return 1
"""

# KEYS[1] LEADER_EPOCH, KEYS[2] function hash, KEYS[3] EVENTS
# ARGV[1] epoch, ARGV[2] function name, ARGV[3] version rolled out (the latest it started),
# ARGV[4] active version it replaces, ARGV[5] wall time
# Move `active` to ARGV[3] only if `latest` is still ARGV[3] and `active` still ARGV[4] (a
# newer deploy or a delete in between wins).  Returns 1 if moved, 0 if the epoch is stale,
# -1 if either changed.
PROMOTE_VERSION = _FENCED + """
local latest = redis.call('HGET', KEYS[2], 'latest')
if latest ~= ARGV[3] then return -1 end
local active = redis.call('HGET', KEYS[2], 'active') or latest
if active ~= ARGV[4] then return -1 end
redis.call('HSET', KEYS[2], 'active', ARGV[3], 'updated', ARGV[5])
redis.call('PUBLISH', KEYS[3], 'fn:' .. ARGV[2])
return 1
"""

# KEYS[1] function hash, KEYS[2] EVENTS
# ARGV[1] function name, ARGV[2] why its wanted instances cannot be placed ("" to clear),
# ARGV[3] (optional) "RESOURCE USED LIMIT" when the tenant's quota is why ("" or absent: not)
# Keep the function's `pending_reason` field (read by the gateway and CLI to say "no
# capacity") and `pending_quota` (the gateway answers a waiting request 403 quota_exceeded
# with it) without recreating a deleted function's hash; announce a change as "fn:NAME".
# Returns 1 if it changed, 0 otherwise.
SET_PENDING_REASON = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local quota = ARGV[3] or ''
local old = redis.call('HMGET', KEYS[1], 'pending_reason', 'pending_quota')
if (old[1] or '') == ARGV[2] and (old[2] or '') == quota then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'pending_reason')
else redis.call('HSET', KEYS[1], 'pending_reason', ARGV[2]) end
if quota == '' then redis.call('HDEL', KEYS[1], 'pending_quota')
else redis.call('HSET', KEYS[1], 'pending_quota', quota) end
redis.call('PUBLISH', KEYS[2], 'fn:' .. ARGV[1])
return 1
"""

# KEYS[1] function hash, KEYS[2] EVENTS
# ARGV[1] function name, ARGV[2] version, ARGV[3] why its last start failed ("" to clear)
# The function's `start_failed` (the cause) and `start_failed_version` fields: the scheduler
# sets them when it reaps an instance that failed before it was ever ready, and clears them
# once an instance of that version (or a newer one) is ready; the gateway answers a request
# waiting for that version 502 function_start_failed with the cause.  A clear removes only
# a failure of ARGV[2] or an older version.  Never recreates a deleted function's hash;
# announces a change as "fn:NAME".  Returns 1 if it changed, 0 otherwise.
SET_START_FAILED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HMGET', KEYS[1], 'start_failed', 'start_failed_version')
if ARGV[3] == '' then
  if not old[1] or tonumber(old[2] or '0') > tonumber(ARGV[2]) then return 0 end
  redis.call('HDEL', KEYS[1], 'start_failed', 'start_failed_version')
else
  if old[1] == ARGV[3] and old[2] == ARGV[2] then return 0 end
  redis.call('HSET', KEYS[1], 'start_failed', ARGV[3], 'start_failed_version', ARGV[2])
end
redis.call('PUBLISH', KEYS[2], 'fn:' .. ARGV[1])
return 1
"""

# KEYS[1] node alive key, KEYS[2] node alloc hash, KEYS[3] NODES, KEYS[4] node hash,
# KEYS[5] node instances set, KEYS[6] node commands list
# ARGV[1] node id, ARGV[2] "alloc" (drop the capacity record) or "all" (forget the node)
# Only while the node is still dead (its alive key absent).  Returns 1 if done, 0 if alive.
FORGET_NODE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
if ARGV[2] == 'all' then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
end
return 1
"""


# --- gateway ---------------------------------------------------------------------------
# The admin API writes functions and versions (gantry.gateway.registry); load reports use
# function_load above.


def function_seq(name: str) -> str:
    """STRING int, INCR per deploy: version numbers of NAME.  It outlives a delete, so a
    redeployed function never reuses a version number that old instances still carry."""
    return f"{PREFIX}fn:{name}:seq"


# KEYS[1] function hash, KEYS[2] FUNCTIONS, KEYS[3] EVENTS channel, KEYS[4] the new
# version's hash, KEYS[5] function_seq, KEYS[6] tenant_functions, KEYS[7] tenant_quota
# ARGV[1] name, ARGV[2] the new version (taken from function_seq), ARGV[3] now, ARGV[4]
# image, ARGV[5] spec (msgpack)
# A name not yet in FUNCTIONS counts against the tenant's `functions` quota (a redeploy never
# does): refused when the tenant already has that many, leaving no version record behind
# (and giving the version number back if no later deploy took one).  Otherwise write the
# version record and point the function at it: latest = max(latest, version); active is
# set only for a function that has none (its first version).
# Returns the active version, or {"functions", count, limit} when the quota refuses.
DEPLOY_VERSION = """
local v = tonumber(ARGV[2])
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  local limit = redis.call('HGET', KEYS[7], 'functions')
  local count = redis.call('SCARD', KEYS[6])
  if limit and count >= tonumber(limit) then
    if redis.call('GET', KEYS[5]) == ARGV[2] and redis.call('DECR', KEYS[5]) == 0 then
      redis.call('DEL', KEYS[5])
    end
    return {'functions', count, tonumber(limit)}
  end
end
redis.call('HSET', KEYS[4], 'image', ARGV[4], 'spec', ARGV[5], 'created', ARGV[3])
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
if v > latest then redis.call('HSET', KEYS[1], 'latest', v) end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'updated', ARGV[3])
local active = redis.call('HGET', KEYS[1], 'active')
if not active then
  redis.call('HSET', KEYS[1], 'active', v)
  active = v
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'fn:' .. ARGV[1])
return tonumber(active)
"""

# KEYS[1] function hash, KEYS[2] EVENTS channel
# ARGV[1] name, ARGV[2] now, then field, value, field, value, ...
# Set fields of an existing function and announce "fn:NAME".  Returns 1, or 0 if absent.
UPDATE_FUNCTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'updated', ARGV[2], unpack(ARGV, 3))
redis.call('PUBLISH', KEYS[2], 'fn:' .. ARGV[1])
return 1
"""


# --- coordination for functions (gantry.coord.store, the gateway's /v1/coord API) ---------
# Everything of one namespace (the caller's key id: two keys never see each other's names)
# carries the hash tag "{c:NS}", so every script below touches one Redis Cluster slot.  A
# name is always the last part of a key, so no name can spell another kind's key.
#
# Every change of state, and every lock grant and release, takes the namespace's next
# revision (coord_revision, INCR) and is appended to its log (coord_log, a STREAM whose
# entry ids are "REVISION-1": ordered, gapless, capped with MAXLEN ~).  A watch reads that
# log from a revision; a revision below the oldest kept entry is compacted: the reader
# re-reads the state.  Lock events appear in the log under the key "@lock/NAME".
#
# A fenced write names a lock and a token: it is applied only while that lock is held with
# exactly that token (an older grant, an expired or released lease are all refused), checked
# in the same script as the write, so nothing can slip between check and write.
# Times are Redis's own clock (TIME), never a caller's.


def _ns(ns: str) -> str:
    return f"{PREFIX}coord:{{c:{ns}}}:"


def coord_revision(ns: str) -> str:
    """STRING int: the namespace's last revision (INCR on each change)."""
    return _ns(ns) + "rev"


def coord_log(ns: str) -> str:
    """STREAM of changes, entry id "REVISION-1", fields k (key), op (set, del, incr, grant,
    release), v (value JSON, "" for del; the holder for grant and release), t (lock token)."""
    return _ns(ns) + "log"


def coord_state(ns: str) -> str:
    """HASH key -> value (JSON text): every state entry of the namespace."""
    return _ns(ns) + "state"


def coord_state_rev(ns: str) -> str:
    """HASH key -> the revision that last changed it (its version for compare-and-swap)."""
    return _ns(ns) + "staterev"


def coord_lock(ns: str, name: str) -> str:
    """HASH holder, token, with a PX TTL (the lease): the lock is held while it exists."""
    return _ns(ns) + "lock:" + name


def coord_lock_fence(ns: str, name: str) -> str:
    """STRING int: the lock's last fencing token (INCR per grant; never goes back)."""
    return _ns(ns) + "lockfence:" + name


def coord_lock_waiters(ns: str, name: str) -> str:
    """ZSET waiter id -> arrival number: the lock's FIFO queue of waiters."""
    return _ns(ns) + "lockq:" + name


def coord_lock_alive(ns: str, name: str) -> str:
    """ZSET waiter id -> keep-alive deadline (ms): a waiter not refreshed by then is dropped."""
    return _ns(ns) + "lockqalive:" + name


def coord_lock_seq(ns: str, name: str) -> str:
    """STRING int: arrival numbers of the lock's waiters."""
    return _ns(ns) + "lockqseq:" + name


def coord_lock_wake(ns: str, name: str, waiter: str) -> str:
    """LIST: a token is pushed here when the waiter reaches the head of a free lock."""
    return _ns(ns) + "lockwake:" + waiter + ":" + name


def coord_queue(ns: str, name: str) -> str:
    """ZSET item id -> order (priority band * 2**43 + arrival): items ready to deliver."""
    return _ns(ns) + "q:" + name


def coord_queue_items(ns: str, name: str) -> str:
    """HASH item id -> value (JSON text) of every item not yet acked (or dead-lettered)."""
    return _ns(ns) + "qitems:" + name


def coord_queue_meta(ns: str, name: str) -> str:
    """HASH item id -> "ORDER,DELIVERIES": the item's place and how often it was delivered."""
    return _ns(ns) + "qmeta:" + name


def coord_queue_inflight(ns: str, name: str) -> str:
    """ZSET item id -> visibility deadline (ms): delivered, not acked; redelivered after it."""
    return _ns(ns) + "qflight:" + name


def coord_queue_seq(ns: str, name: str) -> str:
    """STRING int: item ids of the queue (INCR per put)."""
    return _ns(ns) + "qseq:" + name


def coord_queue_wake(ns: str, name: str) -> str:
    """LIST of wake tokens for consumers waiting on an empty queue (capped, expiring)."""
    return _ns(ns) + "qwake:" + name


def coord_service(ns: str, name: str) -> str:
    """ZSET instance id -> expiry (ms): the service's registered instances."""
    return _ns(ns) + "svc:" + name


def coord_service_info(ns: str, name: str) -> str:
    """HASH instance id -> JSON {address, port, metadata, weight}."""
    return _ns(ns) + "svcinfo:" + name


# Shared pieces.  now_ms(): Redis's clock.  log(rev_key, log_key, maxlen, k, op, v, t): take
# the next revision, append the change, return the revision.  fenced(lock_key, token): true
# when the token is '' (no fence) or the lock is held now with exactly that token.
_COORD_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function log(rev_key, log_key, maxlen, k, op, v, t)
  local rev = redis.call('INCR', rev_key)
  redis.call('XADD', log_key, 'MAXLEN', '~', maxlen, rev .. '-1', 'k', k, 'op', op, 'v', v, 't', t)
  return rev
end
local function fenced(lock_key, token)
  if token == '' then return true end
  return redis.call('HGET', lock_key, 'token') == token
end
"""

# KEYS[1] coord_lock, KEYS[2] coord_lock_fence, KEYS[3] coord_lock_waiters,
# KEYS[4] coord_lock_alive, KEYS[5] coord_lock_seq, KEYS[6] coord_revision, KEYS[7] coord_log
# ARGV[1] holder id, ARGV[2] lease ms, ARGV[3] "try" or "wait", ARGV[4] waiter keep-alive ms,
# ARGV[5] log maxlen, ARGV[6] lock name
# Grant the lock when it is free and no live waiter is ahead of the caller (FIFO: waiters
# whose keep-alive passed are dropped from the head first); the holder asking again gets its
# grant back (lease renewed).  "wait": a caller not granted joins the queue (keeping its
# place) and refreshes its keep-alive.
# Returns {1, token} when granted, else {0, the lease's remaining ms (0: free, someone else's
# turn), queue position (0-based; -1 for "try")}.
COORD_LOCK_ACQUIRE = _COORD_LIB + """
local me = ARGV[1]
local now = now_ms()
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder == me then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('HGET', KEYS[1], 'token'))}
end
while true do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head or head == me then break end
  local alive = tonumber(redis.call('ZSCORE', KEYS[4], head) or '0')
  if alive >= now then break end
  redis.call('ZREM', KEYS[3], head)
  redis.call('ZREM', KEYS[4], head)
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if not holder and (not head or head == me) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'holder', me, 'token', token)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[3], me)
  redis.call('ZREM', KEYS[4], me)
  log(KEYS[6], KEYS[7], ARGV[5], '@lock/' .. ARGV[6], 'grant', me, tostring(token))
  return {1, token}
end
local pttl = 0
if holder then pttl = redis.call('PTTL', KEYS[1]) end
if ARGV[3] ~= 'wait' then return {0, pttl, -1} end
if not redis.call('ZSCORE', KEYS[3], me) then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), me)
end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), me)
return {0, pttl, redis.call('ZRANK', KEYS[3], me)}
"""

# KEYS[1] coord_lock   ARGV[1] holder id, ARGV[2] token, ARGV[3] lease ms
# Extend the lease only while it is held with this grant.  Returns 1, or 0 if lost.
COORD_LOCK_RENEW = """
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] coord_lock, KEYS[2] coord_lock_waiters, KEYS[3] coord_lock_alive,
# KEYS[4] coord_revision, KEYS[5] coord_log
# ARGV[1] holder id, ARGV[2] token, ARGV[3] log maxlen, ARGV[4] lock name
# Release the lock if it is held with this grant.  Returns {released (1/0), the waiter now
# at the head of the queue ('' if none)}: the caller wakes it (coord_lock_wake).
COORD_LOCK_RELEASE = _COORD_LIB + """
local released = 0
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] and redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  log(KEYS[4], KEYS[5], ARGV[3], '@lock/' .. ARGV[4], 'release', ARGV[1], ARGV[2])
  released = 1
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1] or ''
return {released, head}
"""

# KEYS[1] coord_state, KEYS[2] coord_state_rev, KEYS[3] coord_revision, KEYS[4] coord_log,
# KEYS[5] the fencing lock's coord_lock (any key of the namespace when unfenced)
# ARGV[1] state key, ARGV[2] op: "set", "del" or "incr", ARGV[3] value JSON (set) or an
# integer delta (incr), ARGV[4] expected revision ('' any; '0' must not exist), ARGV[5]
# fence token ('' none), ARGV[6] log maxlen
# Returns {1, revision, value JSON} when applied; {-1} stale fence; {-2, current revision}
# when the expected revision does not match; {-3} incr on a value that is not an integer;
# {0} delete of a missing key.
COORD_STATE_WRITE = _COORD_LIB + """
if not fenced(KEYS[5], ARGV[5]) then return {-1} end
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= current then return {-2, current} end
local value = ARGV[3]
if ARGV[2] == 'del' then
  if current == 0 then return {0} end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  value = ''
elseif ARGV[2] == 'incr' then
  local old = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
  if not string.match(old, '^%-?%d+$') then return {-3} end
  local n = tonumber(old) + tonumber(ARGV[3])
  value = string.format('%d', n)
  redis.call('HSET', KEYS[1], ARGV[1], value)
else
  redis.call('HSET', KEYS[1], ARGV[1], value)
end
local rev = log(KEYS[3], KEYS[4], ARGV[6], ARGV[1], ARGV[2], value, '')
if ARGV[2] ~= 'del' then redis.call('HSET', KEYS[2], ARGV[1], rev) end
return {1, rev, value}
"""

# KEYS[1] coord_state, KEYS[2] coord_state_rev, KEYS[3] coord_revision
# ARGV[1] key prefix ('' all), ARGV[2] most entries
# A consistent read: {namespace revision, {key, value JSON, revision, ...}} of the keys under
# the prefix (sorted), to watch from that revision on.
COORD_STATE_LIST = """
local out = {}
local names = redis.call('HKEYS', KEYS[1])
table.sort(names)
local p, n = ARGV[1], 0
for _, k in ipairs(names) do
  if n >= tonumber(ARGV[2]) then break end
  if string.sub(k, 1, #p) == p then
    out[#out + 1] = k
    out[#out + 1] = redis.call('HGET', KEYS[1], k)
    out[#out + 1] = redis.call('HGET', KEYS[2], k) or '0'
    n = n + 1
  end
end
return {tonumber(redis.call('GET', KEYS[3]) or '0'), out}
"""

# KEYS[1] coord_state, KEYS[2] coord_state_rev
# ARGV[1] key
# {value JSON, revision} of one key (value false when absent): one consistent read in one
# command (a MULTI of two HGETs cost the gateway two more round trips' worth of work).
COORD_STATE_GET = """
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1]) or '0'}
"""

# KEYS[1] coord_queue, KEYS[2] coord_queue_items, KEYS[3] coord_queue_meta,
# KEYS[4] coord_queue_seq, KEYS[5] coord_queue_wake
# ARGV[1] value JSON, ARGV[2] priority 0..9 (9 first)
# Returns the new item's id.
COORD_QUEUE_PUT = """
local id = redis.call('INCR', KEYS[4])
local order = (9 - tonumber(ARGV[2])) * 8796093022208 + id
redis.call('ZADD', KEYS[1], order, id)
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('HSET', KEYS[3], id, order .. ',0')
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 63)
redis.call('PEXPIRE', KEYS[5], 60000)
return id
"""

# KEYS[1] coord_queue, KEYS[2] coord_queue_items, KEYS[3] coord_queue_meta,
# KEYS[4] coord_queue_inflight, then the dead-letter queue's KEYS[5] coord_queue,
# KEYS[6] coord_queue_items, KEYS[7] coord_queue_meta, KEYS[8] coord_queue_seq
# ARGV[1] visibility ms, ARGV[2] deliveries before dead-lettering (0: never)
# First every delivered item whose visibility deadline passed goes back in its place, or to
# the dead-letter queue once delivered ARGV[2] times; then the first ready item is delivered.
# Returns {id, value JSON, delivery number, visibility deadline ms}, or {} when none is ready.
COORD_QUEUE_GET = _COORD_LIB + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
local most = tonumber(ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[4], id)
  local meta = redis.call('HGET', KEYS[3], id)
  if meta then
    local order, count = string.match(meta, '^(%d+),(%d+)$')
    if most > 0 and tonumber(count) >= most then
      local value = redis.call('HGET', KEYS[2], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      local dead = redis.call('INCR', KEYS[8])
      local dorder = 9 * 8796093022208 + dead
      redis.call('ZADD', KEYS[5], dorder, dead)
      redis.call('HSET', KEYS[6], dead, value)
      redis.call('HSET', KEYS[7], dead, dorder .. ',0')
    else
      redis.call('ZADD', KEYS[1], order, id)
    end
  end
end
local id = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if not id then return {} end
redis.call('ZREM', KEYS[1], id)
local order, count = string.match(redis.call('HGET', KEYS[3], id), '^(%d+),(%d+)$')
count = tonumber(count) + 1
redis.call('HSET', KEYS[3], id, order .. ',' .. count)
local deadline = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[4], deadline, id)
return {id, redis.call('HGET', KEYS[2], id), count, deadline}
"""

# KEYS[1] coord_queue_items, KEYS[2] coord_queue_meta, KEYS[3] coord_queue_inflight,
# KEYS[4] the fencing lock's coord_lock (any key of the namespace when unfenced)
# ARGV[1] item id, ARGV[2] delivery number, ARGV[3] "ack" or "nack", ARGV[4] fence token
# ('' none), ARGV[5] nack: ms before the item may be delivered again
# Settle one delivery: only while the item is still out with that delivery number (a
# receipt of an earlier delivery, redelivered since, is stale).  ack removes the item; nack
# makes it due again after ARGV[5] ms (the next get puts it back or dead-letters it).
# Returns 1 done, 0 stale receipt, -1 stale fence.
COORD_QUEUE_SETTLE = _COORD_LIB + """
if not fenced(KEYS[4], ARGV[4]) then return -1 end
if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
local meta = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local _, count = string.match(meta, '^(%d+),(%d+)$')
if count ~= ARGV[2] then return 0 end
if ARGV[3] == 'ack' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[5]), ARGV[1])
end
return 1
"""

# KEYS[1] coord_service, KEYS[2] coord_service_info
# ARGV[1] instance id, ARGV[2] ttl ms, ARGV[3] info JSON ('' : heartbeat, only if registered)
# Returns 1, or 0 for a heartbeat of an instance that expired or never registered.
COORD_SERVICE_PUT = _COORD_LIB + """
local now = now_ms()
if ARGV[3] == '' then
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not expiry or tonumber(expiry) < now then return 0 end
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS[1] coord_service, KEYS[2] coord_service_info
# Drops expired instances, then returns {id, info JSON, expiry ms, ...} of the live ones.
COORD_SERVICE_LIST = _COORD_LIB + """
local now = now_ms()
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local out = {}
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or '{}'
  out[#out + 1] = live[i + 1]
end
return out
"""


# --- tenants, API keys (gantry.tenants) ---------------------------------------------------
# A tenant's functions are the FUNCTIONS members whose qualified name it owns
# (gantry.tenants.model.qualify); the default tenant has no record until one is written.

TENANTS = PREFIX + "tenants"                     # SET of tenant ids with a record


def tenant(tenant_id: str) -> str:
    """HASH: id, name, isolation, features (comma-separated), created (fields of tenants.model)."""
    return f"{PREFIX}tenant:{tenant_id}"


def tenant_quota(tenant_id: str) -> str:
    """HASH resource -> limit (cpu in millicores, memory in bytes); an absent field: no limit."""
    return f"{PREFIX}tenant:{tenant_id}:quota"


def tenant_keys(tenant_id: str) -> str:
    """SET of the ids of the tenant's API keys (revoked ones too, until the tenant is removed)."""
    return f"{PREFIX}tenant:{tenant_id}:keys"


def api_key(key_id: str) -> str:
    """HASH: id, tenant, scope, functions (comma-separated; "" all), hash (sha256 hex of the
    whole key), created, expires (0: never), created_by, revoked (wall time; absent: live), note."""
    return f"{PREFIX}apikey:{key_id}"


# KEYS[1] tenant hash, KEYS[2] tenant quota hash, KEYS[3] TENANTS, KEYS[4] EVENTS
# ARGV[1] tenant id, ARGV[2] "create" (fails if it exists) or "update" (fails if absent,
# except the default tenant, whose record may be written at any time), ARGV[3] number of
# tenant fields n, ARGV[4 .. 3+2n] field, value; then quota field, value pairs (the whole
# quota hash: it is replaced).  Announces "tenant:ID" (gateways reload its quotas).
# Returns 1 if written, 0 if the create found it or the update did not.
PUT_TENANT = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[2] == 'create' and exists then return 0 end
if ARGV[2] == 'update' and not exists and ARGV[1] ~= 'default' then return 0 end
local n = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + 2 * n))
redis.call('DEL', KEYS[2])
if #ARGV > 3 + 2 * n then redis.call('HSET', KEYS[2], unpack(ARGV, 4 + 2 * n)) end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', KEYS[4], 'tenant:' .. ARGV[1])
return 1
"""

# KEYS[1] api key hash, KEYS[2] EVENTS   ARGV[1] key id, ARGV[2] now
# Mark a live key revoked and announce "key:ID" (every gateway drops it from its cache at
# once; the cache's recheck bounds the delay if the announcement is lost).
# Returns 1 if revoked now, 0 if absent or revoked already.
REVOKE_KEY = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', ARGV[2])
redis.call('PUBLISH', KEYS[2], 'key:' .. ARGV[1])
return 1
"""


# --- quotas (gantry.tenants.quota) -------------------------------------------------------
# A tenant's limits are tenant_quota above.  What counts against them is kept here and
# changed only in the scripts that change the thing counted: functions by DEPLOY_VERSION and
# Store.delete_function; instances, cpu, memory and GPUs by RESERVE_CAPACITY and
# RELEASE_CAPACITY (with the node's capacity, both or neither) and Store.unreserve;
# concurrent invocations by the slot scripts below.  Requests per minute are a shared rate
# limit (shared_limit("tenant:ID"), gantry.hotpath.shared_limit), counted by no script here.


def tenant_functions(tenant_id: str) -> str:
    """SET of the qualified names of the tenant's deployed functions (its `functions` use)."""
    return f"{PREFIX}tenant:{tenant_id}:functions"


def tenant_used(tenant_id: str) -> str:
    """HASH instances, cpu (millicores), memory (bytes), gpus: what the tenant's placed
    instances hold (reserved with node capacity, released with it)."""
    return f"{PREFIX}tenant:{tenant_id}:used"


def tenant_inflight(tenant_id: str) -> str:
    """ZSET slot id -> lease deadline (ms, Redis's clock): the tenant's invocations in flight
    on every gateway.  A gateway renews its slots' leases; a dead gateway's slots lapse."""
    return f"{PREFIX}tenant:{tenant_id}:inflight"


# KEYS[1] tenant_inflight   ARGV[1] slot id, ARGV[2] limit, ARGV[3] lease ms
# Take a concurrency slot unless the tenant already holds `limit` live ones (slots whose
# lease lapsed are dropped first: their gateway died or lost Redis).
# Returns {1, slots held now} if taken, {0, slots held} if refused.
TENANT_SLOT_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then return {0, held} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return {1, held + 1}
"""

# KEYS[1] tenant_inflight   ARGV[1] lease ms, ARGV[2..] slot ids this gateway still holds
# Extend the leases of slots that still exist (XX: a lapsed, dropped slot is not revived).
# Returns how many were extended.
TENANT_SLOT_RENEW = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return n
"""


# --- secrets (gantry.tenants.secretstore) ---------------------------------------------------
# A tenant's secrets, sealed (gantry.tenants.secretbox: AES-GCM under a master key that is
# never in Redis); no plaintext is ever written here.


def tenant_secrets(tenant_id: str) -> str:
    """HASH secret name -> sealed bytes (secretbox: version, key fingerprint, nonce, ciphertext)."""
    return f"{PREFIX}tenant:{tenant_id}:secrets"


def tenant_secret_times(tenant_id: str) -> str:
    """HASH secret name -> "CREATED UPDATED" (wall times, floats)."""
    return f"{PREFIX}tenant:{tenant_id}:secrets:times"


# KEYS[1] tenant_secrets, KEYS[2] tenant_secret_times
# ARGV[1] name, ARGV[2] sealed bytes, ARGV[3] now, ARGV[4] most secrets the tenant may hold
# Write the sealed value; a new name keeps its creation time from now on.
# Returns 1 created, 0 replaced, -1 refused (a new name past ARGV[4]).
PUT_SECRET = """
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if not exists and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
local created = ARGV[3]
if exists then
  local times = redis.call('HGET', KEYS[2], ARGV[1])
  if times then created = string.match(times, '^(%S+)') or ARGV[3] end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], created .. ' ' .. ARGV[3])
if exists then return 0 end
return 1
"""

# KEYS[1] tenant_secrets, KEYS[2] tenant_secret_times   ARGV[1] name
# Returns 1 if removed, 0 if there was none.
DELETE_SECRET = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


# --- usage and audit (gantry.usage) --------------------------------------------------------
# Usage: one HASH per tenant and UTC day, field "FUNCTION|COUNTER" -> number (FUNCTION the
# bare name, COUNTER one of gantry.usage.model.COUNTERS).  Gateways add request counts
# (USAGE_ADD, from their local aggregates, every few seconds); the scheduler leader adds
# reserved resource-seconds (ACCRUE_INSTANCE).  Each bucket expires RETENTION_DAYS after its
# last write.  The audit stream records admin actions.

AUDIT = PREFIX + "audit"     # STREAM: time, actor (key id), tenant, action, target, detail (JSON); MAXLEN ~


def usage_day(tenant_id: str, day: str) -> str:
    """HASH "FUNCTION|COUNTER" -> number: the tenant's usage on UTC day "YYYY-MM-DD"."""
    return f"{PREFIX}usage:{tenant_id}:{day}"


# KEYS[i]: usage_day buckets
# ARGV[1] ttl seconds; then for each KEYS[i] in order: n (number of triples), then n triples
# field, "i" or "f" (HINCRBY or HINCRBYFLOAT), amount
# Add a gateway's aggregated counts to every bucket in one step (all or nothing) and
# refresh each bucket's expiry.  Returns the number of fields changed.
USAGE_ADD = """
local at, changed = 2, 0
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, n do
    if ARGV[at + 1] == 'i' then redis.call('HINCRBY', KEYS[i], ARGV[at], ARGV[at + 2])
    else redis.call('HINCRBYFLOAT', KEYS[i], ARGV[at], ARGV[at + 2]) end
    at = at + 3
    changed = changed + 1
  end
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return changed
"""

# KEYS[1] instance hash, KEYS[2] usage_day bucket of the instance's tenant for ARGV[1]'s day
# ARGV[1] now (wall time), ARGV[2] ttl seconds, ARGV[3] the qualified function name the
# caller read from the record, ARGV[4] its bare name (the bucket's field prefix)
# Add the instance's reservation from max(created, accrued_at) to ARGV[1] (cpu millicores /
# 1000 -> cpu_seconds, memory bytes / 2^30 -> memory_gib_seconds, gpus -> gpu_seconds) and
# move accrued_at to ARGV[1], in one step: two callers never count the same second, and one
# with an older clock adds nothing.  A record already released (its capacity given back,
# RELEASE_CAPACITY) or of another function accrues nothing.
# Returns the seconds accrued now, as a string ("0" when none).
ACCRUE_INSTANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'released') == 1 then return '0' end
local f = redis.call('HMGET', KEYS[1], 'function', 'created', 'accrued_at', 'cpu', 'memory', 'gpus')
if f[1] ~= ARGV[3] then return '0' end
local now = tonumber(ARGV[1])
local from = math.max(tonumber(f[2] or '0') or 0, tonumber(f[3] or '0') or 0)
if from <= 0 or now <= from then return '0' end
local dt = now - from
redis.call('HSET', KEYS[1], 'accrued_at', ARGV[1])
local amounts = {cpu_seconds = dt * (tonumber(f[4] or '0') or 0) / 1000,
                 memory_gib_seconds = dt * (tonumber(f[5] or '0') or 0) / 1073741824,
                 gpu_seconds = dt * (tonumber(f[6] or '0') or 0)}
for counter, amount in pairs(amounts) do
  if amount > 0 then
    redis.call('HINCRBYFLOAT', KEYS[2], ARGV[4] .. '|' .. counter, string.format('%.17g', amount))
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return string.format('%.17g', dt)
"""


# --- async invocations (gantry.invocations.store) ----------------------------------------
# An invocation is a HASH record; its place in line is an entry in a STREAM per function and
# priority, read by the gateways' dispatchers through one consumer group.  An entry is
# acknowledged (XACK, then XDEL) only in the script that stores the attempt's outcome, so the
# stream holds exactly the work not yet settled and is never trimmed.  Every claim of an entry
# takes the record's next `lease` (a fencing token): an outcome, a heartbeat or a retry is
# applied only with the current lease, so a dispatcher that lost its claim cannot overwrite
# its successor's result.  Scripts that name a record they did not get in KEYS build its key
# from ARGV's prefix: every key here lives on one Redis server (no Cluster slot rule).

ASYNC_GROUP = "dispatch"                         # the consumer group of every async stream
ASYNC_FUNCTIONS = PREFIX + "async:functions"     # SET of functions that ever had async work
ASYNC_DELAYED = PREFIX + "async:delayed"         # ZSET invocation id -> when its retry is due
ASYNC_DLQ = PREFIX + "async:dlq"                 # ZSET invocation id -> when it went dead or expired
ASYNC_CALLBACKS = PREFIX + "async:callbacks"     # ZSET invocation id -> when its callback is due
INVOCATION_PREFIX = PREFIX + "inv:"


def invocation(invocation_id: str) -> str:
    """HASH, fields plain strings (gantry.invocations.model.Invocation): id, function, tenant,
    state, priority, attempts, lease, created, updated, started, finished, next_at, deadline,
    body, content_type, body_hash, status, result, result_type, error_code, error, instance,
    consumer, entry (its stream entry id while in line), replays, idempotency_key, source,
    schedule, and the callback's fields (callback_url, callback_state and the others named in
    the "callbacks" section below).  EXPIREs a retention after it settles."""
    return INVOCATION_PREFIX + invocation_id


def async_stream(function: str, priority: str) -> str:
    """STREAM, one field `id` (an invocation id): FUNCTION's waiting work of PRIORITY."""
    return f"{PREFIX}async:{{{function}}}:{priority}"


def idempotency(tenant: str, function: str, key: str) -> str:
    """STRING invocation id: the invocation an Idempotency-Key of TENANT made for FUNCTION."""
    return f"{PREFIX}idem:{tenant}:{function}:{key}"


# KEYS[1] invocation, KEYS[2] async_stream, KEYS[3] ASYNC_FUNCTIONS, KEYS[4] idempotency key,
# KEYS[5] EVENTS
# ARGV[1] id, ARGV[2] function, ARGV[3] body_hash, ARGV[4] idempotency ttl ms (0: no key),
# ARGV[5] INVOCATION_PREFIX, ARGV[6] group, then field, value, ... of the new record
# A known idempotency key returns its invocation ({"existing", id}), or {"conflict", id} when
# that one was made with another body.  Else: write the record, enter it in the stream (the
# group is made on first use), remember the key, and wake the dispatchers ("async:FUNCTION"
# on EVENTS).  Returns {"created", id}.
ASYNC_SUBMIT = """
if tonumber(ARGV[4]) > 0 then
  local known = redis.call('GET', KEYS[4])
  if known then
    local hash = redis.call('HGET', ARGV[5] .. known, 'body_hash')
    if hash and hash ~= ARGV[3] then return {'conflict', known} end
    if hash then return {'existing', known} end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[6], '0', 'MKSTREAM')
end
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', entry)
redis.call('SADD', KEYS[3], ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[4]) end
redis.call('PUBLISH', KEYS[5], 'async:' .. ARGV[2])
return {'created', ARGV[1]}
"""

# KEYS[1] invocation, KEYS[2] its stream, KEYS[3] ASYNC_DLQ
# ARGV[1] consumer, ARGV[2] now, ARGV[3] stream entry id, ARGV[4] group, ARGV[5] dlq retention s
# A dispatcher read ENTRY (new, its own pending, or reclaimed).  Returns:
#   {"settled"}: nothing to run (record gone, cancelled or already settled): entry acked;
#   {"expired"}: past its deadline before it ran: now `expired`, in the DLQ, entry acked;
#   {"run", lease, attempts, "", record}: a new attempt (state running, attempts + 1);
#   {"resume", lease, attempts, instance, record}: it was running under an earlier claim: the
#   same attempt goes on (the dispatcher first asks INSTANCE for it, which answers without
#   running it again if it has it).
# RECORD is the whole record (HGETALL), so the dispatcher needs no second read.
ASYNC_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'cancelled' or state == 'succeeded' or state == 'failed'
   or state == 'dead' or state == 'expired' or redis.call('HGET', KEYS[1], 'entry') ~= ARGV[3] then
  redis.call('XACK', KEYS[2], ARGV[4], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  return {'settled'}
end
local lease = redis.call('HINCRBY', KEYS[1], 'lease', 1)
redis.call('HSET', KEYS[1], 'consumer', ARGV[1], 'updated', ARGV[2])
if state == 'running' then
  return {'resume', lease, tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0'),
          redis.call('HGET', KEYS[1], 'instance') or '', redis.call('HGETALL', KEYS[1])}
end
if tonumber(redis.call('HGET', KEYS[1], 'deadline') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'finished', ARGV[2], 'error_code', 'expired',
             'error', 'the invocation waited longer than its max_event_age and was not run')
  redis.call('XACK', KEYS[2], ARGV[4], ARGV[3])
  redis.call('XDEL', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], redis.call('HGET', KEYS[1], 'id'))
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {'expired'}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started', ARGV[2], 'instance', '')
return {'run', lease, attempts, '', redis.call('HGETALL', KEYS[1])}
"""

# KEYS[1] invocation; ARGV[1] lease, then field, value, ...
# Set fields of a running attempt (the instance it went to) if LEASE is still current.
# Returns 1, or 0 when the claim was lost.
ASYNC_NOTE = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS[1..n] the streams; ARGV[1] group, ARGV[2] consumer, ARGV[3] INVOCATION_PREFIX, then
# stream index (1-based), entry id, invocation id, lease, ... for each held entry
# A dispatcher's heartbeat: each entry whose record still carries the holder's lease has its
# idle time reset (XCLAIM to itself), so no other dispatcher reclaims work that is running.
# Returns the invocation ids whose claim was lost.
ASYNC_HEARTBEAT = """
local lost = {}
for i = 4, #ARGV, 4 do
  local rec = ARGV[3] .. ARGV[i + 2]
  if redis.call('HGET', rec, 'lease') == ARGV[i + 3] then
    redis.call('XCLAIM', KEYS[tonumber(ARGV[i])], ARGV[1], ARGV[2], 0, ARGV[i + 1], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i + 2]
  end
end
return lost
"""

# KEYS[1] invocation, KEYS[2] its stream, KEYS[3] ASYNC_DLQ, KEYS[4] ASYNC_CALLBACKS
# ARGV[1] lease, ARGV[2] state (succeeded, failed, dead, or expired: it waited for room past
# its max_event_age), ARGV[3] now, ARGV[4] entry id, ARGV[5] group, ARGV[6] retention s, then
# field, value, ... (status, result, error...)
# Store an attempt's outcome and only then acknowledge its entry; a dead or expired one
# enters the DLQ, and a callback, if the invocation has one, becomes due now.  The payload is
# dropped unless it is in the DLQ (a replay needs it).  Returns 1, or 0 when the lease is no longer current.
ASYNC_SETTLE = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished', ARGV[3], 'updated', ARGV[3], unpack(ARGV, 7))
redis.call('XACK', KEYS[2], ARGV[5], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
local id = redis.call('HGET', KEYS[1], 'id')
if ARGV[2] == 'dead' or ARGV[2] == 'expired' then
  redis.call('ZADD', KEYS[3], ARGV[3], id)
else
  redis.call('HDEL', KEYS[1], 'body')
end
if redis.call('HGET', KEYS[1], 'callback_url') then
  redis.call('HSET', KEYS[1], 'callback_state', 'pending')
  redis.call('ZADD', KEYS[4], ARGV[3], id)
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS[1] invocation, KEYS[2] its stream, KEYS[3] ASYNC_DELAYED
# ARGV[1] lease, ARGV[2] due time, ARGV[3] now, ARGV[4] entry id, ARGV[5] group, then field,
# value, ... (the failed attempt's error)
# An attempt failed and may be retried: state `retrying`, entry acked, the invocation due
# again at ARGV[2] (ASYNC_MOVE_DUE puts it back in line).  Returns 1, or 0 (lease lost).
ASYNC_RETRY = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'next_at', ARGV[2], 'updated', ARGV[3], 'instance', '',
           unpack(ARGV, 6))
redis.call('HDEL', KEYS[1], 'entry')
redis.call('XACK', KEYS[2], ARGV[5], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS[1] ASYNC_DELAYED; ARGV[1] now, ARGV[2] INVOCATION_PREFIX, ARGV[3] stream key prefix,
# ARGV[4] how many at most
# Retries that are due go back in line (their function's stream of their priority); one that
# was cancelled meanwhile is just dropped.  Returns how many were moved.
ASYNC_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local rec = ARGV[2] .. id
  if redis.call('HGET', rec, 'state') == 'retrying' then
    local f = redis.call('HMGET', rec, 'function', 'priority')
    local entry = redis.call('XADD', ARGV[3] .. '{' .. f[1] .. '}:' .. f[2], '*', 'id', id)
    redis.call('HSET', rec, 'entry', entry, 'state', 'queued')
    moved = moved + 1
  end
end
return moved
"""

# KEYS[1] invocation, KEYS[2] ASYNC_DELAYED; ARGV[1] now, ARGV[2] retention s
# Cancel an invocation that has not started (queued, or retrying between attempts): its entry
# is dropped by the next dispatcher that reads it.  Returns the state it was in ("" if none).
ASYNC_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'queued' or state == 'retrying' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', ARGV[1], 'updated', ARGV[1])
  redis.call('HDEL', KEYS[1], 'body')
  redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return state
"""

# KEYS[1] invocation, KEYS[2] its stream, KEYS[3] ASYNC_DLQ, KEYS[4] EVENTS
# ARGV[1] now, ARGV[2] new deadline, ARGV[3] group
# Replay a dead (or expired) invocation: the same id starts over (attempts 0) with a new
# deadline, back in line (the dispatchers woken) and out of the DLQ.  Returns its state
# before ("" if none).
ASYNC_REPLAY = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state ~= 'dead' and state ~= 'expired' then return state end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[3], '0', 'MKSTREAM')
end
local entry = redis.call('XADD', KEYS[2], '*', 'id', redis.call('HGET', KEYS[1], 'id'))
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'deadline', ARGV[2], 'updated', ARGV[1],
           'entry', entry, 'replays', (tonumber(redis.call('HGET', KEYS[1], 'replays') or '0') + 1))
redis.call('HDEL', KEYS[1], 'finished', 'status', 'result', 'result_type', 'error_code', 'error', 'instance')
if redis.call('HGET', KEYS[1], 'callback_url') then
  redis.call('HSET', KEYS[1], 'callback_state', 'waiting')   -- a new settle starts a new delivery
end
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
redis.call('PUBLISH', KEYS[4], 'async:' .. redis.call('HGET', KEYS[1], 'function'))
return state
"""

# --- schedules (gantry.scheduler.schedulestore) -------------------------------------------
# A [[schedules]] entry's state is one HASH per function and schedule, written only by the
# scheduler leader.  `claimed` is a mark that only moves forward: every tick at or before it
# was fired, is being fired or was skipped.  A tick is claimed (mark moved, invocation id
# chosen) under the leader's epoch before its invocation is submitted, and `fired` follows
# the submit: a claim with no `fired` yet (`pending` set) is submitted again by the next pass
# under the same idempotency key and id, so a leader that crashed in between loses nothing
# and doubles nothing.

SCHEDULES = PREFIX + "schedules"                 # SET "FUNCTION SCHEDULE" of every schedule record


def schedule(function: str, name: str) -> str:
    """HASH: claimed (unix s, the mark), pending (the invocation id of a claimed tick not yet
    submitted), fired (unix s of the last tick submitted), invocation (its id), missed (ticks
    skipped by the catch-up policy), next (unix s of the next tick after the mark), sig (the
    cron and time zone the mark was made under)."""
    return f"{PREFIX}schedule:{{{function}}}:{name}"


# KEYS[1] LEADER_EPOCH, KEYS[2] schedule, KEYS[3] SCHEDULES
# ARGV[1] epoch, ARGV[2] the mark it was decided from ("" for no record), ARGV[3] new mark,
# ARGV[4] invocation id to fire at the new mark ("" : none, the mark only moves; an older
# `pending` is dropped with it), ARGV[5]
# ticks newly missed, ARGV[6] next tick, ARGV[7] sig, ARGV[8] "FUNCTION SCHEDULE"
# Fenced by equality: only the current leader's epoch claims.  The claim is taken only when
# the record's mark is still the one decided from and the new mark is later, so one tick is
# claimed once, whoever asks.  Returns 1 if claimed, 0 if the epoch is not the leader's,
# -1 if the record moved on (nothing done: the caller decides again next pass).
SCHEDULE_CLAIM_TICK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local mark = redis.call('HGET', KEYS[2], 'claimed') or ''
if mark ~= ARGV[2] then return -1 end
if mark ~= '' and tonumber(ARGV[3]) <= tonumber(mark) then return -1 end
redis.call('HSET', KEYS[2], 'claimed', ARGV[3], 'next', ARGV[6], 'sig', ARGV[7])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'pending', ARGV[4]) else redis.call('HDEL', KEYS[2], 'pending') end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', KEYS[2], 'missed', ARGV[5]) end
redis.call('SADD', KEYS[3], ARGV[8])
return 1
"""

# KEYS[1] schedule; ARGV[1] tick, ARGV[2] invocation id
# The claimed tick's invocation was submitted: note it as the last fired (a later one already
# noted wins) and clear `pending` if it was this tick's.  Not fenced: it records a fact.
SCHEDULE_FIRED = """
if tonumber(redis.call('HGET', KEYS[1], 'fired') or '-1') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'fired', ARGV[1], 'invocation', ARGV[2])
end
if redis.call('HGET', KEYS[1], 'claimed') == ARGV[1] then redis.call('HDEL', KEYS[1], 'pending') end
return 1
"""

# KEYS[1] LEADER_EPOCH, KEYS[2] SCHEDULES, KEYS[3..] schedule records
# ARGV[1] epoch, ARGV[2..] their "FUNCTION SCHEDULE" members
# Forget schedules no longer in any active spec (removed, or their function deleted), so one
# added again starts afresh.  Returns 1, or 0 if the epoch is not the leader's.
SCHEDULE_FORGET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[2], ARGV[i - 1])
end
return 1
"""


# --- async invocations: callbacks (gantry.invocations.callbacks) ---------------------------
# A settled invocation with a callback_url is in ASYNC_CALLBACKS, scored by when its next POST
# is due (ASYNC_SETTLE adds it, due at once).  A deliverer (any gateway) claims due ids by
# moving their score a lease ahead: if it stops mid-POST, the id falls due again when the
# lease ends and any gateway takes it up.  Each claim takes the record's next
# `callback_lease` (a fencing token), and an outcome is stored only with the current one, so
# a deliverer whose lease ran out cannot overwrite its successor's.  Record fields used here:
# callback_state (waiting, pending, delivering, delivered, failed), callback_attempts,
# callback_status, callback_error, callback_next, callback_delivered, callback_updated,
# callback_lease, callback_deliverer, callback_for (the `finished` time the attempts count
# for: a replayed invocation settles again with a new one and starts a new series).

# STRING: the platform's callback signing secret (32 random bytes), SET NX by the first
# gateway that needs it, so every replica signs alike; unused when GANTRY_CALLBACK_SECRET(_FILE)
# is set.  Losing it (Redis data lost) makes a new one: receivers must fetch the secret again.
CALLBACK_SECRET = PREFIX + "async:callback-secret"

# KEYS[1] ASYNC_CALLBACKS
# ARGV[1] now, ARGV[2] lease end (now + lease), ARGV[3] INVOCATION_PREFIX, ARGV[4] how many at
# most, ARGV[5] deliverer id, ARGV[6] attempts allowed in all
# Claim the callbacks due by now: each becomes `delivering` with attempts + 1 and is due again
# at the lease end.  Ids with nothing to deliver (record gone or expired, not settled: replayed
# meanwhile, or already delivered or failed) leave the set.  One whose last allowed attempt was
# claimed and never reported (its deliverer stopped) is `failed` instead.
# Returns {id, token, attempt, ...} for each claimed.
ASYNC_CALLBACK_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(due) do
  local rec = ARGV[3] .. id
  local f = redis.call('HMGET', rec, 'state', 'callback_url', 'callback_state', 'finished', 'callback_for')
  local settled = f[1] == 'succeeded' or f[1] == 'failed' or f[1] == 'dead'
  if (not settled) or (not f[2]) or (f[3] ~= 'pending' and f[3] ~= 'delivering') then
    redis.call('ZREM', KEYS[1], id)
  else
    if f[4] ~= f[5] then
      redis.call('HSET', rec, 'callback_for', f[4] or '', 'callback_attempts', 0)
      redis.call('HDEL', rec, 'callback_status', 'callback_error', 'callback_next', 'callback_delivered')
    end
    local token = redis.call('HINCRBY', rec, 'callback_lease', 1)
    local attempt = redis.call('HINCRBY', rec, 'callback_attempts', 1)
    if attempt > tonumber(ARGV[6]) then
      redis.call('HSET', rec, 'callback_attempts', attempt - 1, 'callback_state', 'failed',
                 'callback_updated', ARGV[1],
                 'callback_error', 'the last delivery attempt was lost: its gateway stopped before it ended')
      redis.call('HDEL', rec, 'callback_next')
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('HSET', rec, 'callback_state', 'delivering', 'callback_deliverer', ARGV[5],
                 'callback_updated', ARGV[1])
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = attempt
    end
  end
end
return out
"""

# KEYS[1] invocation, KEYS[2] ASYNC_CALLBACKS
# ARGV[1] token (callback_lease), ARGV[2] callback state (delivered, pending or failed), ARGV[3]
# now, ARGV[4] when the next attempt is due (pending only), ARGV[5] the receiver's status ("":
# it gave none), ARGV[6] error ("": none)
# Store one POST's outcome if TOKEN is still current: `pending` is due again at ARGV[4];
# `delivered` and `failed` leave the set.  Returns 1, or 0 when the claim was lost (or the
# record is gone).
ASYNC_CALLBACK_OUTCOME = """
if redis.call('HGET', KEYS[1], 'callback_lease') ~= ARGV[1] then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'callback_state', ARGV[2], 'callback_updated', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'callback_status', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'callback_status')
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'callback_error', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'callback_error')
end
if ARGV[2] == 'pending' then
  redis.call('HSET', KEYS[1], 'callback_next', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[4], id)
else
  redis.call('HDEL', KEYS[1], 'callback_next')
  redis.call('ZREM', KEYS[2], id)
  if ARGV[2] == 'delivered' then redis.call('HSET', KEYS[1], 'callback_delivered', ARGV[3]) end
end
return 1
"""


# --- scaling decisions (gantry.scheduler.decisions) ----------------------------------------
# The scheduler leader remembers its last scaling decision in the function record (fields
# scale_target, scaled_up_at, scaled_at: a new leader keeps the cooldowns) and appends each
# decision to a capped list the admin API reads (GET /v1/functions/NAME/decisions).
# `gantry warm` writes the record's warm and warm_until (UPDATE_FUNCTION).

MAX_DECISIONS = 50                               # kept per function, newest first


def function_decisions(name: str) -> str:
    """LIST of JSON {time, from, to, reason}, newest first (LPUSH, LTRIM to MAX_DECISIONS);
    removed with the function."""
    return f"{PREFIX}fn:{name}:decisions"


# KEYS[1] LEADER_EPOCH, KEYS[2] function hash, KEYS[3] function_decisions
# ARGV[1] epoch, ARGV[2] the decision (JSON), ARGV[3] MAX_DECISIONS, ARGV[4] "1": the target
# changed, then ARGV[5] scale_target, ARGV[6] scaled_up_at, ARGV[7] scaled_at
# Fenced like the scheduler's other writes (0: stale epoch).  Nothing for a function that
# is gone (a delete between read and write leaves no list behind).  Returns 1, or 2 when
# the function does not exist.
RECORD_DECISION = _FENCED + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], 'scale_target', ARGV[5], 'scaled_up_at', ARGV[6], 'scaled_at', ARGV[7])
end
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return 1
"""


# --- function logs (the worker's LogShipper through Store.append_logs) ----------------------

# KEYS[1] function hash, KEYS[2] function_logs stream
# ARGV[1] maxlen (about: MAXLEN ~), then instance, line, instance, line, ...
# Append the lines only while the function exists: lines of a removed function's draining
# instances would otherwise bring back the stream its delete removed.  Returns the count added.
APPEND_LOGS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'instance', ARGV[i], 'line', ARGV[i + 1])
end
return (#ARGV - 1) / 2
"""


# --- metrics: per-minute rows of functions and tenants (gantry.metrics) --------------------
# One HASH per function (or tenant) and UTC hour (hour = unix time // 3600), field
# "MM|FIELD" -> whole number (MM the minute in the hour, FIELD one of gantry.metrics.model's:
# counts and microseconds that gateways add, and two peaks kept as the max).  Gateways write
# them (METRICS_ADD) from their local aggregates every GANTRY_METRICS_FLUSH_INTERVAL; each
# expires GANTRY_METRICS_RETENTION after its hour ends.


def metrics_function(qualified: str, hour: int) -> str:
    """HASH "MM|FIELD" -> int: the function's metrics (qualified name) in HOUR."""
    return f"{PREFIX}metrics:fn:{qualified}:{hour}"


def metrics_tenant(tenant_id: str, hour: int) -> str:
    """HASH "MM|FIELD" -> int: the sum of the tenant's functions' metrics in HOUR."""
    return f"{PREFIX}metrics:tenant:{tenant_id}:{hour}"


# KEYS[i]: metrics_function / metrics_tenant hashes
# ARGV: for each KEYS[i] in order: expire-at (unix seconds), n (number of pairs to add), m
# (number of pairs to raise to at least), then n pairs field, amount (HINCRBY), then m pairs
# field, amount (kept as the max of the stored value and amount)
# Add a gateway's aggregated rows in one step (all or nothing) and set each hash's expiry.
# Returns the number of fields changed.
METRICS_ADD = """
local at, changed = 1, 0
for i = 1, #KEYS do
  local expire_at, n, m = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[i], ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  for _ = 1, m do
    local old = tonumber(redis.call('HGET', KEYS[i], ARGV[at]) or '0') or 0
    if tonumber(ARGV[at + 1]) > old then redis.call('HSET', KEYS[i], ARGV[at], ARGV[at + 1]) end
    at = at + 2
  end
  changed = changed + n + m
  redis.call('EXPIREAT', KEYS[i], expire_at)
end
return changed
"""


# --- GPU leases (gantry.scheduler.gpulease) -------------------------------------------------
# A GPU instance's lease is taken by UUID in the same step as its node's CPU and memory and
# its tenant's usage, and fenced by the leader epoch: the whole decision (which GPUs) is
# made here, on the node's inventory and current leases, so racing placements never share a
# whole GPU or overfill one.  gantry.scheduler.gpulease.choose is its pure twin (the tests
# check they agree).  Leases live in the node alloc hash as "gpu:UUID" -> bytes and on the
# instance record as gpu_lease; RELEASE_CAPACITY gives them back with the rest, once.

# KEYS[1] LEADER_EPOCH, KEYS[2] node hash, KEYS[3] node alloc hash, KEYS[4] node alive key,
# and for a tenant's instance KEYS[5] tenant_used hash, KEYS[6] tenant_quota hash
# ARGV[1] epoch, ARGV[2] cpu millicores, ARGV[3] memory bytes, ARGV[4] whole GPUs wanted,
# ARGV[5] bytes of one GPU wanted (a share; 0 with whole GPUs), ARGV[6..] GPU types, lower-case,
# best first (none: any)
# Returns -1 if the epoch is stale, 0 if it does not fit or the node is dead,
# {resource, used, limit} when the tenant's quota refuses (a share counts as one GPU), or
# {'lease', uuid1, bytes1, uuid2, bytes2, ...} when reserved.
RESERVE_GPU_CAPACITY = """
if tonumber(ARGV[1]) < tonumber(redis.call('GET', KEYS[1]) or '0') then return -1 end
local cpu, mem = tonumber(ARGV[2]), tonumber(ARGV[3])
local count, share = tonumber(ARGV[4]), tonumber(ARGV[5])
local qgpus = count
if count == 0 and share > 0 then qgpus = 1 end""" + _quota_and_fit(node=2, alloc=3, alive=4, used=5, quota=6, gpus="qgpus") + """
local raw = redis.call('HGET', KEYS[2], 'gpu_inventory')
if not raw or raw == '' then return 0 end
local ok, devices = pcall(cjson.decode, raw)
if not ok or type(devices) ~= 'table' then return 0 end
local types = {}
for i = 6, #ARGV do types[#types + 1] = ARGV[i] end
local function rank(name)
  if #types == 0 then return 0 end
  local lower = string.lower(tostring(name))
  for i, t in ipairs(types) do
    if string.find(lower, t, 1, true) then return i - 1 end
  end
  return nil
end
local chosen = {}
for i, d in ipairs(devices) do
  local total = tonumber(d.memory) or 0
  local r = nil
  if tonumber(d.mig) == 0 and total > 0 then r = rank(d.name) end
  if r then
    local used = tonumber(redis.call('HGET', KEYS[3], 'gpu:' .. d.uuid) or '0')
    if count > 0 then
      if used <= 0 then
        chosen[r] = chosen[r] or {}
        table.insert(chosen[r], {d.uuid, total})
      end
    elseif total - used >= share then
      local left = total - used - share
      local best = chosen.best
      if not best or r < best[3] or (r == best[3] and left < best[4]) then
        chosen.best = {d.uuid, share, r, left}
      end
    end
  end
end
local lease = nil
if count > 0 then
  local ranks = {}
  for r, _ in pairs(chosen) do ranks[#ranks + 1] = r end
  table.sort(ranks)
  for _, r in ipairs(ranks) do
    if #chosen[r] >= count then
      lease = {}
      for j = 1, count do lease[j] = chosen[r][j] end
      break
    end
  end
elseif chosen.best then
  lease = {chosen.best}
end
if not lease then return 0 end
redis.call('HINCRBY', KEYS[3], 'cpu', cpu)
redis.call('HINCRBY', KEYS[3], 'memory', mem)
local out = {'lease'}
for _, g in ipairs(lease) do
  local n = string.format('%d', g[2])
  redis.call('HINCRBY', KEYS[3], 'gpu:' .. g[1], n)
  out[#out + 1] = g[1]
  out[#out + 1] = n
end
""" + _take_for_tenant(used=5, gpus="qgpus") + """return out
"""


# --- pre-created containers (worker/spares.py; issue 16 part 4) ------------------------------

def node_spares(node_id: str) -> str:
    """HASH function name -> "VERSION:INSTANCE_ID": the container this node's worker created
    ahead of need for the function (not started, no record, no reservation).  The worker
    writes an entry once the container exists; the scheduler takes it (TAKE_SPARE) to give
    the next instance it places there that id, so its start is Docker's start alone."""
    return f"{PREFIX}node:{node_id}:spares"


# KEYS[1] LEADER_EPOCH, KEYS[2] node_spares(node)
# ARGV[1] epoch, ARGV[2] function, ARGV[3] version
# Take the node's spare of the function when it is of that version: its instance id (the
# entry is gone, so no other placement gets it), or '' when there is none (or another
# version's, left for the worker to replace).  0 if the epoch is stale.
TAKE_SPARE = _FENCED + """
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if not entry then return '' end
local sep = string.find(entry, ':', 1, true)
if not sep or string.sub(entry, 1, sep - 1) ~= ARGV[3] then return '' end
redis.call('HDEL', KEYS[2], ARGV[2])
return string.sub(entry, sep + 1)
"""

# KEYS[1] node_spares(node)
# ARGV[1] function, ARGV[2] the entry ("VERSION:INSTANCE_ID") the worker offered
# The worker withdraws its spare: 1 if the entry was still there (nobody took it: the
# container may go), 0 if the scheduler took it (the instance is starting: keep it).
WITHDRAW_SPARE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
