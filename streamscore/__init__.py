"""StreamScore's roof: the `streamscore` CLI and the dev tooling; nothing but tests imports it."""
