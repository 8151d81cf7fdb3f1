-- Latency and time to first token per model, last 7 days: p50 and p95 by nearest rank
-- (window functions, which Athena and DuckDB both run; no engine-specific percentile function).
WITH ranked AS (
  SELECT model, latency_ms, ttft_ms,
         row_number() OVER (PARTITION BY model ORDER BY latency_ms) AS position,
         count(*) OVER (PARTITION BY model) AS calls
  FROM requests
  WHERE dt >= substr(CAST(current_date - INTERVAL '7' DAY AS VARCHAR), 1, 10) AND status = 200
)
SELECT model, max(calls) AS requests,
       min(CASE WHEN position >= ceil(0.50 * calls) THEN latency_ms END) AS latency_p50_ms,
       min(CASE WHEN position >= ceil(0.95 * calls) THEN latency_ms END) AS latency_p95_ms,
       avg(ttft_ms) AS ttft_avg_ms
FROM ranked
GROUP BY model
ORDER BY latency_p95_ms DESC
