-- 9.8 M ledger rows with the ledger bench's dimensions, for timing `report` and migration 7 on
-- PostgreSQL (bench/RESULTS.md, "Report roll-up"). Run on a ledger the bench created with
-- --rows 200000 (schema 7); it sets the ledger back to schema 6 without ledger_rollup, so the
-- next open back-fills the roll-up.
\timing on
INSERT INTO ledger_events (trace_id, span_id, start_time_ns, charge_time_ns, charge_hour, tenant_id, workflow_id, originator_id, envelope_status, key_id, envelope_token, operation_name, provider, request_model, response_model, rate_model, rate_id, rates_version, cost_status, currency, tokens_input, tokens_output, cost_total, cost_nanos, cost_atto, service_name, gateway_instance, ingest_time_ns, source_digest)
SELECT lpad(to_hex(g), 32, '0'), lpad(to_hex(g * 7919), 16, '0'), t, t, t / 3600000000000,
  CASE WHEN v THEN 'tenant-' || lpad(tn::text, 2, '0') END,
  CASE WHEN v THEN 'workflow-' || lpad(wf::text, 2, '0') END,
  CASE WHEN v THEN 'user-' || ((g * 13) % 10000)::text END,
  CASE WHEN v THEN 'valid' ELSE 'bad_signature' END,
  CASE WHEN v THEN 'k1' END,
  'tg1.k1.eyJ0ZW5hbnRfaWQiOiJ0ZW5hbnQtMDEiLCJvcmlnaW5hdG9yX2lkIjoidXNlci0xIiwid29ya2Zsb3dfaWQiOiJ3b3JrZmxvdy0wMSIsIm9wZXJhdGlvbl9pZCI6Im9wLTEiLCJpc3N1YW5jZV9pZCI6IjAwMDAiLCJpc3N1ZWRfYXQiOjE3NjQ1NTIwMDAsImV4cGlyZXNfYXQiOjE3NjQ1NTU2MDB9..q5Zt0bVfYy6dC9ZQn9c8V1cNw0p5xK8fH3m2r1s4t7A',
  'chat', (ARRAY['openai','openai','openai','anthropic','anthropic','google','google','openai'])[m + 1],
  (ARRAY['gpt-4o','gpt-4o-mini','gpt-4.1','claude-sonnet-4-5','claude-haiku-4-5','gemini-2.5-pro','gemini-2.5-flash','o4-mini'])[m + 1],
  (ARRAY['gpt-4o','gpt-4o-mini','gpt-4.1','claude-sonnet-4-5','claude-haiku-4-5','gemini-2.5-pro','gemini-2.5-flash','o4-mini'])[m + 1],
  (ARRAY['gpt-4o','gpt-4o-mini','gpt-4.1','claude-sonnet-4-5','claude-haiku-4-5','gemini-2.5-pro','gemini-2.5-flash','o4-mini'])[m + 1],
  'rates[' || m || ']', 'bench', 'priced', 'USD', 100 + (g * 37) % 8000, 10 + (g * 11) % 1500,
  '0.0123', 12300000, 0, 'service-' || ((g * 3) % 12)::text, 'bench', t, md5(g::text) || md5(g::text)
FROM generate_series(200000::bigint, 9999999::bigint) AS g,
  LATERAL (SELECT 1764547200000000000::bigint + (g % 2592000) * 1000000000 AS t, abs(hashint8(g + 2000000000000)) % 8 AS m, abs(hashint8(g + 3000000000000)) % 100 < 97 AS v, abs(hashint8(g)) % 50 AS tn, abs(hashint8(g + 1000000000000)) % 20 AS wf) x;
DROP TABLE ledger_rollup;
UPDATE tollgate_ledger_meta SET value = '6' WHERE key = 'schema_version';
SELECT count(*) FROM ledger_events;
