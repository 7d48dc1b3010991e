-- The queued message (base64 parts: hardly compressible) is stored out of line without
-- compression: PostgreSQL no longer tries to compress it at each enqueue nor decompresses
-- it at each claim (bench/bench_usage.py: a sixth of the server's time per notice).
-- Rows already stored keep their form until rewritten; both read the same.
ALTER TABLE outbox ALTER COLUMN message SET STORAGE EXTERNAL;
