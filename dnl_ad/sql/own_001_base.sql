-- dnl_ad's own schema, version 1: nothing beyond the schema_version table that
-- migrations.py creates itself. Kept so that version numbering starts at 1.
SELECT 1;
