"""Who may do what: bearer tokens with a role, stored hashed in Redis.

- ``tokens``: create, list, revoke and verify tokens (``shopctl token ...``
  manages them, the API verifies them);
- ``demo``: the demo tokens ``shopctl up`` creates and keeps in the data folder.
"""
