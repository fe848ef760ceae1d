"""What the collector exposes on ``/metrics`` beyond its own counters: per-variant request
series from the resolved requests (``variants``) and where the serving process's memory goes
(``memory``)."""
