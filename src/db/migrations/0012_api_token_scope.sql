-- Version 12: an API token's scope. `all` acts with its owner's role (every token so far);
-- `metrics` may only read `GET /metrics`, so a Prometheus server's credential cannot see
-- faces, events or settings. Documented in schema.sql.
ALTER TABLE web_api_token ADD COLUMN scope TEXT NOT NULL DEFAULT 'all' CHECK (scope IN ('all', 'metrics'));
