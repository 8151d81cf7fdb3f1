-- Sessions, last 7 days: calls, cost, tokens and wall-clock duration per session.
SELECT session_id, max(session_name) AS session_name, max(user_id) AS user_id, count(*) AS requests,
       sum(cost_usd) AS cost_usd, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(latency_ms) AS busy_ms, min(created_at) AS started_at, max(created_at) AS last_call_at
FROM requests
WHERE dt >= substr(CAST(current_date - INTERVAL '7' DAY AS VARCHAR), 1, 10) AND session_id IS NOT NULL
GROUP BY session_id
ORDER BY started_at DESC
