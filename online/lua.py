"""The one server-side script every online write goes through: newer event time wins, keys expire to reclaim memory.

Redis runs a script atomically, so concurrent writers of one key cannot interleave between the read of the
stored record and the write of the new one. A record's event time is its int64 little-endian microseconds
at byte offset 10 (``signals.ufr.codec.EVENT_TIME_OFFSET``; Lua's ``struct`` counts from 1, hence 11). Lua
numbers are doubles: exact for microsecond times within ±285 years of 1970.

Expiry (milliseconds): a signal with a TTL moves the key's expiry to
``max(current expiry, event_time + 2 * ttl, now + ttl)`` — never earlier — except that a key without an
expiry that already existed keeps none (it holds a signal without a TTL). A signal without a TTL makes its
key persistent. Reads enforce the TTL exactly from the record's event time; expiry only reclaims memory.
"""

from __future__ import annotations

import hashlib

from signals.ufr.codec import EVENT_TIME_OFFSET, HEADER_SIZE

#: KEYS: the entity hashes. ARGV[1]: the field (``<signal>@<version>``); ARGV[2]: the TTL in ms, "0" for
#: none; ARGV[2 + i]: the record for KEYS[i]. Returns how many records were written (not older).
NEWER_WINS = f"""
local field = ARGV[1]
local ttl = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local written = 0
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
for i = 1, #KEYS do
  local key = KEYS[i]
  local record = ARGV[i + 2]
  local event_time = struct.unpack('<i8', record, {EVENT_TIME_OFFSET + 1})
  local stored = redis.call('HGET', key, field)
  local newer = true
  if stored and string.len(stored) >= {HEADER_SIZE} then
    newer = struct.unpack('<i8', stored, {EVENT_TIME_OFFSET + 1}) <= event_time
  end
  if newer then
    local current = expiry_of(key)
    redis.call('HSET', key, field, record)
    written = written + 1
    if ttl > 0 then
      if current ~= -1 then
        local at = math.max(math.floor(event_time / 1000) + 2 * ttl, now + ttl, current)
        redis.call('PEXPIREAT', key, string.format('%.0f', at))
      end
    else
      redis.call('PERSIST', key)
    end
  end
end
return written
"""

#: The script's SHA1, as EVALSHA names it.
NEWER_WINS_SHA = hashlib.sha1(NEWER_WINS.encode()).hexdigest()
