"""Lua steps: a handler's state change, its outcome event and the XACK of the
input message, run as one atomic script.

A handler writes only the body of its step. ``Step`` wraps it in a prelude
and an epilogue owned by the runner:

- ``K[i]`` and ``A[i]`` are the handler's own keys and arguments;
- ``publish(stream, type, data)`` XADDs an envelope whose header (event id,
  subject, time, causation) the handler fixed in advance, and returns the
  new entry id (only in a step made with ``publishes=True``, the default: a
  step that publishes nothing is called without the header's arguments);
- ``guard(record, subject, nothing)`` answers a second delivery (the step's
  record exists: ``duplicate``) and an event about a subject that does not
  exist (``dead_letter``, with ``nothing`` as the reason); else nil;
- the body returns a table; its first element names what happened. Unless
  it is ``'dead_letter'`` (then the second element is the reason and the
  runner dead-letters the message), the epilogue XACKs the input.

A body must check everything before it writes anything: Redis runs a script
in isolation but does not roll back writes made before an error.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import redis

from streams.envelope import HEADER_ARGS, lua_publish

# KEYS[1] is the input stream; ARGV[1..2] are the group and entry id; then
# the header of the event the step may publish (``envelope.header_fields``).
_INPUT = """
local input, group, entry_id = KEYS[1], ARGV[1], ARGV[2]
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
"""

# The guard every step of a subject starts with, written once: the step's own
# record says it was done (a second delivery changes nothing), and a subject
# whose record does not exist (an event nobody accepted) changes nothing.
_GUARD = """
local function guard(record, subject, nothing)
  if redis.call('EXISTS', record) == 1 then
    return {'duplicate', redis.call('HGET', record, 'status')}
  end
  if subject and redis.call('EXISTS', subject) == 0 then
    return {'dead_letter', nothing}
  end
end
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
    """A handler's Lua body, to run atomically with the acknowledgement.
    ``script(subject)`` renders it for a topology's envelope layout."""

    name: str
    body: str
    publishes: bool = True

    def script(self, subject: str) -> Script:
        return _rendered(self, subject)


@functools.cache
def _rendered(step: Step, subject: str) -> Script:
    if step.publishes:
        first = 3 + HEADER_ARGS  # the step's own arguments come after the header's
        args = (f"for i = {first}, #ARGV do A[i - {first - 1}] = ARGV[i] end\n"
                + lua_publish(subject, 3))
    else:  # a step that publishes nothing is called without the header's arguments
        args = "for i = 3, #ARGV do A[i - 2] = ARGV[i] end\n"
    return Script(step.name, _INPUT + args + _GUARD + step.body + _EPILOGUE)


@dataclass(frozen=True)
class Script:
    """A plain script (no acknowledgement), run by EVALSHA with its sha known in
    advance so that a pipeline needs no SCRIPT EXISTS round trip."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Move one message to its dead-letter stream and acknowledge it, atomically;
# a message no longer pending (its dead letter was written by an earlier run
# whose answer was lost, or it was handled) is left alone: sent twice, it is
# dead-lettered once.
# KEYS: input stream, dead stream. ARGV: group, entry id, then field/value pairs.
DEAD_LETTER = Script(
    "dead_letter",
    """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
""",
)


def pairs(fields: dict[str, str]) -> list[str]:
    """Fields as script or HSET arguments: name, value, name, value, ..."""
    return [part for item in fields.items() for part in item]


async def evaluate(client: Any, script: Script, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA on an asyncio client, loading the script once if the server lacks it."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return await client.eval(script.source, len(keys), *keys, *args)
