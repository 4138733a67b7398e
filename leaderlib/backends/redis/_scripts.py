"""The Lua scripts of the Redis backend, run by SHA, and the ACL grant they need.

Every write of a lease (and of a job's run record) runs in one script, so it
is one round trip, and every write a follower must hear PUBLISHes its result
inside that script: a follower's watch builds the new record from the message
alone.
Messages on ``P E :events``::

    acquired <pttl_ms> <value>    a new term; value is the stored JSON record
    renewed <pttl_ms> <value>     the same term, extended
    released                      the lease was deleted
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

__all__ = ["ACQUIRE", "GRANT", "RECORD_RUN", "RELEASE", "RENEW", "WAIT_GRANT", "Script"]

# Start a new term if nobody holds the lease, or if it is exactly the version
# the elector judged ended (ARGV[3]); otherwise report who holds it. One
# round trip either way.
#   KEYS[1]  the lease key            KEYS[2]  the fencing counter key
#   ARGV[1]  lease in milliseconds
#   ARGV[2]  the new record as a JSON object without its closing brace and
#            without fencing_token/transitions, which the script appends
#            (holder, random token, lease_duration, acquire/renew time, seq 1)
#   ARGV[3]  the takeover version "<token>.<seq>", or "" for none
#   ARGV[4]  the highest fencing token the candidate has seen in this election (0: none)
#   returns  {value, pttl_ms, acquired, behind}: the value now at KEYS[1], 1 if
#            this call wrote it, and the counter's value if it was behind ARGV[4]
#            (else 0)
#   publishes 'acquired <pttl_ms> <value>' on KEYS[1]..':events' for a new term
# A live lease is never adopted because its holder names us: every new term
# gets a new fencing token, and only the exact version the elector ended
# (its own lost term, say) may be replaced before Redis expires it.
# Redis does not undo a script's writes when a later command in it fails,
# so everything that can fail (INCR on a broken counter, PUBLISH without the
# ACL channel permission) runs before the SET. Subscribers still hear the
# PUBLISH only after the script, when the SET is in place. INCR comes after
# the GET so a failed attempt never burns a token. A counter at or below a
# token the candidate has already seen means Redis lost writes it had
# acknowledged (a restart without persistence, a failover to a replica that
# missed the INCR): the counter is raised above it, so a token is never
# issued twice to anyone who could know it. The record is built by
# concatenation and the arguments are few: this is the hot path, measured
# against a bare SET NX PX.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ended = false
  if ARGV[3] ~= '' then
    local ok, rec = pcall(cjson.decode, current)
    ended = ok and type(rec) == 'table' and (tostring(rec.token) .. '.' .. tostring(rec.seq)) == ARGV[3]
  end
  if not ended then
    return {current, redis.call('PTTL', KEYS[1]), 0, 0}
  end
end
local fencing = redis.call('INCR', KEYS[2])
local behind = 0
if fencing <= tonumber(ARGV[4]) then
  behind = fencing
  fencing = tonumber(ARGV[4]) + 1
  redis.call('SET', KEYS[2], fencing)
end
local value = ARGV[2] .. ',"fencing_token":' .. fencing .. ',"transitions":' .. (fencing - 1) .. '}'
redis.call('PUBLISH', KEYS[1] .. ':events', 'acquired ' .. ARGV[1] .. ' ' .. value)
redis.call('SET', KEYS[1], value, 'PX', ARGV[1])
return {value, tonumber(ARGV[1]), 1, behind}
"""

# Extend the lease if it is still the one acquired with ARGV[1], and tell
# the followers the new record, so they need not read it.
#   KEYS[1]  the lease key
#   ARGV[1]  the acquisition's random token   ARGV[2]  lease in milliseconds
#   ARGV[3]  wall time now, ISO-8601
#   returns  the new seq, or false if the key holds anything else (lease lost)
#   publishes 'renewed <pttl_ms> <value>' on KEYS[1]..':events'
# PUBLISH before SET: if the ACL refuses the channel, nothing was written.
# Only seq and renew_time change, so the leader, which sent renew_time, needs
# only seq back to know the record: no JSON to parse per renewal.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if not current then return false end
local ok, rec = pcall(cjson.decode, current)
if not ok or type(rec) ~= 'table' or rec.token ~= ARGV[1] then return false end
rec.seq = (tonumber(rec.seq) or 0) + 1
rec.renew_time = ARGV[3]
local value = cjson.encode(rec)
redis.call('PUBLISH', KEYS[1] .. ':events', 'renewed ' .. ARGV[2] .. ' ' .. value)
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return rec.seq
"""

# Delete the lease if it is still the one acquired with ARGV[1], and tell
# the followers at once.
#   KEYS[1]  the lease key
#   ARGV[1]  the acquisition's random token
#   returns  1 if released, 0 if the lease was no longer ours
#   publishes 'released' on KEYS[1]..':events'
# PUBLISH before DEL: if the ACL refuses the channel, the lease stays ours.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, rec = pcall(cjson.decode, current)
if not ok or type(rec) ~= 'table' or rec.token ~= ARGV[1] then return 0 end
redis.call('PUBLISH', KEYS[1] .. ':events', 'released')
redis.call('DEL', KEYS[1])
return 1
"""

# Store a job's run record, only while the lease is the term the run names:
# the check and the write in one step, so a paused ex-leader cannot write
# over its successor's record. The holder AND the token must match: the key
# is gone once the lease was released or expired by Redis, and a takeover
# writes a new token.
#   KEYS[1]  the lease key            KEYS[2]  the election's runs hash
#   ARGV[1]  the run's identity       ARGV[2]  the run's fencing token
#   ARGV[3]  the job (the hash field) ARGV[4]  the record (JSON, _runs.encode_run)
#   returns  {1} if written; else {0, holder, fencing_token} of the lease now
#            ('' for no lease, or one that is not a lease record)
# Writes nothing else and publishes nothing: followers do not need run records.
_RECORD_RUN = """
local current = redis.call('GET', KEYS[1])
local holder, fencing = '', ''
if current then
  local ok, rec = pcall(cjson.decode, current)
  if ok and type(rec) == 'table' and type(rec.holder) == 'string' and type(rec.fencing_token) == 'number' then
    if rec.holder == ARGV[1] and rec.fencing_token == tonumber(ARGV[2]) then
      redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
      return {1}
    end
    holder, fencing = rec.holder, string.format('%d', rec.fencing_token)
  end
end
return {0, holder, fencing}
"""

#: What a least-privilege ACL user needs, for error messages and the docs.
GRANT = (
    "ACL SETUSER <user> on >PASSWORD resetkeys ~{prefix}* resetchannels &{prefix}* "
    "+get +pttl +evalsha +script|load +subscribe +unsubscribe +ping "
    "+set +incr +del +publish +hset +hgetall"
)
#: What ``wait_replicas`` adds to :data:`GRANT`.
WAIT_GRANT = " +wait"


@dataclasses.dataclass(frozen=True)
class Script:
    """A Lua script run by SHA; its source is sent once per server (SCRIPT LOAD on NOSCRIPT)."""

    name: str
    source: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by SHA1


ACQUIRE = Script("acquire", _ACQUIRE)
RENEW = Script("renew", _RENEW)
RELEASE = Script("release", _RELEASE)
RECORD_RUN = Script("record_run", _RECORD_RUN)
