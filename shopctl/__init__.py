"""The command line and the development launcher: ``shopctl up`` runs the whole
system on one machine (embedded Redis, API, workers, projector, demo data)."""
