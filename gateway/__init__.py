"""A mediation gateway between the shop and the outside world, in the spirit
of Apache Synapse: proxies, sequences of mediators, endpoints, and store-and-
forward delivery of the shop's events (docs/mediation.md)."""
