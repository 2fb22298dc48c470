"""Files and folders the package writes, never half-written and never mixing runs.

The ground floor with `errors` and `attributes`: any layer may import it."""
