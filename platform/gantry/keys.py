"""Every Redis key Gantry uses, and every Lua script, in one place (as arq does).

Values are msgpack unless a comment says otherwise.  Multi-key changes are Lua scripts
(or WATCH/MULTI), never read-modify-write in Python.  Each script's header names its
KEYS[n] and ARGV[n].  Sections belong to components; add to the section you own.
"""
from __future__ import annotations

PREFIX = "gantry:"

# --- hot path: shared rate limits (gantry.hotpath) --------------------------------------
