"""What only the demo, the tests and the benchmarks use: an embedded PostgreSQL (pgserver),
a loopback SMTP sink (aiosmtpd), demo and load data, and the demo itself. The daemon never
imports this package; its test-only dependencies are the `test` and `demo` extras."""
