"""Lua steps: a handler's state change, its outcome event and the XACK of the
input message, run as one atomic script.

A handler writes only the body of its step. ``Step`` wraps it in a prelude
and an epilogue owned by the runner:

- ``K[i]`` and ``A[i]`` are the handler's own keys and arguments;
- ``publish(stream, type, data)`` XADDs an envelope whose header (event id,
  order id, time, causation) the handler fixed in advance, and returns the
  new entry id (only in a step made with ``publishes=True``, the default: a
  step that publishes nothing is called without the header's arguments);
- the body returns a table; its first element names what happened. Unless
  it is ``'dead_letter'`` (then the second element is the reason and the
  runner dead-letters the message), the epilogue XACKs the input.

A body must check everything before it writes anything: Redis runs a script
in isolation but does not roll back writes made before an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import redis

# KEYS[1] is the input stream; ARGV[1..2] are the group and entry id;
# ARGV[3..7] the header of the event the step may publish.
_PRELUDE = """
local input, group, entry_id = KEYS[1], ARGV[1], ARGV[2]
local header = {'event_id', ARGV[3], 'order_id', ARGV[4], 'occurred_at', ARGV[5],
                'causation_id', ARGV[6], 'v', ARGV[7]}
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 8, #ARGV do A[i - 7] = ARGV[i] end
local function publish(stream, event_type, data)
  local fields = {'type', event_type}
  for i = 1, #header do fields[#fields + 1] = header[i] end
  fields[#fields + 1] = 'data'
  fields[#fields + 1] = data
  return redis.call('XADD', stream, '*', unpack(fields))
end
local function handle()
"""

# The prelude of a step that publishes nothing: no header arguments to carry.
_PRELUDE_SILENT = """
local input, group, entry_id = KEYS[1], ARGV[1], ARGV[2]
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 3, #ARGV do A[i - 2] = ARGV[i] end
local function handle()
"""

_EPILOGUE = """
end
local result = handle()
if result[1] ~= 'dead_letter' then
  redis.call('XACK', input, group, entry_id)
end
return result
"""

@dataclass(frozen=True)
class Step:
    """A handler's Lua body, wrapped to run atomically with the acknowledgement."""

    name: str
    body: str
    publishes: bool = True
    source: str = field(init=False, repr=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        source = (_PRELUDE if self.publishes else _PRELUDE_SILENT) + self.body + _EPILOGUE
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True)
class Script:
    """A plain script (no acknowledgement), run by EVALSHA with its sha known in
    advance so that a pipeline needs no SCRIPT EXISTS round trip."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Move one message to its dead-letter stream and acknowledge it, atomically.
# KEYS: input stream, dead stream. ARGV: group, entry id, then field/value pairs.
DEAD_LETTER = Script(
    "dead_letter",
    """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
""",
)


def pairs(fields: dict[str, str]) -> list[str]:
    """Fields as script or HSET arguments: name, value, name, value, ..."""
    return [part for item in fields.items() for part in item]


async def evaluate(client: Any, script: Script | Step, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA on an asyncio client, loading the script once if the server lacks it."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return await client.eval(script.source, len(keys), *keys, *args)
