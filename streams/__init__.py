"""A small event bus over Redis Streams.

- ``keys``: every stream, group and key name;
- ``events``: the typed payload of every event type;
- ``envelope``: the flat fields an event travels in;
- ``scripts`` and ``outcomes``: the atomic Lua step a handler asks for;
- ``consumer``: the runner (groups, batches, pending, retries, dead letters);
- ``delivery`` and ``commit``: one message in the runner; a batch's outcomes
  applied to Redis in one pipeline;
- ``middleware``: what the runner applies to every message (timing, logging);
- ``worker``: running a consumer as a process.
"""
