"""The one server-side script every online write goes through: the winning-row rule, kept exactly, and expiry.

Redis runs a script atomically, so concurrent writers of one key cannot interleave between the read of the
stored record and the write of the new one.

Which record wins is ``quasar.signals.ordering``'s rule: the higher rank (event time, then created time, a null
created time being int64 min) wins, and an exact tie goes to the later write. Both times sit in the UFR
record header (``quasar.signals.ufr.codec``: event time at byte 10, created time at byte 18, int64 little-endian;
Lua's ``struct`` counts from 1). Lua numbers are doubles, exact only within ±2^53, so the script never
turns a time into one number: it unpacks each as its signed high and unsigned low 32-bit halves (both exact)
and compares the four halves in order. A stored record of another format version (or a damaged one) is
older than any record, so a rewrite upgrades it.

Per key the caller gives a record and a *floor*:

* floor ``""`` (push, materialization of new rows): newer wins. An empty record writes nothing.
* floor ``"*"`` (an exact rebuild): the record replaces whatever is stored; an empty record deletes the field.
* floor = a 16-byte rank (a correction, see ``quasar.online.materialize``): a stored record whose rank is not
  above the floor was derived from offline rows that are gone, so it is replaced (deleted for an empty
  record); one above it (written online only, newer than anything offline had) is kept unless the new
  record wins by the rule.

Expiry (milliseconds): when a signal with a TTL writes a key, its expiry moves to
``max(current expiry, event_time + 2 * ttl, now + ttl)``, never earlier, except that a key without an
expiry that already existed keeps none (it holds a signal without a TTL). A signal without a TTL makes its
key persistent. With the reset flag (a TTL change) the expiry is re-applied to the key's record whether or
not it was replaced, and when the key holds only this signal's field it is set to exactly
``max(event_time + 2 * ttl, now + ttl)``, earlier or later than before. Reads enforce the TTL exactly from
the record's event time; expiry only reclaims memory.
"""

from __future__ import annotations

import hashlib

from quasar.signals.ufr.codec import (
    CREATED_TIME_OFFSET,
    EVENT_TIME_OFFSET,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
)

#: KEYS: the entity hashes. ARGV[1]: the field (``<signal>@<version>``); ARGV[2]: the TTL in ms, "0" for
#: none; ARGV[3]: "r" to reset expiry, "" not to; ARGV[2 + 2i], ARGV[3 + 2i]: the record and the floor for
#: KEYS[i]. Returns {records written, fields deleted}.
NEWER_WINS = f"""
local field = ARGV[1]
local ttl = tonumber(ARGV[2])
local reset = ARGV[3] == 'r'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local written, deleted = 0, 0
-- a record's rank as four exact halves: event high (signed), event low, created high (signed), created low
local function rank(bytes, at)
  local e_lo, e_hi, c_lo, c_hi = struct.unpack('<I4i4I4i4', bytes, at)
  return {{e_hi, e_lo, c_hi, c_lo}}
end
local function current_format(record)
  return string.len(record) >= {HEADER_SIZE} and string.byte(record, 1) == {MAGIC}
    and string.byte(record, 2) == {FORMAT_VERSION}
end
-- a >= b, lexicographically
local function not_below(a, b)
  for j = 1, 4 do
    if a[j] ~= b[j] then
      return a[j] > b[j]
    end
  end
  return true
end
-- the key's absolute expiry in ms: -2 missing, -1 none (PEXPIRETIME is exact; Redis < 7 has only PTTL)
local function expiry_of(key)
  local at = redis.pcall('PEXPIRETIME', key)
  if type(at) == 'number' then
    return at
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then
    return pttl
  end
  return now + pttl
end
local function expire(key, record, current)
  if ttl <= 0 then
    redis.call('PERSIST', key)
    return
  end
  local r = rank(record, {EVENT_TIME_OFFSET + 1})
  local event_ms = math.floor((r[1] * 4294967296 + r[2]) / 1000)
  local at = math.max(event_ms + 2 * ttl, now + ttl)
  if reset and redis.call('HLEN', key) == 1 then
    redis.call('PEXPIREAT', key, string.format('%.0f', at))
  elseif current ~= -1 then
    redis.call('PEXPIREAT', key, string.format('%.0f', math.max(at, current)))
  end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  local record = ARGV[2 + 2 * i]
  local floor = ARGV[3 + 2 * i]
  local stored = redis.call('HGET', key, field)
  if stored and not current_format(stored) then
    stored = false
  end
  local replaceable = (not stored) or floor == '*'
  if not replaceable and string.len(floor) == 16 then
    replaceable = not_below(rank(floor, 1), rank(stored, {EVENT_TIME_OFFSET + 1}))
  end
  local current = expiry_of(key)
  if string.len(record) > 0 then
    if replaceable or not_below(rank(record, {EVENT_TIME_OFFSET + 1}), rank(stored, {EVENT_TIME_OFFSET + 1})) then
      redis.call('HSET', key, field, record)
      written = written + 1
      expire(key, record, current)
    elseif reset then
      expire(key, stored, current)
    end
  elseif replaceable and floor ~= '' then
    if redis.call('HDEL', key, field) == 1 then
      deleted = deleted + 1
    end
  elseif stored and reset then
    expire(key, stored, current)
  end
end
return {{written, deleted}}
"""

#: The script's SHA1, as EVALSHA names it.
NEWER_WINS_SHA = hashlib.sha1(NEWER_WINS.encode()).hexdigest()

#: The floor of a plain newer-wins write, and of an exact rebuild's unconditional replacement.
NEWER = b""
ANY = b"*"

assert CREATED_TIME_OFFSET == EVENT_TIME_OFFSET + 8, "the script reads both times as one 16-byte rank"
