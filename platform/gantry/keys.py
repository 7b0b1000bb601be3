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
    cpu_allocatable (millicores placement may reserve), used_cpu, used_memory (fields of state.Node)."""
    return f"{PREFIX}node:{node_id}"


def node_alive(node_id: str) -> str:
    """STRING with a TTL, refreshed by the worker's heartbeat: the node is alive while it exists."""
    return f"{PREFIX}node:{node_id}:alive"


def node_alloc(node_id: str) -> str:
    """HASH cpu (millicores), memory (bytes): what the scheduler has placed there."""
    return f"{PREFIX}node:{node_id}:alloc"


def node_instances(node_id: str) -> str:
    """SET of instance ids placed on the node."""
    return f"{PREFIX}node:{node_id}:instances"


def node_commands(node_id: str) -> str:
    """LIST of msgpack commands for the node's worker (LPUSH by the scheduler, BRPOP by the worker)."""
    return f"{PREFIX}node:{node_id}:cmds"


# KEYS[1] node hash, KEYS[2] node alloc hash, KEYS[3] node alive key
# ARGV[1] cpu millicores wanted, ARGV[2] memory bytes wanted
# Reserve capacity on a live node atomically: 1 if reserved, 0 if it does not fit or is dead.
RESERVE_CAPACITY = """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local cap_cpu = tonumber(redis.call('HGET', KEYS[1], 'cpu_allocatable') or '0')
if cap_cpu == 0 then cap_cpu = tonumber(redis.call('HGET', KEYS[1], 'cpu') or '0') end
local cap_mem = tonumber(redis.call('HGET', KEYS[1], 'memory') or '0')
local used_cpu = tonumber(redis.call('HGET', KEYS[2], 'cpu') or '0')
local used_mem = tonumber(redis.call('HGET', KEYS[2], 'memory') or '0')
local cpu, mem = tonumber(ARGV[1]), tonumber(ARGV[2])
if used_cpu + cpu > cap_cpu or used_mem + mem > cap_mem then return 0 end
redis.call('HINCRBY', KEYS[2], 'cpu', cpu)
redis.call('HINCRBY', KEYS[2], 'memory', mem)
return 1
"""

# KEYS[1] node alloc hash, KEYS[2] instance hash
# ARGV: none.  Give back what the instance reserved, once: the instance's 'released' field
# guards against a double release.  Returns 1 if released now, 0 if already released.
RELEASE_CAPACITY = """
if redis.call('HSETNX', KEYS[2], 'released', '1') == 0 then return 0 end
local cpu = tonumber(redis.call('HGET', KEYS[2], 'cpu') or '0')
local mem = tonumber(redis.call('HGET', KEYS[2], 'memory') or '0')
redis.call('HINCRBY', KEYS[1], 'cpu', -cpu)
redis.call('HINCRBY', KEYS[1], 'memory', -mem)
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
# ARGV[1] function name, ARGV[2] why its wanted instances cannot be placed ("" to clear)
# Keep the function's `pending_reason` field (read by the gateway and CLI to say "no
# capacity") without recreating a deleted function's hash; announce a change as "fn:NAME".
# Returns 1 if it changed, 0 otherwise.
SET_PENDING_REASON = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'pending_reason') or ''
if old == ARGV[2] then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'pending_reason')
else redis.call('HSET', KEYS[1], 'pending_reason', ARGV[2]) end
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


# KEYS[1] function hash, KEYS[2] FUNCTIONS, KEYS[3] EVENTS channel
# ARGV[1] name, ARGV[2] the new version (its version hash is already written), ARGV[3] now
# Point the function at a freshly written version: latest = max(latest, version); active is
# set only for a function that has none (its first version).  Returns the active version.
DEPLOY_VERSION = """
local v = tonumber(ARGV[2])
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
if v > latest then redis.call('HSET', KEYS[1], 'latest', v) end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'updated', ARGV[3])
local active = redis.call('HGET', KEYS[1], 'active')
if not active then
  redis.call('HSET', KEYS[1], 'active', v)
  active = v
end
redis.call('SADD', KEYS[2], ARGV[1])
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
