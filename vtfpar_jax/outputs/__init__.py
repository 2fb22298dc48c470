"""Files and folders the package writes, never half-written and never mixing runs, and the
stop signals held off where a stop must not land (`stop_signals`).

The ground floor with `errors` and `attributes`: any layer may import it."""
