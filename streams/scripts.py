"""Lua steps: a handler's state change, its outcome event and the XACK of the
input message, run as one atomic script.

A handler writes only the body of its step. ``Step`` wraps it in a prelude
and an epilogue owned by the runner:

- ``K[i]`` and ``A[i]`` are the handler's own keys and arguments; ``input``
  and ``entry_id`` name the message;
- ``publish(stream, type, data)`` XADDs an envelope whose header (event id,
  order id, time, causation) the handler fixed in advance, and returns the
  new entry id (only in a step made with ``publishes=True``, the default: a
  step that publishes nothing is called without the header's arguments);
- the body returns a table; its first element names what happened. Unless
  it is ``'dead_letter'`` (then the second element is the reason and the
  runner dead-letters the message), the epilogue XACKs the input.

One call runs the step for a run of messages (``Step.call_args``), one after
the other: each message's body and XACK happen together, and the call as a
whole is atomic too. An error in one message's body (a Lua error, or a Redis
command that fails) is caught: that message gets an error in its place in
the answer and stays pending, and the others go on.

A body must check everything before it writes anything: Redis runs a script
in isolation but does not roll back writes made before an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

# ARGV[1] is the group. Then, per message: KEYS has the input stream and the
# message's keys; ARGV its entry id, its number of keys and of arguments, the
# header of the event it may publish (5 values, in a step that publishes),
# then its arguments.
_PRELUDE = """
local group = ARGV[1]
local input, entry_id, K, A, header
local function publish(stream, event_type, data)
  local fields = {'type', event_type}
  for i = 1, #header do fields[#fields + 1] = header[i] end
  fields[#fields + 1] = 'data'
  fields[#fields + 1] = data
  return redis.call('XADD', stream, '*', unpack(fields))
end
local function handle()
"""

_EPILOGUE = """
end
local function step()
  local result = handle()
  if result[1] ~= 'dead_letter' then
    redis.call('XACK', input, group, entry_id)
  end
  return result
end
local results, k, a = {}, 1, 2
while a <= #ARGV do
  input, entry_id = KEYS[k], ARGV[a]
  local nk, na = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  K, A = {}, {}
  for i = 1, nk do K[i] = KEYS[k + i] end
  a = a + 3
  if HEADER then
    header = {'event_id', ARGV[a], 'order_id', ARGV[a + 1], 'occurred_at', ARGV[a + 2],
              'causation_id', ARGV[a + 3], 'v', ARGV[a + 4]}
    a = a + 5
  end
  for i = 1, na do A[i] = ARGV[a + i - 1] end
  k, a = k + 1 + nk, a + na
  local ok, result = pcall(step)
  if not ok then  -- this message stays pending; the runner sees the error
    result = {err = type(result) == 'table' and result.err or tostring(result)}
  end
  results[#results + 1] = result
end
return results
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
        header = "local HEADER = " + ("true" if self.publishes else "false")
        source = header + _PRELUDE + self.body + _EPILOGUE
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "sha", hashlib.sha1(source.encode()).hexdigest())

    @staticmethod
    def call_args(group: str, messages: Sequence[tuple[str, str, Any]]) -> list[Any]:
        """EVALSHA's arguments after the sha, for a run of messages of this
        step: (stream, entry id, Apply) each. The answer is a list with one
        result (or error) per message, in the same order."""
        keys: list[str] = []
        args: list[Any] = [group]
        for stream, entry_id, apply in messages:
            keys.append(stream)
            keys += apply.keys
            args += (entry_id, len(apply.keys), len(apply.args))
            if apply.header is not None:
                args += apply.header.as_args()
            args += apply.args
        return [len(keys), *keys, *args]


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
